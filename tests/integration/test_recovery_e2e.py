"""Recovery end to end: the real pinned CLIs in their hardened images, the scripted model server on
the session's internal network (``SessionHost.model_server``), and ``Supervisor.run`` driving one
job through its attempts exactly as a session does (the launcher, the sandbox rules, the recovery
engine; no planner, no review, no merge).

Per CLI (claude, codex, gemini):

- a write refused on rung 0 is escalated and the CLI's own session resumed on the next rung, where
  the file gets written (``write-retry.toml``);
- 429 until the CLI gives up twice: two backoff restarts with their delays, then success
  (``ratelimit-giveup.toml``, ``ORCH_RECOVERY__BACKOFF_BASE_S=1``);
- 401: given up at once, with the fix naming ``ORCH_<AGENT>__API_KEY`` (``authfail.toml``);
- the first model request never answered: the stall is seen, the CLI resumed once (Gemini, which
  keeps no chat before the model's first answer, started afresh), then success (``hang-once.toml``,
  a 20 s stall timeout checked every second: longer than a CLI's start-up).

And once, without a model: a worker over its 64 MiB memory limit is OOM-killed and restarted once
with 96 MiB (x1.5), through the same supervisor with the job's command swapped for a small Python
program in the light base image (``images["base"]``) that prints a Claude-style result line.

Containers and the network carry ``orchestrator.session=<id>`` and are removed by it afterwards,
whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from orchestrator.agents.base import CommandSpec
from orchestrator.config import Settings
from orchestrator.launch import Launcher
from orchestrator.models import AgentEvent, AgentName
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.recovery import PermissionRecoveryEngine, RecoveryPolicy
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.runtime.protocol import SESSION_LABEL
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.sessions import SessionHost, network_name
from orchestrator.store import EventReader, EventWriter
from orchestrator.supervisor import Job, Outcome, SpecBuilder, Supervisor

SCENARIOS = Path(__file__).resolve().parents[2] / "orchestrator" / "scenarios"
AGENTS = ["claude", "codex", "gemini"]
RESUME_FLAG = {"claude": "--resume", "codex": "resume", "gemini": "--resume"}
TOP = 2
UNUSED_KEY = SecretStr("not-sent-anywhere")
# Longer than a CLI's start-up on a loaded machine (Gemini printed its first line after up to 9 s).
STALL_S = 20.0
pytestmark = pytest.mark.timeout(420)


@dataclass
class Run:
    """What one supervised job left behind."""

    outcome: Outcome
    events: list[AgentEvent]
    workdir: Path
    server_log: list[dict[str, Any]]

    def of(self, kind: type[ev.EventData]) -> list[Any]:
        return [e.data for e in self.events if isinstance(e.data, kind)]

    @property
    def actions(self) -> list[tuple[str, str]]:
        return [(r.action.kind, r.action.cause) for r in self.of(ev.Recovery)]

    def story(self) -> str:
        """The worker's events and the server's answers, for an assertion message."""
        lines = [
            f"{e.ts:%H:%M:%S.%f} {e.type}: {json.dumps(e.data.model_dump(mode='json'))[:300]}"
            for e in self.events
        ]
        lines += [f"server: {json.dumps(entry)[:300]}" for entry in self.server_log]
        return "\n".join(lines[-150:])


@pytest.fixture
def session_id() -> Iterator[str]:
    """A session id whose containers and network are removed afterwards, by label."""
    value = new_session_id()
    yield value
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={value}"}):
            container.remove(force=True)
        for network in client.networks.list(names=[network_name(value)]):
            network.remove()
    finally:
        client.close()


def settings_for(tmp_path: Path, **recovery: float) -> Settings:
    """Settings with a workspace of the test's own and a quick backoff (the stall timeout only where tested)."""
    knobs = {"backoff_base_s": 1.0, **recovery}
    return Settings(_env_file=None, workspace=tmp_path / "ws", grace_period_s=3.0, recovery=knobs)


def server_log(session: str) -> list[dict[str, Any]]:
    """The model server's request log (its JSON lines on stderr), read before it is removed."""
    client = docker.from_env()
    try:
        found = client.containers.list(
            all=True, filters={"label": [f"{SESSION_LABEL}={session}", "orchestrator.worker=modelserver"]}
        )
        raw = found[0].logs(stdout=False, stderr=True).decode(errors="replace") if found else ""
    finally:
        client.close()
    entries = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("event") == "modelserver.request" and e.get("family")]


