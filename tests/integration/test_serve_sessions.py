"""Real sessions through ``orchestrate serve``: the API, its event stream and a graceful SIGTERM.

Each test runs ``orchestrate serve`` as a child process (loopback, a free port, a workspace of its
own) and starts the credential-free demo through ``POST /api/sessions`` with
``{"options": {"scenario": "demo"}}``: the real CLIs in their containers against the scripted model
server (``orchestrator/scenarios/demo.toml``), planner, three tasks, reviews, merges.

- A whole session: a reader that connects mid-session and a reader that reconnects with
  ``Last-Event-ID`` both get every event exactly once, in order, until ``session_finished``; the
  report lists three succeeded tasks.
- SIGTERM mid-session: the open stream ends with the final ``shutting_down`` event, the server exits
  0, nothing of the session keeps running, the log ends with ``session_interrupted``; a fresh server
  resumes the session through the API and finishes it.

Containers and networks of every session in the workspace are removed by label afterwards, whatever
failed. Timings are printed (``pytest -s``); nothing asserts on them beyond generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.commands.demo import DEMO_PROMPT, example_repo
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.runner import STOP_MARGIN_S
from orchestrator.store import EventReader
from tests.support.served import (
    SseMessage,
    read_sse,
    remove_sessions,
    running_containers,
    settled_containers,
    wait_for_status,
)

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 5  # ORCH_GRACE_PERIOD_S of the served process: how long a worker gets to stop
SESSION_WITHIN_S = 420.0
STARTED_WITHIN_S = 60.0
# uvicorn's wait for connections (GRACEFUL_S) + the workers' grace + the runner's margin, doubled for
# a busy machine: the bound of a graceful exit, not a measurement
EXIT_WITHIN_S = 2 * (5 + GRACE_S + STOP_MARGIN_S) + 30
pytestmark = pytest.mark.timeout(900)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    """One ``orchestrate serve`` child process and where its output goes."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@dataclass
class Place:
    """A workspace of the test's own and the demo repository inside it."""

    workspace: Path
    repo: Path
    timings: dict[str, float]


