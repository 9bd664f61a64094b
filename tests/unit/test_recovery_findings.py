"""Recovery bugs the real CLIs showed in Docker (``tests/integration/test_recovery_e2e.py``), pinned
down here without Docker: the parsers on the lines the CLIs printed, the supervisor on the FakeRuntime.

- On rung 1 (``--sandbox workspace-write``) Codex's sandbox cannot start inside Docker, so
  ``apply_patch`` fails with a multi-line router error on stderr whose last line is
  ``Failed to write file <path>``: a denial, so the worker escalates to rung 2 at once.
- Codex also writes each denial to its rollout file. An attempt that the stream already decided
  (stopped and escalated) must not have its rollout lines read again when a later attempt ends, or
  the old denial escalates a worker that did its work (and gives up on the top rung).
- Gemini keeps no chat before the model's first answer: ``--resume`` of the id its ``init`` line
  printed then fails ("No previous sessions found"). The id is announced only once the model
  answered, so a restart before that starts afresh; a failed resume is ``resume_not_found``.
- After a stall the next container is judged by its own silence, not by the last line of the
  container that stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path

from pydantic import SecretStr

from orchestrator.agents.codex_stream import CodexParser
from orchestrator.agents.gemini_stream import GeminiParser
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


def _supervise(
    tmp_path: Path, attempts: list[FakeProcess], **recovery: float
) -> tuple[Outcome, list[ev.EventData]]:
    """Run one Codex write job whose attempts do what ``attempts`` say; the rollout holds a denial."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001, recovery=recovery)
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
        flusher = asyncio.ensure_future(writer.run_flusher(settings.flush_interval_s))
        try:
            engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(settings))
            supervisor = Supervisor(
                FakeRuntime(script=script), writer, settings, engine, launcher.spec_for,
                transcripts=lambda job, command: [rollout], stall_check_s=0.2,
            )  # fmt: skip
            job = Job(worker="codex-t1", agent=AgentName.CODEX, prompt="write it", workdir=repo,
                      task_id="t1", writable=True)  # fmt: skip
            return await supervisor.run(job)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
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


def gemini_line(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, "timestamp": "2026-11-26T03:47:24.073Z", **fields})


INIT = gemini_line("init", session_id="52dcfbaf-53fd-4ddd-a67a-4548adcc40e3", model="gemini-2.5-pro")


def test_gemini_announces_its_session_only_once_the_model_answered() -> None:
    """init, the echoed prompt and a rate-limit give-up: no session to resume; an answer: the id, once."""
    parser = GeminiParser()
    before = [p for line in (INIT, gemini_line("message", role="user", content="make hello.txt"))
              for p in parser.parse_line("stdout", line)]  # fmt: skip
    answer = [
        gemini_line("message", role="assistant", content="I will", delta=True),
        gemini_line("tool_use", tool_name="write_file", tool_id="w1", parameters={}),
    ]
    after = [p for line in answer for p in parser.parse_line("stdout", line)]
    assert [type(p).__name__ for p in before] == ["Message"]
    sessions = [p for p in after if isinstance(p, ev.CliSession)]
    assert sessions == [ev.CliSession(id="52dcfbaf-53fd-4ddd-a67a-4548adcc40e3")]


def test_gemini_failing_to_resume_is_resume_not_found() -> None:
    """The stderr line of a resume with no stored chat is a refusal the rules restart afresh once."""
    parser = GeminiParser()
    line = "Error resuming session: No previous sessions found for this project."
    payloads = [*parser.parse_line("stderr", line), *parser.finish(42)]
    refused = [p for p in payloads if isinstance(p, ev.CliRefused)]
    assert refused == [ev.CliRefused(reason="resume_not_found", detail=line)]


def test_after_a_stall_the_next_container_gets_its_own_silence_window(tmp_path: Path) -> None:
    """Stalled once, resumed; the resumed container prints within the timeout and is not judged stalled."""
    stalled = FakeProcess(lines=codex_lines("x")[:1], hang=True)
    slow_start = [FakeLine(line, after_s=0.3) for line in codex_lines("done")]
    outcome, events = _supervise(tmp_path, [stalled, FakeProcess(lines=slow_start)], stall_timeout_s=2.0)
    actions = [(e.action.kind, e.action.cause) for e in events if isinstance(e, ev.Recovery)]
    assert actions == [("resume", "stalled")]
    assert (outcome.ok, outcome.attempts, outcome.text) == (True, 2, "done")