async def supervise(
    settings: Settings,
    session: str,
    job_for: Any,
    *,
    scenario: Path | None,
    rung: int | None = None,
    spec_for: Any = None,
) -> Run:
    """Run one job with recovery; with ``scenario``, against the model server on the session network."""
    runtime = DockerRuntime()
    host = SessionHost(settings, runtime)
    paths = SessionPaths.of(settings.workspace, session)
    paths.root.mkdir(parents=True)
    repo = paths.root / "repo"
    repo.mkdir()

    async def attempt(scripted: Settings, network: str) -> Run:
        launcher = Launcher(scripted, paths, repo, host.images(), network)
        workdir = paths.root / "worktrees" / "t1"
        workdir.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(workdir, *launcher.owner)
        writer = EventWriter.open(paths)
        flusher = asyncio.ensure_future(writer.run_flusher(scripted.flush_interval_s))  # as a session does
        try:
            engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(scripted))
            build: SpecBuilder = spec_for(launcher) if spec_for else launcher.spec_for
            supervisor = Supervisor(runtime, writer, scripted, engine, build,
                                    transcripts=launcher.transcript_files, stall_check_s=1.0)  # fmt: skip
            outcome = await supervisor.run(job_for(workdir), rung=rung)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            writer.close()
        log = server_log(session) if scenario else []
        return Run(outcome, list(EventReader(paths).read()), workdir, log)

    if scenario is None:
        return await attempt(settings, "none")
    async with host.model_server(session, scenario) as scripted:
        return await attempt(scripted, network_name(session))


def job(agent: str, *, writable: bool = True) -> Any:
    def make(workdir: Path) -> Job:
        return Job(worker=f"{agent}-t1", agent=AgentName(agent), prompt="make hello.txt", workdir=workdir,
                   task_id="t1", writable=writable, timeout_s=300)  # fmt: skip

    return make


def run_job(tmp_path: Path, session: str, agent: str, scenario: str, **kwargs: Any) -> Run:
    settings = settings_for(tmp_path, **kwargs.pop("recovery", {}))
    return asyncio.run(supervise(settings, session, job(agent), scenario=SCENARIOS / scenario, **kwargs))


@pytest.mark.parametrize("agent", AGENTS)
def test_a_refused_write_escalates_resumes_the_cli_session_and_lands(
    agent: str, tmp_path: Path, session_id: str, images: dict[str, str]
) -> None:
    """Rung 0 refuses the write -> recovery -> the next rung resumes the same CLI session -> the file."""
    run = run_job(tmp_path, session_id, agent, "write-retry.toml")
    assert run.outcome.ok, run.story()
    started = run.of(ev.WorkerStarted)
    escalations = [r.action for r in run.of(ev.Recovery)]
    assert escalations, run.story()
    assert {a.kind for a in escalations} == {"escalate_permissions"}
    assert [s.rung for s in started] == list(range(len(started)))
    assert (started[0].rung, started[-1].rung) == (0, escalations[-1].rung)
    session = run.of(ev.CliSession)[0].id
    for later in started[1:]:
        flag = later.argv.index(RESUME_FLAG[agent])
        assert later.argv[flag + 1] == session
    assert (run.workdir / "hello.txt").read_text() == "hello\n"
    assert run.outcome.attempts == len(started)


@pytest.mark.parametrize("agent", AGENTS)
def test_rate_limits_back_off_with_growing_delays_then_succeed(
    agent: str, tmp_path: Path, session_id: str, images: dict[str, str]
) -> None:
    """The CLI gives up on 429 twice: two backoff restarts (>= 1 s, then >= 2 s), then the write."""
    run = run_job(tmp_path, session_id, agent, "ratelimit-giveup.toml", rung=TOP)
    assert run.outcome.ok, run.story()
    backoffs = [r.action for r in run.of(ev.Recovery)]
    assert [(a.kind, a.cause) for a in backoffs] == [("backoff_restart", "rate_limited")] * 2, run.story()
    assert backoffs[0].delay_s >= 1.0
    assert backoffs[1].delay_s >= 2.0
    assert len(run.of(ev.WorkerStarted)) == 3
    assert (run.workdir / "hello.txt").read_text() == "hello\n"
    assert [e["status"] for e in run.server_log].count(429) >= 4


