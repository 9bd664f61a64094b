"""``WorkerManager`` on the ``FakeRuntime``: launches, exits, stops, attempts, re-attach, refusals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.agents import CommandSpec
from orchestrator.config import AgentSettings, Settings
from orchestrator.errors import ConfigError, DockerUnavailable, InvalidIdentifier, UnsafeMount, UsageError
from orchestrator.models.common import AgentName
from orchestrator.models.events import WorkerExited, WorkerStarted
from orchestrator.models.plan import DirSpec, SubTask
from orchestrator.paths import SessionPaths
from orchestrator.runtime import FakeLine, FakeProcess, FakeRuntime
from orchestrator.store import EventWriter
from orchestrator.workers import MemoryEvents, SessionContext, WorkerManager, session_network
from sandbox.mounts import Refusal, refusal_of

SESSION = "sess0001abcd"
KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture
def session(tmp_path: Path, settings: Settings) -> SessionContext:
    repo = tmp_path / "repo"
    for name in ("src", "docs"):
        (repo / name).mkdir(parents=True)
    paths = SessionPaths.of(settings.workspace, SESSION)
    (paths.worktree("t1") / "src").mkdir(parents=True)
    (paths.worktree("t1") / "docs").mkdir()
    (paths.worktree("t1") / ".git").mkdir()
    return SessionContext(paths=paths, repo=repo, home=tmp_path / "home")


@pytest.fixture
def agent_settings(settings: Settings) -> Settings:
    agents = {
        name: AgentSettings(
            api_key=SecretStr(f"{KEY}-{name}"), image=f"test-{name}:1", base_url="http://model:8080"
        )
        for name in ("claude", "codex", "gemini")
    }
    return settings.model_copy(update={**agents, "grace_period_s": 0.2})


def manager(runtime: FakeRuntime, settings: Settings, session: SessionContext) -> WorkerManager:
    return WorkerManager(runtime, settings, session)


WRITE_TASK = SubTask(
    id="t1", title="Fix the parser", description="Make it accept empty input.", agent=AgentName.CLAUDE,
    dirs=[DirSpec(path="src", mode="rw"), DirSpec(path="docs", mode="ro")], acceptance=["tests pass"],
)  # fmt: skip


async def test_a_writer_gets_its_worktree_and_nothing_else_writable(
    agent_settings: Settings, session: SessionContext
) -> None:
    """A write task: the worktree rw at /workspace, its ro dirs laid over it, its CLI state in its home."""
    runtime = FakeRuntime(FakeProcess(lines=['{"type":"result"}'], exit_code=0))
    workers = manager(runtime, agent_settings, session)
    handle = await workers.launch_claude(WRITE_TASK)
    spec = runtime.specs[0]
    worktree = session.paths.worktree("t1")
    state = session.paths.home("claude-t1") / "state" / "0"
    expected = [
        ("/workspace", str(worktree), False),
        ("/workspace/docs", str(worktree / "docs"), True),
        ("/home/agent/.claude", str(state), False),
    ]
    assert sorted(expected) == sorted((m.target, m.source, m.read_only) for m in spec.mounts)
    assert handle.name == "claude-t1"
    assert agent_settings.recovery.writer_start_rung == handle.rung
    assert spec.image == "test-claude:1"


async def test_launch_records_started_and_exited_and_folds_the_status(
    agent_settings: Settings, session: SessionContext
) -> None:
    """worker_started at launch, worker_exited once at exit; the status follows the events."""
    runtime = FakeRuntime(FakeProcess(lines=["one", FakeLine("two", "stderr")], exit_code=0))
    workers = manager(runtime, agent_settings, session)
    handle = await workers.launch_claude(WRITE_TASK)
    assert workers.get_worker_status("claude-t1").status == "running"
    lines = [(line.stream, line.text) async for line in handle.lines()]
    first, second = await handle.wait(), await handle.wait()
    assert lines == [("stdout", "one"), ("stderr", "two")]
    assert first == second
    assert isinstance(workers.events, MemoryEvents)
    kinds = [type(e.data) for e in workers.events.events]
    assert [WorkerStarted, WorkerExited] == kinds
    status = workers.get_worker_status("claude-t1")
    assert (status.status, status.exit_code, status.attempt) == ("succeeded", 0, 1)
    assert handle.container_id == status.container_id


async def test_an_analysis_task_writes_only_its_cli_state(
    agent_settings: Settings, session: SessionContext
) -> None:
    """Gemini reading the repository: its dirs read-only, rung 0; the one writable mount is its CLI state."""
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings, session)
    handle = await workers.launch_gemini("Summarise the design", [DirSpec(path="src"), DirSpec(path="docs")])
    spec = runtime.specs[0]
    state = session.paths.home("gemini-adhoc1") / "state" / "0"
    assert [("/home/agent/.gemini", str(state))] == [
        (m.target, m.source) for m in spec.mounts if not m.read_only
    ]
    read_only = {(m.target, m.source) for m in spec.mounts if m.read_only}
    assert {
        ("/workspace/src", str(session.repo / "src")),
        ("/workspace/docs", str(session.repo / "docs")),
    } <= read_only
    assert handle.rung == 0
    assert handle.name == "gemini-adhoc1"


async def test_cli_state_is_kept_between_attempts_and_never_shared(
    agent_settings: Settings, session: SessionContext
) -> None:
    """A relaunch mounts the worker's state folder with what the last attempt left; another worker has its own."""
    runtime = FakeRuntime(FakeProcess(exit_code=1))
    workers = manager(runtime, agent_settings, session)
    first = await workers.launch_claude(WRITE_TASK)
    [state] = [Path(m.source) for m in runtime.specs[0].mounts if m.target == "/home/agent/.claude"]
    (state / "session.jsonl").write_text("attempt 1")
    await first.wait()
    await workers.launch_claude(WRITE_TASK)
    await workers.launch(AgentName.CLAUDE, "review it", task_id="t2")
    mounted = [[Path(m.source) for m in s.mounts if m.target == "/home/agent/.claude"] for s in runtime.specs]
    assert [[state], [state], [session.paths.home("claude-t2") / "state" / "0"]] == mounted
    assert (state / "session.jsonl").read_text() == "attempt 1"
    assert list((session.paths.worktree("t1") / ".git").iterdir()) == []  # nothing of it in the clone


