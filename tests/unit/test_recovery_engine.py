"""Bounds and guards of ``PermissionRecoveryEngine``: ceilings, budgets, stops, stalls, raw lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.agents.base import Stream
from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.models.recovery import RecoveryAction, RecoveryKind
from orchestrator.models.state import AgentState
from orchestrator.recovery import ExitInfo, PermissionRecoveryEngine, RecoveryPolicy, WorkerView

CLAUDE, CODEX, GEMINI = AgentName.CLAUDE, AgentName.CODEX, AgentName.GEMINI
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENGINE = PermissionRecoveryEngine(RecoveryPolicy())
DENIED = ev.PermissionDenied(tool="Write", detail="Claude requested permissions to write")
CRASH = ExitInfo(exit_code=1, reason="crashed")
GIB = 1024**3


def view(agent: AgentName = CLAUDE, **fields: object) -> WorkerView:
    """A running write task's worker (rung 0, attempt 1, a CLI session id) with ``fields`` changed."""
    base = {"name": f"{agent.value}-t1", "agent": agent, "cli_session_id": "s-1", "started_at": T0}
    return WorkerView.model_validate({**base, **fields})


def past(*causes: str, kind: RecoveryKind = "resume") -> tuple[RecoveryAction, ...]:
    """Recorded actions of the given causes, each having started its container (attempts 2, 3, ...)."""
    return tuple(
        RecoveryAction(kind=kind, worker="claude-t1", cause=c, attempt=i + 2) for i, c in enumerate(causes)
    )


# -- permissions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", list(AgentName))
@pytest.mark.parametrize("rung", [0, 1, 2])
def test_a_denial_by_our_own_rule_is_never_escalated(agent: AgentName, rung: int) -> None:
    """``by_policy=True`` means the orchestrator itself forbade it: no rung change, no action."""
    denial = ev.PermissionDenied(
        tool="run_shell_command", detail="Tool execution denied by policy.", by_policy=True
    )
    assert ENGINE.monitor_stream(denial, view(agent, rung=rung)) is None


@pytest.mark.parametrize(
    ("agent", "setting", "next_flags"),
    [
        (CLAUDE, "ORCH_CLAUDE__MAX_RUNG=1", "--permission-mode bypassPermissions"),
        (CODEX, "ORCH_CODEX__MAX_RUNG=1", "--dangerously-bypass-approvals-and-sandbox"),
        (GEMINI, "ORCH_GEMINI__MAX_RUNG=1", "--approval-mode yolo"),
    ],
)
def test_the_ceiling_stops_escalation_with_a_message(agent: AgentName, setting: str, next_flags: str) -> None:
    """At the configured ceiling a denial gives up, naming the setting and what raising it allows."""
    engine = PermissionRecoveryEngine(RecoveryPolicy(**{f"{agent.value}_max_rung": 1}))
    action = engine.monitor_stream(DENIED, view(agent, rung=1))
    assert action is not None
    assert (action.kind, action.cause, action.rung) == ("give_up", "permission_denied", 1)
    assert setting in action.message
    assert next_flags in action.message


def test_a_ceiling_of_zero_gives_up_on_the_first_denial() -> None:
    """With max_rung 0 a writer never leaves the default mode."""
    engine = PermissionRecoveryEngine(RecoveryPolicy(claude_max_rung=0))
    action = engine.monitor_stream(DENIED, view())
    assert action is not None
    assert (action.kind, "ORCH_CLAUDE__MAX_RUNG=0" in action.message) == ("give_up", True)


def test_a_denial_on_the_widest_rung_gives_up() -> None:
    """On rung 2 no flag grants more (e.g. Gemini's build-file protection under yolo)."""
    action = ENGINE.monitor_stream(ev.PermissionDenied(tool="write_file"), view(GEMINI, rung=2))
    assert action is not None
    assert (action.kind, "widest rung 2" in action.message) == ("give_up", True)


def test_a_read_only_task_is_not_escalated() -> None:
    """A read-only task is meant to be denied writes: the denial stands and nothing restarts."""
    assert ENGINE.monitor_stream(DENIED, view(is_writer=False)) is None


def test_escalation_starts_from_the_highest_rung_ever_granted() -> None:
    """A rung never goes down: a worker started lower than a recorded escalation climbs from it."""
    granted = (
        RecoveryAction(
            kind="escalate_permissions", worker="claude-t1", cause="permission_denied", attempt=2, rung=1
        ),
    )
    action = ENGINE.monitor_stream(DENIED, view(attempt=2, rung=0, past=granted))
    assert action is not None
    assert (action.rung, action.new_flags) == (2, ["--permission-mode", "bypassPermissions"])