@pytest.mark.parametrize("agent", AGENTS)
def test_a_bad_key_gives_up_at_once_naming_the_setting(
    agent: str, tmp_path: Path, session_id: str, images: dict[str, str]
) -> None:
    """401: one container, ``give_up`` (auth_failed), and the error says which setting to fix."""
    run = run_job(tmp_path, session_id, agent, "authfail.toml", rung=TOP)
    assert not run.outcome.ok
    assert run.actions == [("give_up", "auth_failed")], run.story()
    assert len(run.of(ev.WorkerStarted)) == 1
    assert f"ORCH_{agent.upper()}__API_KEY" in (run.outcome.error or "")
    assert not (run.workdir / "hello.txt").exists()


# After a stall before the model's first answer: Claude and Codex have stored the conversation and
# resume it; Gemini keeps no chat until the model answered, so its CLI session is started afresh.
STALL_AGAIN = {"claude": "resume", "codex": "resume", "gemini": "restart"}


@pytest.mark.parametrize("agent", AGENTS)
def test_a_silent_model_is_seen_as_a_stall_and_the_cli_resumed(
    agent: str, tmp_path: Path, session_id: str, images: dict[str, str]
) -> None:
    """No output for ``STALL_S``: the container is killed and started again once (resuming the CLI
    session where there is one to resume), and the second container finishes the task."""
    run = run_job(
        tmp_path, session_id, agent, "hang-once.toml", rung=TOP, recovery={"stall_timeout_s": STALL_S}
    )
    assert run.outcome.ok, run.story()
    assert run.actions == [(STALL_AGAIN[agent], "stalled")], run.story()
    started, exited = run.of(ev.WorkerStarted), run.of(ev.WorkerExited)
    assert [e.reason for e in exited] == ["stalled", "finished"]
    if STALL_AGAIN[agent] == "resume":
        session = run.of(ev.CliSession)[0].id
        assert started[1].argv[started[1].argv.index(RESUME_FLAG[agent]) + 1] == session
    else:
        assert RESUME_FLAG[agent] not in started[1].argv
    assert (run.workdir / "hello.txt").read_text() == "hello\n"


ALLOCATE = (
    "import json\n"
    "block = bytearray(72 * 1024 * 1024)\n"
    "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False,"
    " 'result': f'allocated {len(block) >> 20} MiB', 'session_id': 'memory-probe'}), flush=True)\n"
)


def test_a_worker_over_its_memory_limit_gets_one_raise(
    tmp_path: Path, session_id: str, images: dict[str, str]
) -> None:
    """72 MiB in a 64 MiB container: OOM, ``raise_memory`` to 96 MiB (x1.5), then it fits and succeeds."""
    settings = settings_for(tmp_path).model_copy(
        update={"limits": Settings(_env_file=None).limits.model_copy(update={"memory": "64m"})}
    )
    settings = settings.model_copy(
        update={"claude": settings.claude.model_copy(update={"image": images["base"], "api_key": UNUSED_KEY})}
    )
    memory: list[int] = []

    def swap_command(launcher: Launcher) -> SpecBuilder:
        def build(job: Job, command: CommandSpec, attempt: int, memory_bytes: int | None) -> ContainerSpec:
            program = command.model_copy(update={"argv": ["python3", "-c", ALLOCATE]})
            spec = launcher.spec_for(job, program, attempt, memory_bytes)
            memory.append(spec.memory_bytes)
            return spec

        return build

    run = asyncio.run(
        supervise(settings, session_id, job("claude"), scenario=None, rung=TOP, spec_for=swap_command)
    )
    assert run.outcome.ok, run.story()
    assert run.actions == [("raise_memory", "out_of_memory")], run.story()
    assert [e.reason for e in run.of(ev.WorkerExited)] == ["oom", "finished"]
    assert memory == [64 << 20, 96 << 20]
    assert run.outcome.text == "allocated 72 MiB"
