"""Sessions started and steered through the HTTP API run in the server's process (FakeRuntime)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from pydantic import SecretStr

from api.app import create_app
from orchestrator.config import Settings
from orchestrator.gitwork import git
from orchestrator.runner import ServerRunner
from orchestrator.runtime import FakeRuntime
from tests.support.fake_agents import FakeAgents, plan, review, task
from tests.support.repos import make_repo


def _settings(tmp_path: Path) -> Settings:
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001, network="none")  # type: ignore[call-arg]
    keys = {
        a: settings.agent(a).model_copy(update={"api_key": SecretStr("test-key-123456")})
        for a in ("claude", "codex", "gemini")
    }
    return settings.model_copy(update=keys)


async def _until(client: httpx.AsyncClient, session: str, status: str) -> dict[str, object]:
    for _ in range(400):
        body = (await client.get(f"/api/sessions/{session}")).json()
        if body["status"] == status:
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"session never became {status}: {body['status']}")


def test_a_session_started_through_the_api_runs_to_its_report(tmp_path: Path) -> None:
    """POST /api/sessions -> 202 with an id; the session runs here; the report is served at the end."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([plan(task("t1", "codex"))], files={"codex-t1": {"a.txt": "a\n"}})
    runner = ServerRunner(_settings(tmp_path), FakeRuntime(script=agents))

    async def scenario() -> None:
        app = create_app(_settings(tmp_path), runner)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            started = await client.post("/api/sessions", json={"prompt": "add a", "repo": str(repo)})
            assert started.status_code == 202, started.text
            session = started.json()["session_id"]
            await _until(client, session, "succeeded")
            report = await client.get(f"/api/sessions/{session}/report")
            assert report.status_code == 200
            assert [t["status"] for t in report.json()["tasks"]] == ["succeeded"]
        await runner.aclose()

    asyncio.run(scenario())


def test_a_paused_session_continues_on_a_decision_through_the_api(tmp_path: Path) -> None:
    """A reject (not a majority) pauses; POST decision continue -> the work is merged."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([plan(task("t1", "codex"))], files={"codex-t1": {"a.txt": "a\n"}},
                        review_answer=review("reject", "medium"))  # fmt: skip
    agents.review_by = {"gemini": review("approve")}
    runner = ServerRunner(_settings(tmp_path), FakeRuntime(script=agents))

    async def scenario() -> None:
        app = create_app(_settings(tmp_path), runner)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            session = (await client.post("/api/sessions", json={"prompt": "p", "repo": str(repo)})).json()[
                "session_id"
            ]
            await _until(client, session, "paused")
            decided = await client.post(
                f"/api/sessions/{session}/decision", json={"action": "continue", "note": "ok"}
            )
            assert decided.status_code == 200, decided.text
            await _until(client, session, "succeeded")
        await runner.aclose()

    asyncio.run(scenario())
    assert git(
        repo, "ls-tree", "--name-only", "orch/" + next(p.name for p in (tmp_path / "ws").iterdir())
    ).stdout.split() == ["a.txt", "app.py"]


def test_a_dirty_repository_is_refused_by_the_api_with_a_conflict(tmp_path: Path) -> None:
    """The start fails before anything runs: 409 dirty_repository."""
    repo = make_repo(tmp_path)
    (repo / "app.py").write_text("changed\n")
    runner = ServerRunner(_settings(tmp_path), FakeRuntime(script=FakeAgents([])))

    async def scenario() -> None:
        app = create_app(_settings(tmp_path), runner)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answer = await client.post("/api/sessions", json={"prompt": "p", "repo": str(repo)})
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "dirty_repository"
        await runner.aclose()

    asyncio.run(scenario())


def test_an_unknown_scenario_name_is_refused(tmp_path: Path) -> None:
    """options.scenario names a shipped scenario, never a path: 400 bad_config."""
    repo = make_repo(tmp_path)
    runner = ServerRunner(_settings(tmp_path), FakeRuntime(script=FakeAgents([])))

    async def scenario() -> None:
        app = create_app(_settings(tmp_path), runner)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answer = await client.post(
                "/api/sessions",
                json={"prompt": "p", "repo": str(repo), "options": {"scenario": "../../etc/passwd"}},
            )
            assert answer.status_code == 400, answer.text
            assert "not a shipped scenario" in answer.json()["error"]["message"]
        await runner.aclose()

    asyncio.run(scenario())