@pytest.mark.parametrize(("cause_input", "expected_flags"), [(CRASH, ["--sandbox", "workspace-write"])])
def test_other_restarts_keep_the_rung_and_its_flags(cause_input: ExitInfo, expected_flags: list[str]) -> None:
    """A resume after a crash runs on the same rung with the same flags."""
    action = ENGINE.on_exit(view(CODEX, rung=1), cause_input)
    assert action is not None
    assert ("resume", 1, expected_flags) == (action.kind, action.rung, action.new_flags)


# -- auth, budgets, attempts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "variable", "login"),
    [(CLAUDE, "ORCH_CLAUDE__API_KEY", "~/.claude"), (CODEX, "ORCH_CODEX__API_KEY", "~/.codex"),
     (GEMINI, "ORCH_GEMINI__API_KEY", "~/.gemini")],
)  # fmt: skip
def test_auth_failure_gives_up_naming_what_to_fix(agent: AgentName, variable: str, login: str) -> None:
    """A failed login is never retried: the message names the key variable and the login folder."""
    action = ENGINE.monitor_stream(ev.AuthFailed(detail="Invalid API key"), view(agent))
    assert action is not None
    assert (action.kind, variable in action.message, login in action.message) == ("give_up", True, True)


def test_attempts_are_bounded() -> None:
    """A restart that would start container max_attempts + 1 gives up instead, naming the setting."""
    action = ENGINE.on_exit(view(attempt=4), CRASH)
    assert action is not None
    assert (action.kind, action.cause, action.attempt) == ("give_up", "crashed", 4)
    assert "ORCH_RECOVERY__MAX_ATTEMPTS=4" in action.message


def test_the_last_allowed_attempt_still_starts() -> None:
    """Attempt 3 may still start container 4 (max_attempts counts the first container)."""
    action = ENGINE.monitor_stream(DENIED, view(attempt=3))
    assert action is not None
    assert (action.kind, action.attempt) == ("escalate_permissions", 4)


def test_crash_restarts_are_bounded_by_max_restarts() -> None:
    """After max_restarts resumes (API failures count too) the next crash gives up."""
    engine = PermissionRecoveryEngine(RecoveryPolicy(max_attempts=10))
    worker = view(attempt=3, past=past("crashed", "api_failure"))
    action = engine.on_exit(worker, CRASH)
    assert action is not None
    assert (action.kind, action.cause) == ("give_up", "crashed")
    assert "ORCH_RECOVERY__MAX_RESTARTS=2" in action.message


def test_rate_limit_backoffs_are_bounded() -> None:
    """After max_backoffs backoff restarts the next rate limit gives up, naming the setting."""
    engine = PermissionRecoveryEngine(RecoveryPolicy(max_attempts=10))
    worker = view(attempt=6, past=past(*["rate_limited"] * 5, kind="backoff_restart"))
    action = engine.monitor_stream(ev.RateLimited(), worker)
    assert action is not None
    assert (action.kind, "ORCH_RECOVERY__MAX_BACKOFFS=5" in action.message) == ("give_up", True)


def test_backoff_grows_with_earlier_backoffs_and_honours_retry_after() -> None:
    """The n-th backoff waits at least base x 2^n, and at least the server's Retry-After."""
    engine = PermissionRecoveryEngine(RecoveryPolicy(max_attempts=10, backoff_jitter=0.0))
    delays = [
        engine.monitor_stream(ev.RateLimited(retry_after_s=45.0), view(attempt=n + 1, past=past(*["rate_limited"] * n, kind="backoff_restart")))
        for n in range(4)
    ]  # fmt: skip
    assert [a.delay_s for a in delays if a is not None] == [45.0, 60.0, 120.0, 240.0]


def test_backoff_jitter_is_reproducible_from_the_seed() -> None:
    """The same seed gives the same wait (replay gives the same actions); another seed may differ."""
    first = PermissionRecoveryEngine(seed=7).monitor_stream(ev.RateLimited(), view())
    again = PermissionRecoveryEngine(seed=7).monitor_stream(ev.RateLimited(), view())
    assert first == again
    assert first is not None
    assert 30.0 <= first.delay_s <= 33.0