@pytest.fixture
def place(tmp_path: Path, images: dict[str, str]) -> Iterator[Place]:
    """The workspace and the demo repository; afterwards every session's containers and network go."""
    workspace = tmp_path / "ws"
    repo = example_repo(workspace / "demo-repos" / "example")
    found = Place(workspace, repo, {})
    try:
        yield found
    finally:
        print("[serve timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in found.timings.items()))
        remove_sessions(workspace)


@contextlib.asynccontextmanager
async def serving(place: Place, name: str) -> AsyncIterator[Served]:
    """``orchestrate serve`` on a free loopback port, answering ``/api/health``; killed if still running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update({"ORCH_WORKSPACE": str(place.workspace), "ORCH_GRACE_PERIOD_S": str(GRACE_S),
                "ORCH_LOG_LEVEL": "info"})  # fmt: skip
    log = place.workspace / f"serve-{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.main", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            deadline = time.monotonic() + STARTED_WITHIN_S
            while True:
                assert proc.poll() is None, f"orchestrate serve exited {proc.returncode}:\n{served.output()}"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/api/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"orchestrate serve did not answer:\n{served.output()}"
                await asyncio.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def start_demo(http: httpx.AsyncClient, place: Place) -> str:
    """``POST /api/sessions`` with the demo scenario; the session's id once it is recorded."""
    body = {"prompt": DEMO_PROMPT, "repo": str(place.repo), "options": {"scenario": "demo"}}
    answer = await http.post("/api/sessions", json=body)
    assert answer.status_code == 202, answer.text
    session_id: str = answer.json()["session_id"]
    return session_id


async def wait_for_event(place: Place, session_id: str, wanted: str, worker_prefix: str = "") -> int:
    """The seq of the first recorded event of type ``wanted`` (by a worker whose name starts so)."""
    paths = SessionPaths.of(place.workspace, session_id)
    deadline = time.monotonic() + SESSION_WITHIN_S
    while time.monotonic() < deadline:
        for event in await asyncio.to_thread(lambda: list(EventReader(paths).read())):
            if event.type == wanted and event.worker.startswith(worker_prefix):
                return event.seq
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {wanted} event of {worker_prefix or 'any worker'} in session {session_id}")


def finished(message: SseMessage) -> bool:
    return message.event == "session_finished"


async def follow(
    http: httpx.AsyncClient,
    session_id: str,
    last_event_id: int | None = None,
    until: Callable[[SseMessage], bool] = finished,
    first: asyncio.Event | None = None,
) -> list[SseMessage]:
    """Every message of the stream (pings left out) up to and including the first ``until`` accepts,
    or until the stream ends; ``first`` is set once one has come."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    got: list[SseMessage] = []
    timeout = httpx.Timeout(10, read=SESSION_WITHIN_S)
    url = f"/api/sessions/{session_id}/stream"
    async with http.stream("GET", url, headers=headers, timeout=timeout) as answer:
        assert answer.status_code == 200, await answer.aread()
        async for message in read_sse(answer):
            if message.event == "ping":
                continue
            got.append(message)
            if first is not None:
                first.set()
            if until(message):
                break
    return got


def writer_started(message: SseMessage) -> bool:
    """The Codex writer's container started (the session is well under way)."""
    return message.event == "worker_started" and message.json()["worker"] == "codex-t2"


def stored(place: Place, session_id: str) -> list[tuple[int, str]]:
    """(seq, type) of every event in the session's log."""
    return [(e.seq, e.type) for e in EventReader(SessionPaths.of(place.workspace, session_id)).read()]


def on_the_wire(messages: list[SseMessage]) -> list[tuple[int | None, str]]:
    """(id, event) of SSE messages; each message's data is the AgentEvent with the same seq and type."""
    for message in messages:
        if message.id is not None:
            body: dict[str, Any] = message.json()
            assert (body["seq"], body["type"]) == (message.id, message.event)
    return [(m.id, m.event) for m in messages]


async def test_a_demo_session_through_the_api_streams_every_event_once_to_each_reader(place: Place) -> None:
    """POST the demo -> 202; a reader that connects mid-session and a reader that drops once the
    Codex writer started and reconnects with ``Last-Event-ID`` both get every stored event exactly once, in
    order, until ``session_finished``; the report lists three succeeded tasks; nothing keeps running."""
    async with serving(place, "demo") as served, httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        started = time.monotonic()
        session_id = await start_demo(http, place)
        place.timings["POST /api/sessions"] = time.monotonic() - started
        await wait_for_event(place, session_id, "plan_ready")
        whole = asyncio.create_task(follow(http, session_id))
        first = await follow(http, session_id, until=writer_started)
        assert writer_started(first[-1])
        rest = await follow(http, session_id, last_event_id=first[-1].id)
        messages = await whole
        place.timings["POST to session_finished"] = time.monotonic() - started
        report = await http.get(f"/api/sessions/{session_id}/report")
        left_running = await settled_containers(session_id)  # before the server goes

    log = stored(place, session_id)
    assert log[-1][1] == "session_finished"
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    assert log == on_the_wire(messages)
    assert log == on_the_wire(first + rest)
    assert report.status_code == 200, report.text
    body = report.json()
    expected = ("succeeded", [("t1", "succeeded"), ("t2", "succeeded"), ("t3", "succeeded")])
    assert expected == (body["status"], [(t["id"], t["status"]) for t in body["tasks"]])
    assert left_running == []
    print(f"[serve] {len(log)} events; the reconnect resumed after seq {first[-1].id}")


async def test_sigterm_interrupts_the_session_resumably_and_exits_0(place: Place) -> None:
    """SIGTERM while a worker runs: the open stream's last message is the final ``shutting_down``
    error; the server exits 0 in time; no container of the session runs; the log ends with
    ``session_interrupted`` (SIGTERM); a fresh server resumes it through the API to three succeeded
    tasks and, with nothing running, also exits 0 on SIGTERM."""
    async with serving(place, "first") as served, httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        session_id = await start_demo(http, place)
        started = await wait_for_event(place, session_id, "worker_started", worker_prefix="codex-t2")
        streaming = asyncio.Event()
        reader = asyncio.create_task(follow(http, session_id, last_event_id=started, first=streaming))
        await wait_for_event(place, session_id, "output_lines", worker_prefix="codex-t2")
        await asyncio.wait_for(streaming.wait(), 30)  # the stream is open and has sent something
        served.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        exit_code = await asyncio.to_thread(served.proc.wait, EXIT_WITHIN_S)
        place.timings["SIGTERM to exit"] = time.monotonic() - signalled
        messages = await asyncio.wait_for(reader, 30)

    assert exit_code == 0, served.output()
    final = messages[-1]
    assert (final.event, final.id, final.json()["error"]["code"]) == ("error", None, "shutting_down")
    assert final.json()["resume_after"] == messages[-2].id
    assert running_containers(session_id) == []
    events = list(EventReader(SessionPaths.of(place.workspace, session_id)).read())
    assert isinstance(events[-1].data, ev.SessionInterrupted), events[-1]
    assert events[-1].data.signal == "SIGTERM"
    assert "serve.stopped" in served.output()

    async with serving(place, "second") as again, httpx.AsyncClient(base_url=again.url, timeout=30) as http:
        resumed_at = time.monotonic()
        resumed = await http.post(f"/api/sessions/{session_id}/resume")
        assert resumed.status_code == 202, resumed.text
        await wait_for_status(http, session_id, {"succeeded", "failed", "stopped"}, SESSION_WITHIN_S)
        place.timings["resume to finished"] = time.monotonic() - resumed_at
        report = (await http.get(f"/api/sessions/{session_id}/report")).json()
        again.proc.send_signal(signal.SIGTERM)
        idle_exit = await asyncio.to_thread(again.proc.wait, EXIT_WITHIN_S)

    expected = ("succeeded", [("t1", "succeeded"), ("t2", "succeeded"), ("t3", "succeeded")])
    assert expected == (report["status"], [(t["id"], t["status"]) for t in report["tasks"]])
    assert idle_exit == 0, again.output()
    kinds = [e.type for e in EventReader(SessionPaths.of(place.workspace, session_id)).read()]
    assert kinds.count("session_interrupted") == 1
    assert kinds.count("session_resumed") >= 1
    assert running_containers(session_id) == []  # the server waited for the teardown before it exited
