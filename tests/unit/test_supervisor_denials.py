"""Two denials the real Codex CLI showed in Docker, on the supervisor with the FakeRuntime.

- On rung 1 (``--sandbox workspace-write``) Codex's sandbox cannot start inside Docker, so
  ``apply_patch`` fails with a multi-line router error on stderr whose last line is
  ``Failed to write file <path>``: a denial, so the worker escalates to rung 2 at once.
- Codex also writes each denial to its rollout file. An attempt that the stream already decided
  (stopped and escalated) must not have its rollout lines read again when a later attempt ends, or
  the old denial escalates a worker that did its work (and gives up on the top rung).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from pydantic import SecretStr

from orchestrator.agents.codex_stream import CodexParser
from orchestrator.config import Settings
from orchestrator.launch import Launcher
from orchestrator.models import AgentName
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.recovery import PermissionRecoveryEngine, RecoveryPolicy
from orchestrator.runtime import FakeLine, FakeProcess, FakeRuntime
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.store import EventReader, EventWriter
from orchestrator.supervisor import Job, Outcome, Supervisor
from tests.support.fake_agents import codex_lines

REJECTED = (
    "2026-11-26T03:33:53.147296Z ERROR codex_core::tools::router: error=patch rejected: writing is "
    "blocked by read-only sandbox; rejected by user approval settings"
)
RUNG1_ERROR = [
    "2026-11-26T03:33:55.334698Z ERROR codex_core::tools::router: error=Exit code: 1",
    "Wall time: 0 seconds",
    "Output:",
    "Failed to write file /workspace/greeting.py",
    "",
]
ROLLOUT_DENIAL = {
    "type": "response_item",
    "payload": {
        "type": "custom_tool_call_output",
        "call_id": "call_1",
        "output": "patch rejected: writing is blocked by read-only sandbox; rejected by user approval settings",
    },
}


def test_the_rung1_write_failure_is_one_apply_patch_denial() -> None:
    """Of the five stderr lines of the rung-1 router error, the last one is the denial."""
    parser = CodexParser()
    payloads = [p for line in RUNG1_ERROR for p in parser.parse_line("stderr", line)]
    assert payloads == [
        ev.PermissionDenied(tool="apply_patch", detail="Failed to write file /workspace/greeting.py")
    ]


def _supervise(tmp_path: Path, attempts: list[FakeProcess]) -> tuple[Outcome, list[ev.EventData]]:
    """Run one Codex write job whose attempts do what ``attempts`` say; the rollout holds a denial."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001)
    settings = settings.model_copy(
        update={"codex": settings.codex.model_copy(update={"api_key": SecretStr("test-key-123456")})}
    )
    paths = SessionPaths.of(settings.workspace, "sess0001")
    paths.root.mkdir(parents=True)
    rollout = tmp_path / "rollout.jsonl"
    rollout.write_text(json.dumps(ROLLOUT_DENIAL) + "\n")
    launcher = Launcher(settings, paths, repo, {"codex": "img-codex:1"})
    started: list[ContainerSpec] = []

    def script(spec: ContainerSpec) -> FakeProcess:
        started.append(spec)
        return attempts[len(started) - 1]

    async def main() -> Outcome:
        writer = EventWriter.open(paths)
        try:
            engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(settings))
            supervisor = Supervisor(
                FakeRuntime(script=script), writer, settings, engine, launcher.spec_for,
                transcripts=lambda job, command: [rollout], stall_check_s=0.5,
            )  # fmt: skip
            job = Job(worker="codex-t1", agent=AgentName.CODEX, prompt="write it", workdir=repo,
                      task_id="t1", writable=True)  # fmt: skip
            return await supervisor.run(job)
        finally:
            writer.close()

    outcome = asyncio.run(main())
    return outcome, [e.data for e in EventReader(paths).read()]


def test_an_attempt_decided_by_the_stream_leaves_its_rollout_lines_behind(tmp_path: Path) -> None:
    """Denied on rung 0 (stderr and rollout), then done on rung 1: one escalation, and success."""
    denied = FakeProcess(lines=[*codex_lines("x")[:1], FakeLine(REJECTED, stream="stderr")], hang=True)
    outcome, events = _supervise(tmp_path, [denied, FakeProcess(lines=codex_lines("done"))])
    actions = [(e.action.kind, e.action.rung) for e in events if isinstance(e, ev.Recovery)]
    assert actions == [("escalate_permissions", 1)]
    assert (outcome.ok, outcome.attempts, outcome.text) == (True, 2, "done")


def test_a_rung1_write_failure_escalates_to_the_top_rung(tmp_path: Path) -> None:
    """Rung 0 refused, rung 1 cannot write (the sandbox), rung 2 finishes: two escalations."""
    denied = FakeProcess(lines=[*codex_lines("x")[:1], FakeLine(REJECTED, stream="stderr")], hang=True)
    rung1 = FakeProcess(lines=[*codex_lines("x")[:1], *(FakeLine(t, stream="stderr") for t in RUNG1_ERROR)],
                        hang=True)  # fmt: skip
    outcome, events = _supervise(tmp_path, [denied, rung1, FakeProcess(lines=codex_lines("done"))])
    actions = [(e.action.kind, e.action.rung) for e in events if isinstance(e, ev.Recovery)]
    assert actions == [("escalate_permissions", 1), ("escalate_permissions", 2)]
    assert (outcome.ok, outcome.attempts) == (True, 3)