def test_a_lost_cli_session_is_restarted_afresh_once() -> None:
    """``resume_not_found``: start a new conversation; the second time, give up."""
    refused = ev.CliRefused(reason="resume_not_found", detail="No conversation found with session ID: x")
    first = ENGINE.monitor_stream(refused, view())
    second = ENGINE.monitor_stream(refused, view(attempt=2, past=past("cli_refused", kind="restart")))
    assert (first and first.kind, second and second.kind) == ("restart", "give_up")


def test_a_root_bypass_refusal_names_the_fix() -> None:
    """Claude's refusal of bypassPermissions as root gives up naming the user and ceiling settings."""
    refused = ev.CliRefused(reason="root_bypass", detail="cannot be used with root/sudo privileges")
    action = ENGINE.monitor_stream(refused, view(rung=2))
    assert action is not None
    assert (action.kind, "ORCH_UID" in action.message, "ORCH_CLAUDE__MAX_RUNG=1" in action.message) == (
        "give_up",
        True,
        True,
    )


def test_context_overflow_is_not_retried() -> None:
    """A conversation that outgrew the context window gives up: the plan should split the task."""
    action = ENGINE.monitor_stream(ev.ApiError(kind="context_overflow"), view())
    assert action is not None
    assert (action.kind, "split" in action.message) == ("give_up", True)


def test_a_cli_without_a_session_id_is_restarted_afresh() -> None:
    """``restart`` (not ``resume``) when the CLI never printed a session id to resume."""
    action = ENGINE.on_exit(view(cli_session_id=None), CRASH)
    assert action is not None
    assert action.kind == "restart"


# -- guards ----------------------------------------------------------------------------------------


def test_a_worker_stopped_by_a_person_is_never_restarted() -> None:
    """No line, exit or silence restarts a worker a person stopped."""
    worker = view(stopped_by_person=True)
    answers = [
        ENGINE.monitor_stream(DENIED, worker),
        ENGINE.on_exit(worker, CRASH),
        ENGINE.on_exit(worker, ExitInfo(reason="oom")),
        ENGINE.check_stall(worker, T0 + timedelta(hours=5)),
    ]
    assert answers == [None, None, None, None]


def test_lines_after_a_decision_are_ignored() -> None:
    """Once an action is recorded for the running container, later lines and its exit do nothing."""
    decided = (RecoveryAction(kind="backoff_restart", worker="claude-t1", cause="rate_limited", attempt=2),)
    worker = view(attempt=1, past=decided)
    assert [ENGINE.monitor_stream(ev.RateLimited(), worker), ENGINE.on_exit(worker, CRASH)] == [None, None]


def test_nothing_follows_a_give_up() -> None:
    """After ``give_up`` no input restarts the worker."""
    gave_up = (RecoveryAction(kind="give_up", worker="claude-t1", cause="auth_failed", attempt=1),)
    assert ENGINE.on_exit(view(past=gave_up), CRASH) is None


def test_cli_retries_are_recorded_not_acted_on() -> None:
    """The CLI's own retry notices never produce an action."""
    assert ENGINE.monitor_stream(ev.CliRetry(attempt=1, detail="rate_limit"), view()) is None


@pytest.mark.parametrize(
    "payload",
    [ev.Message(role="assistant", text="done"), ev.ToolCall(tool="Write"), ev.Usage(), ev.CliSession(id="x"),
     ev.AgentResult(ok=False), ev.ToolResult(ok=False)],
)  # fmt: skip
def test_ordinary_events_call_for_nothing(payload: ev.EventData) -> None:
    """Events that are not failures pass through."""
    assert ENGINE.monitor_stream(payload, view()) is None


def test_an_agent_event_envelope_is_judged_by_its_payload() -> None:
    """``monitor_stream`` takes a recorded ``AgentEvent`` or an ``EventDraft`` as well as a payload."""
    draft = ev.EventDraft.of("claude-t1", DENIED)
    event = ev.AgentEvent(
        seq=1, ts=T0, session_id="s", worker="claude-t1", type="permission_denied", data=DENIED
    )
    kinds = [a.kind if a else None for a in (ENGINE.monitor_stream(x, view()) for x in (draft, event))]
    assert kinds == ["escalate_permissions", "escalate_permissions"]


# -- memory ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "expected"),
    [(2 * GIB, 3 * GIB), (None, 3 * GIB), (3 * GIB, 4 * GIB)],  # None: the policy's default (2 GiB)
)
def test_oom_raises_memory_by_the_factor_up_to_the_cap(memory: int | None, expected: int) -> None:
    """An OOM kill restarts with memory x1.5, never above the cap."""
    action = ENGINE.on_exit(view(memory_bytes=memory), ExitInfo(exit_code=137, reason="oom"))
    assert action is not None
    assert ("raise_memory", expected) == (action.kind, action.memory_bytes)


