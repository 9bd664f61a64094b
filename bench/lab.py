"""The orchestrator side of a benchmark: one session wired as the coordinator wires it.

``open_lab`` builds what ``Orchestrator._setup`` builds: the session's ``EventWriter`` with its group
commit flusher (``run_flusher(settings.flush_interval_s)``), a ``DockerRuntime``, the ``Launcher``
(sandbox rules -> hardened spec), the recovery engine and the ``Supervisor``. The only difference is
the command: the agent adapter builds its CLI's argv as usual, then ``ScriptedSpecs`` swaps in a
scripted worker (the agent CLIs are not what is measured) and adds the run's label for cleanup.
``FirstOutput`` notes when each worker's first output line became durable (listener after fsync).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from orchestrator.agents.base import CommandSpec
from orchestrator.config import AgentSettings, Settings
from orchestrator.launch import Launcher
from orchestrator.log import REDACTOR
from orchestrator.models import SessionCreated
from orchestrator.models.common import AgentName
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.recovery import PermissionRecoveryEngine, RecoveryPolicy
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.store import EventWriter
from orchestrator.supervisor import Job, Supervisor

# The scripted workers speak Codex's ``--json``: this last line is its successful end of a turn.
TURN_COMPLETED = '{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":1}}'
FAKE_KEY = "bench-fake-key-not-a-secret"


def bench_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for a benchmark: workspace under ``root``, no environment, a fake Codex key."""
    codex = AgentSettings(api_key=SecretStr(FAKE_KEY), base_url="http://127.0.0.1:9/v1")
    values: dict[str, Any] = {"_env_file": None, "workspace": root / "workspace", "codex": codex, **overrides}
    return Settings(**values)


@dataclass
class ScriptedSpecs:
    """A ``SpecBuilder``: the launcher's hardened spec of the job, running ``script(job)`` instead."""

    launcher: Launcher
    script: Callable[[Job], Sequence[str]]
    labels: Mapping[str, str]

    def __call__(
        self, job: Job, command: CommandSpec, attempt: int, memory_bytes: int | None
    ) -> ContainerSpec:
        spec = self.launcher.spec_for(job, command, attempt, memory_bytes)
        return spec.model_copy(
            update={"argv": tuple(self.script(job)), "labels": {**spec.labels, **self.labels}}
        )


class FirstOutput:
    """``watch(worker)``: a future of the ``perf_counter()`` at which the worker's first output line
    was durable (stored, fsynced and folded into the writer's state)."""

    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[float]]] = {}
        self.unsubscribe = writer.subscribe(self._durable)

    def watch(self, worker: str) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._waiting[worker] = (loop, future)
        return future

    def _durable(self, _: int) -> None:
        now = time.perf_counter()
        workers = self._writer.state.workers
        for name, (loop, future) in list(self._waiting.items()):
            found = workers.get(name)
            if found is None or found.last_output_at is None:
                continue
            # two flushes (the flusher's and a commit) may call listeners at once, from two threads
            if self._waiting.pop(name, None) is not None:
                loop.call_soon_threadsafe(_resolve, future, now)


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


@dataclass
class Lab:
    """One live session: writer (+ flusher), runtime, launcher and supervisor; see ``open_lab``."""

    settings: Settings
    paths: SessionPaths
    repo: Path
    writer: EventWriter
    runtime: DockerRuntime
    launcher: Launcher
    supervisor: Supervisor
    first_output: FirstOutput
    specs: ScriptedSpecs
    jobs: int = field(default=0)

    def job(self, worker: str | None = None, agent: AgentName = AgentName.CODEX) -> Job:
        """A read-only job on the lab's repository (one worker name per call unless given)."""
        self.jobs += 1
        return Job(worker=worker or f"w{self.jobs}", agent=agent, prompt="benchmark", workdir=self.repo)


@contextlib.asynccontextmanager
async def open_lab(
    root: Path,
    image: str,
    script: Callable[[Job], Sequence[str]],
    labels: Mapping[str, str],
    runtime: DockerRuntime | None = None,
    **overrides: Any,
) -> AsyncIterator[Lab]:
    """A session under ``root`` whose workers run ``script(job)`` in ``image`` (module docstring)."""
    settings = bench_settings(root, **{"grace_period_s": 1.0, **overrides})
    REDACTOR.register(*settings.secret_values())
    repo = root / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "README.md").write_text("a repository for benchmarks\n")
    paths = SessionPaths.of(settings.workspace, new_session_id())
    writer = EventWriter.open(paths)
    writer.emit("orchestrator", SessionCreated(prompt="benchmark", repo=str(repo)))
    writer.flush()
    flusher = asyncio.ensure_future(writer.run_flusher(settings.flush_interval_s))
    docker_runtime = runtime or DockerRuntime()
    images = {agent.value: image for agent in AgentName}
    launcher = Launcher(settings, paths, repo.resolve(), images)
    specs = ScriptedSpecs(launcher, script, labels)
    engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(settings))
    supervisor = Supervisor(
        docker_runtime, writer, settings, engine, specs, transcripts=launcher.transcript_files
    )
    first = FirstOutput(writer)
    try:
        yield Lab(settings, paths, repo, writer, docker_runtime, launcher, supervisor, first, specs)
    finally:
        with contextlib.suppress(Exception):
            await supervisor.stop_all(0)
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        first.unsubscribe()
        writer.close()
        await docker_runtime.close()