async def test_codex_writes_only_in_its_own_worktree(
    agent_settings: Settings, session: SessionContext
) -> None:
    """``launch_codex(task, cwd)``: cwd is the worktree; any other cwd is refused before any start."""
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings, session)
    with pytest.raises(UnsafeMount) as caught:
        await workers.launch(AgentName.CODEX, "edit", write_dir=str(session.repo), task_id="t1")
    assert refusal_of(caught.value) == Refusal.WRITE_NOT_WORKTREE
    assert [c for c in runtime.calls if c[0] == "start"] == []
    await workers.launch(AgentName.CODEX, "edit", write_dir=str(session.paths.worktree("t1")), task_id="t1")
    assert [(m.target, m.read_only) for m in runtime.specs[0].mounts if m.target == "/workspace"] == [
        ("/workspace", False)
    ]


async def test_a_missing_worktree_is_refused(agent_settings: Settings, session: SessionContext) -> None:
    """A write task whose clone was not made is refused (nothing to write in), naming the path."""
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings, session)
    task = WRITE_TASK.model_copy(update={"id": "t9"})
    with pytest.raises(UnsafeMount) as caught:
        await workers.launch_claude(task)
    assert refusal_of(caught.value) == Refusal.MISSING
    assert str(session.paths.worktree("t9")) == caught.value.path


async def test_the_key_travels_only_as_a_secret(agent_settings: Settings, session: SessionContext) -> None:
    """The API key is in the container's secrets; not in argv, labels, plain env or any event."""
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings, session)
    await workers.launch_claude(WRITE_TASK)
    spec = runtime.specs[0]
    key = f"{KEY}-claude"
    assert key == spec.environment["ANTHROPIC_API_KEY"]
    assert key not in " ".join([*spec.argv, *spec.labels.values(), *spec.env.values()])
    assert isinstance(workers.events, MemoryEvents)
    assert all(key not in e.model_dump_json() for e in workers.events.events)


