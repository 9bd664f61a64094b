"""A process killed while a container ran leaves it behind; the process that resumes the session
removes it before it starts the worker's next attempt (running or exited, it is never read again)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

from pydantic import SecretStr

from orchestrator.agents import get_adapter
from orchestrator.config import Settings
from orchestrator.launch import Launcher
from orchestrator.models import AgentName
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.recovery import PermissionRecoveryEngine, RecoveryPolicy
from orchestrator.runtime import FakeProcess, FakeRuntime
from orchestrator.store import EventWriter
from orchestrator.supervisor import Job, Supervisor
from tests.support.fake_agents import codex_lines


def test_a_container_left_by_a_killed_process_is_removed_before_the_next_attempt(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001)
    settings = settings.model_copy(
        update={"codex": settings.codex.model_copy(update={"api_key": SecretStr("test-key-123456")})}
    )
    paths = SessionPaths.of(settings.workspace, "sess0001")
    paths.root.mkdir(parents=True)
    launcher = Launcher(settings, paths, repo, {"codex": "img-codex:1"})
    job = Job(
        worker="reviewer-codex-t1-1", agent=AgentName.CODEX, prompt="review it", workdir=repo, task_id="t1"
    )
    processes = [
        FakeProcess(lines=codex_lines("x")[:1], hang=True),
        FakeProcess(lines=codex_lines("approved")),
    ]
    runtime = FakeRuntime(script=lambda spec: processes.pop(0))

    async def main() -> tuple[str, str]:
        writer = EventWriter.open(paths)
        flusher = asyncio.ensure_future(writer.run_flusher(settings.flush_interval_s))
        try:
            # what the killed process left: a started reviewer that never exited, still running
            command = get_adapter("codex").build_command(job.prompt, 0, settings=settings.codex)
            left = await runtime.start(launcher.spec_for(job, command, 1, None))
            writer.emit(job.worker, ev.WorkerStarted(agent=job.agent, image="img-codex:1", container_id=left,
                                                     argv=["codex"], attempt=1, flags=[], rung=0), "t1")  # fmt: skip
            await writer.commit()
            engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(settings))
            supervisor = Supervisor(runtime, writer, settings, engine, launcher.spec_for)
            outcome = await supervisor.run(job, rung=0)
            assert (outcome.ok, outcome.text) == (True, "approved")
            return left, writer.state.workers[job.worker].container_id or ""
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            writer.close()

    left, last = asyncio.run(main())
    assert left != last
    assert left not in runtime.containers  # removed, not left running beside the new attempt