def test_oom_at_the_cap_gives_up() -> None:
    """No raise is possible at the cap: give up, naming the cap setting."""
    action = ENGINE.on_exit(view(memory_bytes=4 * GIB), ExitInfo(reason="oom"))
    assert action is not None
    assert (action.kind, "ORCH_RECOVERY__MEMORY_CAP" in action.message) == ("give_up", True)


def test_memory_is_raised_once() -> None:
    """A second OOM after a raise gives up."""
    action = ENGINE.on_exit(
        view(attempt=2, past=past("out_of_memory", kind="raise_memory")), ExitInfo(reason="oom")
    )
    assert action is not None
    assert (action.kind, action.cause) == ("give_up", "out_of_memory")


# -- stalls ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("silent_s", "expected"), [(599.9, None), (600.0, "resume"), (7200.0, "resume")])
def test_a_stall_is_resumed_after_the_timeout(silent_s: float, expected: str | None) -> None:
    """No output for stall_timeout_s (600 s) calls for a resume (the coordinator kills first)."""
    worker = view(last_output_at=T0)
    action = ENGINE.check_stall(worker, T0 + timedelta(seconds=silent_s))
    assert expected == (action.kind if action else None)


def test_a_stall_counts_from_the_start_when_nothing_was_printed() -> None:
    """A worker that never printed is measured from its start."""
    action = ENGINE.check_stall(view(started_at=T0), T0 + timedelta(seconds=601))
    assert action is not None
    assert (action.cause, action.kind) == ("stalled", "resume")


def test_a_second_stall_gives_up() -> None:
    """A stall is resumed once; the next one gives up naming the timeout setting."""
    action = ENGINE.check_stall(
        view(attempt=2, last_output_at=T0, past=past("stalled")), T0 + timedelta(hours=1)
    )
    assert action is not None
    assert (action.kind, "ORCH_RECOVERY__STALL_TIMEOUT_S=600" in action.message) == ("give_up", True)


@pytest.mark.parametrize("status", ["pending", "recovering", "paused", "succeeded", "failed", "stopped"])
def test_only_running_workers_stall(status: str) -> None:
    """A paused (review), finished or not yet started worker is not stalled."""
    assert ENGINE.check_stall(view(status=status, last_output_at=T0), T0 + timedelta(hours=1)) is None


def test_a_naive_clock_is_refused() -> None:
    """``now`` without a time zone is a programming error with the value in the message."""
    with pytest.raises(ValueError, match="has no time zone"):
        ENGINE.check_stall(view(last_output_at=T0), datetime(2026, 1, 1, 1))


# -- raw lines -------------------------------------------------------------------------------------


class FakeParser:
    """Maps known lines to payloads; raises on the line ``boom`` like a buggy parser would."""

    def __init__(
        self, table: dict[str, list[ev.EventData]], at_finish: list[ev.EventData] | None = None
    ) -> None:
        self.table, self.at_finish = table, at_finish or []
        self.seen: list[tuple[str, str]] = []

    def parse_line(self, stream: Stream, line: str) -> list[ev.EventData]:
        if line == "boom":
            raise RuntimeError("parser bug")
        self.seen.append((stream, line))
        return self.table.get(line, [])

    def parse_transcript_line(self, line: str) -> list[ev.EventData]:
        self.seen.append(("transcript", line))
        return self.table.get(line, [])

    def finish(self, exit_code: int | None) -> list[ev.EventData]:
        return self.at_finish


def fake_engine(parser: FakeParser) -> PermissionRecoveryEngine:
    return PermissionRecoveryEngine(parsers=lambda _agent: parser)


def test_a_raw_line_is_parsed_by_the_adapter_and_carried_as_evidence() -> None:
    """A ``str`` line goes through the worker's parser; the action's evidence is the line itself."""
    line = '{"type":"user","message":{"content":[{"type":"tool_result","is_error":true}]}}'
    parser = FakeParser({line: [ev.Message(role="user", text="x"), DENIED]})
    action = fake_engine(parser).monitor_stream(line, view())
    assert action is not None
    assert ("escalate_permissions", line, [("stdout", line)]) == (action.kind, action.evidence, parser.seen)