async def test_stop_worker_stops_and_records_it(agent_settings: Settings, session: SessionContext) -> None:
    """A hanging worker stopped by name ends ``stopped`` (exit 143), recorded once."""
    runtime = FakeRuntime(FakeProcess(lines=["working"], hang=True))
    workers = manager(runtime, agent_settings, session)
    await workers.launch_claude(WRITE_TASK)
    actual = await workers.stop_worker("claude-t1")
    assert (actual.exit_code, actual.reason) == (143, "stopped")
    assert workers.get_worker_status("claude-t1").status == "stopped"


async def test_stop_all_stops_every_worker_at_once(agent_settings: Settings, session: SessionContext) -> None:
    """Two workers that ignore SIGTERM are killed after one grace period, not two in a row."""
    runtime = FakeRuntime(FakeProcess(hang=True, ignore_sigterm=True))
    workers = manager(runtime, agent_settings, session)
    await workers.launch_claude(WRITE_TASK)
    await workers.launch_gemini("look around")
    started = time.monotonic()
    stopped = await workers.stop_all(grace_s=1.0)
    elapsed = time.monotonic() - started
    assert {k: v.exit_code for k, v in stopped.items()} == {"claude-t1": 137, "gemini-adhoc1": 137}
    assert elapsed < 1.7, elapsed  # one after the other would take 2 s
    assert await workers.stop_all() == {}


async def test_a_relaunch_is_the_next_attempt(agent_settings: Settings, session: SessionContext) -> None:
    """Relaunching a worker counts attempts: new container name and label, same worker."""
    runtime = FakeRuntime(FakeProcess(exit_code=1))
    workers = manager(runtime, agent_settings, session)
    first = await workers.launch_claude(WRITE_TASK)
    await first.wait()
    second = await workers.launch_claude(WRITE_TASK)
    assert (first.attempt, second.attempt) == (1, 2)
    assert [s.name for s in runtime.specs] == [
        "orch-sess0001abcd-claude-t1-1",
        "orch-sess0001abcd-claude-t1-2",
    ]
    assert runtime.specs[1].labels["orchestrator.attempt"] == "2"


async def test_a_fresh_manager_reattaches_running_containers(
    agent_settings: Settings, session: SessionContext
) -> None:
    """After a restart, running containers of the session are found by label; exited ones are not."""
    runtime = FakeRuntime(lambda spec: FakeProcess(hang="claude" in spec.argv[0]))
    workers = manager(runtime, agent_settings, session)
    running = await workers.launch_claude(WRITE_TASK)
    done = await workers.launch_gemini("look")
    await done.wait()
    fresh = manager(runtime, agent_settings, session)
    attached = await fresh.reattach()
    assert [(running.name, running.container_id, 1)] == [
        (h.name, h.container_id, h.attempt) for h in attached
    ]
    await fresh.stop_worker("claude-t1", grace_s=0.1)
    assert (await runtime.inspect(running.container_id)).status == "exited"


async def test_close_removes_every_container(agent_settings: Settings, session: SessionContext) -> None:
    """``close`` leaves no container of the manager behind, running or not."""
    runtime = FakeRuntime(FakeProcess(hang=True))
    workers = manager(runtime, agent_settings, session)
    await workers.launch_claude(WRITE_TASK)
    await workers.launch_gemini("look")
    await workers.close()
    assert runtime.containers == {}


async def test_events_go_to_the_session_store(agent_settings: Settings, session: SessionContext) -> None:
    """With the session's ``EventWriter`` as sink, the status comes from the durable log."""
    runtime = FakeRuntime(FakeProcess(exit_code=3))
    with EventWriter.open(session.paths) as writer:
        workers = WorkerManager(runtime, agent_settings, session, events=writer)
        handle = await workers.launch_claude(WRITE_TASK)
        await handle.wait()
        writer.flush()
        status = workers.get_worker_status("claude-t1")
    assert (status.status, status.exit_code, status.exit_reason) == ("failed", 3, "crashed")


