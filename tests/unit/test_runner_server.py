"""``ServerRunner`` as ``orchestrate serve`` uses it: shutdown, scenario names, a missing image (FakeRuntime)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.runner import StartSession
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, EnvironmentProblem, ImageMissing
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.runner import ServerRunner, shipped_scenarios
from orchestrator.runtime import FakeProcess, FakeRuntime
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.store import EventReader
from tests.support.fake_agents import FakeAgents, plan, task
from tests.support.repos import make_repo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"
pytestmark = pytest.mark.timeout(60)


def make_settings(tmp_path: Path) -> Settings:
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001, network="none",
                        grace_period_s=0.5)  # fmt: skip
    keys = {
        a: settings.agent(a).model_copy(update={"api_key": SecretStr("test-key-123456")})
        for a in ("claude", "codex", "gemini")
    }
    return settings.model_copy(update=keys)


async def until(paths: SessionPaths, kind: str, worker: str) -> None:
    for _ in range(500):
        if any(e.type == kind and e.worker == worker for e in EventReader(paths).read()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind} event of {worker}")


def test_aclose_interrupts_a_running_session_resumably_and_refuses_new_ones(tmp_path: Path) -> None:
    """Shutdown while a worker hangs: ``session_interrupted`` (SIGTERM) ends the log, no container
    runs, later starts and resumes answer 503 (``EnvironmentProblem``); another runner resumes the
    session to its end."""
    repo, settings = make_repo(tmp_path), make_settings(tmp_path)
    request = StartSession(prompt="add a", repo=str(repo), options={"review": False})
    hanging = FakeAgents([plan(task("t1", "codex"))], fail={"codex-t1": FakeProcess(hang=True)})
    first = FakeRuntime(script=hanging)

    async def interrupted() -> str:
        runner = ServerRunner(settings, first)
        session_id = await runner.start(request)
        await until(SessionPaths.of(settings.workspace, session_id), "worker_started", "codex-t1")
        await runner.aclose()
        refused = []
        for attempt in (runner.start(request), runner.resume(session_id)):
            with pytest.raises(EnvironmentProblem) as error:
                await attempt
            refused.append("shutting down" in error.value.message)
        assert refused == [True, True]
        return session_id

    session_id = asyncio.run(interrupted())
    paths = SessionPaths.of(settings.workspace, session_id)
    last = list(EventReader(paths).read())[-1]
    assert isinstance(last.data, ev.SessionInterrupted)
    assert last.data.signal == "SIGTERM"
    assert [c.name for c in first.containers.values() if c.status == "running"] == []

    working = FakeAgents([plan(task("t1", "codex"))], files={"codex-t1": {"a.txt": "a\n"}})

    async def resumed() -> str:
        runner = ServerRunner(settings, FakeRuntime(script=working))
        await runner.resume(session_id)
        for _ in range(500):
            if (status := EventReader(paths).state().status) != "running":
                break
            await asyncio.sleep(0.01)
        await runner.aclose()
        return status

    assert asyncio.run(resumed()) == "succeeded"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("demo", shipped_scenarios() / "demo.toml"),
        ("dashboard-pause", FIXTURES / "dashboard-pause.toml"),
        ("slow-one-task", FIXTURES / "slow-one-task.toml"),
    ],
)
def test_scenario_names_are_looked_up_in_the_runners_folders(
    tmp_path: Path, name: str, expected: Path
) -> None:
    """A name is a file's stem in one of ``scenario_dirs`` (shipped ones first)."""
    runner = ServerRunner(
        make_settings(tmp_path), FakeRuntime(), scenario_dirs=(shipped_scenarios(), FIXTURES)
    )
    assert expected == runner.scenario(name)


@pytest.mark.parametrize(
    "garbage",
    ["../scenarios/demo", str(shipped_scenarios() / "demo.toml"), "demo.toml", "", "nope", 3, None, ["demo"]],
)
def test_anything_but_a_known_name_is_refused_with_the_choices(tmp_path: Path, garbage: object) -> None:
    """Paths, file names, other types: ``ConfigError`` (400) listing the names that exist."""
    runner = ServerRunner(make_settings(tmp_path), FakeRuntime())
    with pytest.raises(ConfigError) as error:
        runner.scenario(garbage)
    assert "choose one of: " in error.value.message
    assert "demo" in error.value.message.split("choose one of: ")[1].split(", ")


def test_a_missing_image_is_a_503_naming_the_build_command_and_nothing_is_built(tmp_path: Path) -> None:
    """The server never builds images: the demo's model server image is missing, so the start answers
    503 ``image_missing`` with the runtime's fix (``orchestrate images build``), and nothing runs."""
    repo, settings = make_repo(tmp_path), make_settings(tmp_path)
    missing = ImageMissing(
        "image 'meta-orchestrator-modelserver:x' is not built; run `orchestrate images build`"
    )

    def script(spec: ContainerSpec) -> FakeProcess:
        return FakeProcess(start_error=missing)

    runtime = FakeRuntime(script=script)
    runner = ServerRunner(settings, runtime)

    async def scenario() -> httpx.Response:
        app = create_app(settings, runner)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = {"prompt": "p", "repo": str(repo), "options": {"scenario": "demo"}}
            answer = await client.post("/api/sessions", json=body)
        await runner.aclose()
        return answer

    answer = asyncio.run(scenario())
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "image_missing")
    assert "orchestrate images build" in answer.json()["error"]["message"]
    assert [c.name for c in runtime.containers.values() if c.status == "running"] == []
