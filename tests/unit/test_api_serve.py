"""``orchestrate serve`` and the OpenAPI document: refuses an unsafe bind, serves, shuts down cleanly.

The served-process test runs the real command in a child process (no Docker needed) and reads a
session written by this test's process, as a session of ``orchestrate run`` would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.app import begin_shutdown, create_app
from api.testing import FakeSessionRunner
from orchestrator.config import Settings
from orchestrator.main import main
from orchestrator.models import Output, SessionCreated
from orchestrator.paths import SessionPaths
from orchestrator.store import EventWriter

pytestmark = pytest.mark.timeout(60)


def test_serve_refuses_a_public_bind_without_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve --host 0.0.0.0`` without a token exits 2 (usage) and says how to fix it."""
    monkeypatch.delenv("ORCH_API_TOKEN", raising=False)
    monkeypatch.setenv("ORCH_WORKSPACE", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--host", "0.0.0.0", "--port", "1"])
    assert exit_info.value.code == 2
    assert "ORCH_API_TOKEN" in capsys.readouterr().err


def test_openapi_describes_every_route_and_its_errors(settings: Settings) -> None:
    """Each API operation documents its error statuses with the error body; the stream its media type."""
    secured = settings.model_copy(update={"api_token": SecretStr("t" * 32)})
    doc = create_app(secured).openapi()
    operations = {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}
    api_ops = {key: op for key, op in operations.items() if key[0].startswith("/api/sessions")}
    error_ref = "#/components/schemas/ErrorBody"
    for (path, method), op in api_ops.items():
        statuses = set(op["responses"])
        assert {"401", "422"} <= statuses, (path, method)
        assert op["security"], (path, method)
        if "{session_id}" in path:
            assert {"400", "404"} <= statuses, (path, method)
        for status in statuses - {"200", "202", "204"}:
            assert error_ref == op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    stream = doc["paths"]["/api/sessions/{session_id}/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert {"data", "event", "id", "retry"} == set(stream["text/event-stream"]["itemSchema"]["properties"])
    assert len(operations) == 12  # the 11 routes of API_SPEC.md, GET and POST /api/sessions


def test_openapi_of_an_open_server_claims_no_auth(settings: Settings) -> None:
    """On loopback without a token, the document names no security scheme and no 401."""
    doc = create_app(settings).openapi()
    operations = [op for item in doc["paths"].values() for op in item.values()]
    assert [op for op in operations if "security" in op or "401" in op["responses"]] == []
    assert "securitySchemes" not in doc["components"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_served_process_follows_another_process_session_and_ends_streams_on_sigterm(
    tmp_path: Path,
) -> None:
    """The real server streams a session written elsewhere (by polling) and, on SIGTERM, ends the
    stream with ``event: error`` / ``shutting_down`` and shuts down completely."""
    port = free_port()
    env = {**os.environ, "ORCH_WORKSPACE": str(tmp_path), "ORCH_API_TOKEN": "", "ORCH_LOG_LEVEL": "info"}
    env.pop("ORCH_API_TOKEN")
    paths = SessionPaths.of(tmp_path, "fromelsewhere")
    writer = EventWriter.open(paths)
    writer.emit("orchestrator", SessionCreated(prompt="p", repo="/r"))
    writer.flush()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.main", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    emitted = signalled = False
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if (await http.get("/api/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "orchestrate serve did not answer"
                await asyncio.sleep(0.1)
            text = ""
            async with http.stream("GET", "/api/sessions/fromelsewhere/stream") as response:
                async for chunk in response.aiter_text():
                    text += chunk
                    if "id: 1" in text and not emitted:
                        writer.emit("codex-t1", Output(stream="stdout", line="written elsewhere"), "t1")
                        writer.flush()
                        emitted = True
                    if "written elsewhere" in text and not signalled:
                        proc.send_signal(signal.SIGTERM)
                        signalled = True
        exit_code = await asyncio.to_thread(proc.wait, 15)
    finally:
        writer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "written elsewhere" in text, (tmp_path / "serve.log").read_text()
    assert "event: error" in text
    assert '"shutting_down"' in text
    # the signal was handled: once the graceful shutdown is complete the server exits 0
    assert exit_code == 0
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()


async def test_a_server_shutting_down_refuses_changes_and_still_reads(settings: Settings) -> None:
    """Once shutdown began, a start (or any change) answers 503 with the reason; reads still work."""
    runner = FakeSessionRunner(settings)
    app = create_app(settings, runner)
    session_id = await runner.create(prompt="before the shutdown")
    begin_shutdown(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        started = await http.post("/api/sessions", json={"prompt": "p", "repo": "/srv/repo"})
        stopped = await http.post(f"/api/sessions/{session_id}/stop")
        read = await http.get(f"/api/sessions/{session_id}")
    expected = [(503, "environment", True)] * 2
    actual = [(r.status_code, r.json()["error"]["code"], "shutting down" in r.json()["error"]["message"])
              for r in (started, stopped)]  # fmt: skip
    assert expected == actual
    assert (read.status_code, read.json()["prompt"]) == (200, "before the shutdown")
    await runner.aclose()