async def test_unknown_workers_and_garbage_are_clear_errors(
    agent_settings: Settings, session: SessionContext
) -> None:
    """Unknown names, agents and bad ids are usage errors; an unknown status is 'pending'."""
    workers = manager(FakeRuntime(), agent_settings, session)
    with pytest.raises(UsageError, match="no worker named 'nobody'"):
        await workers.stop_worker("nobody")
    with pytest.raises(UsageError, match="unknown agent 'nope'"):
        await workers.launch("nope", "task")
    with pytest.raises(InvalidIdentifier):
        await workers.launch(AgentName.CLAUDE, "task", task_id="../x")
    with pytest.raises(UnsafeMount):
        await workers.launch_gemini("task", ["relative/dir"])
    assert workers.get_worker_status("nobody").status == "pending"


async def test_a_command_that_needs_a_host_folder_writable_is_refused(
    agent_settings: Settings, session: SessionContext
) -> None:
    """A CLI may write only in its tmpfs (/tmp, its home) and its state: any other dir is a config error."""
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings, session)
    command = CommandSpec(
        agent=AgentName.CLAUDE, rung=0, argv=["claude"], writable_dirs=["/var/cache/claude"]
    )
    with pytest.raises(ConfigError, match="/var/cache/claude"):
        await workers.launch(AgentName.CLAUDE, "task", command=command)
    assert runtime.specs == []


async def test_an_engine_that_is_down_is_an_environment_error(
    agent_settings: Settings, session: SessionContext
) -> None:
    """No Docker engine: ``DockerUnavailable`` (exit 5), nothing recorded as started."""
    workers = manager(FakeRuntime(available=False), agent_settings, session)
    with pytest.raises(DockerUnavailable) as caught:
        await workers.launch_claude(WRITE_TASK)
    assert caught.value.exit_code == 5
    assert isinstance(workers.events, MemoryEvents)
    assert workers.events.events == []


async def test_the_wait_can_time_out_and_continue(agent_settings: Settings, session: SessionContext) -> None:
    """``wait(timeout_s)`` raises TimeoutError while running; a later wait still gets the exit."""
    runtime = FakeRuntime(FakeProcess(lines=[FakeLine("late", after_s=0.3)]))
    workers = manager(runtime, agent_settings, session)
    handle = await workers.launch_claude(WRITE_TASK)
    with pytest.raises(TimeoutError):
        await handle.wait(timeout_s=0.05)
    assert (await asyncio.wait_for(handle.wait(), 2)).exit_code == 0


@pytest.mark.parametrize(("mode", "expected"), [("none", ("none", True)), ("allowlist", (f"orch-{SESSION}", True)),
                                                ("open", (f"orch-{SESSION}", False))])  # fmt: skip
def test_session_network_follows_the_setting(
    settings: Settings, mode: str, expected: tuple[str, bool]
) -> None:
    """``none``: no network; allowlist: one internal network per session; open: a normal one."""
    assert expected == session_network(settings.model_copy(update={"network": mode}), SESSION)


async def test_a_login_folder_is_copied_into_the_writers_state(
    agent_settings: Settings, session: SessionContext, tmp_path: Path
) -> None:
    """Without an API key, the agent's login folder is copied into its state folder (not mounted)."""
    login = tmp_path / "claude-login"
    login.mkdir()
    (login / ".credentials.json").write_text('{"token": "login-token-value"}')
    claude = AgentSettings(login_dir=login, image="test-claude:1")
    runtime = FakeRuntime()
    workers = manager(runtime, agent_settings.model_copy(update={"claude": claude}), session)
    await workers.launch_claude(WRITE_TASK)
    spec = runtime.specs[0]
    [state] = [m for m in spec.mounts if m.target == "/home/agent/.claude"]
    assert (Path(state.source) / ".credentials.json").read_text() == '{"token": "login-token-value"}'
    assert str(login) not in {m.source for m in spec.mounts}
    assert spec.secrets == {}