def test_a_non_json_line_is_read_as_stderr_and_an_output_payload_keeps_its_stream() -> None:
    """Plain text is stderr (where Codex reports a rejected patch); ``Output`` says its own stream."""
    parser = FakeParser({})
    engine = fake_engine(parser)
    engine.monitor_stream("ERROR codex_core::tools::router: error=patch rejected", view(CODEX))
    engine.monitor_stream(ev.Output(stream="stdout", line="plain"), view(CODEX))
    assert parser.seen == [
        ("stderr", "ERROR codex_core::tools::router: error=patch rejected"),
        ("stdout", "plain"),
    ]


def test_output_lines_are_read_in_order_until_one_calls_for_an_action() -> None:
    """An ``OutputLines`` payload: each line through the parser; after the first action, no more."""
    denied = "ERROR: patch rejected"
    parser = FakeParser({denied: [DENIED]})
    payload = ev.OutputLines(stream="stderr", lines=["ok", denied, "never read"])
    action = fake_engine(parser).monitor_stream(payload, view())
    assert action is not None and action.evidence == denied
    assert parser.seen == [("stderr", "ok"), ("stderr", denied)]


@pytest.mark.parametrize("garbage", ["", "boom", "{", "\x00\xff", "{" * 10_000, '{"type": 1}', "ü" * 100_000])
def test_garbage_lines_never_raise(garbage: str) -> None:
    """Unparseable lines, and a parser that raises on them, give None."""
    assert fake_engine(FakeParser({})).monitor_stream(garbage, view()) is None


def test_without_an_adapter_raw_lines_yield_nothing() -> None:
    """If no parser can be built for the agent, raw lines are skipped (and logged), not fatal."""

    def broken(_agent: AgentName) -> FakeParser:
        raise ImportError("no adapter")

    assert PermissionRecoveryEngine(parsers=broken).monitor_stream("anything", view()) is None


def test_a_transcript_line_goes_through_the_same_parser() -> None:
    """``monitor_transcript`` reads the CLI's session log with the run's parser (Codex's rollout)."""
    rollout = (
        '{"type":"response_item","payload":{"type":"function_call_output","output":"Read-only file system"}}'
    )
    parser = FakeParser({rollout: [ev.PermissionDenied(tool="exec_command", detail="Read-only file system")]})
    action = fake_engine(parser).monitor_transcript(rollout, view(CODEX))
    assert action is not None
    assert (action.kind, parser.seen) == ("escalate_permissions", [("transcript", rollout)])


def test_on_exit_judges_what_the_parser_reports_at_the_end_first() -> None:
    """A cut stream the parser only sees at the end resumes the worker even though it exited 0."""
    engine = fake_engine(FakeParser({}, at_finish=[ev.ApiError(kind="stream_cut", detail="no message_stop")]))
    worker = view()
    engine.monitor_stream("first line", worker)
    action = engine.on_exit(worker, ExitInfo(exit_code=0))
    assert action is not None
    assert (action.kind, action.cause) == ("resume", "api_failure")


# -- the view --------------------------------------------------------------------------------------


def test_the_view_is_folded_from_the_events() -> None:
    """``WorkerView.from_events`` reads attempt, rung, session id and recorded actions from the log."""
    action = RecoveryAction(
        kind="escalate_permissions", worker="codex-t1", cause="permission_denied", attempt=2, rung=1
    )
    payloads: list[ev.EventData] = [
        ev.WorkerStarted(agent=CODEX, image="i", container_id="c1", argv=[], attempt=1),
        ev.CliSession(id="thread-1"),
        ev.Recovery(action=action),
        ev.WorkerExited(exit_code=0, reason="killed"),
        ev.WorkerStarted(agent=CODEX, image="i", container_id="c2", argv=[], attempt=2, rung=1),
    ]
    events = [
        ev.AgentEvent(seq=i + 1, ts=T0, session_id="s", worker="codex-t1", type=ev.TYPE_OF[type(p)], data=p)
        for i, p in enumerate(payloads)
    ]
    worker = WorkerView.from_events(events, "codex-t1", is_writer=True)
    assert (2, 1, "thread-1", (action,), None) == (
        worker.attempt, worker.rung, worker.cli_session_id, worker.past, worker.pending
    )  # fmt: skip


def test_a_state_without_an_agent_is_refused() -> None:
    """The engine must know the CLI; a worker with no agent yet is an error naming the worker."""
    with pytest.raises(ValueError, match="'w1' has no agent yet"):
        WorkerView.from_state(AgentState(name="w1"), is_writer=True)
