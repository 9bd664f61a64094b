"""Properties of the recovery engine that must hold for every sequence of events, exits and stalls.

A small fake coordinator carries actions out the way ``engine.py`` documents (record the action,
then start the next container on the action's rung), folding real events through ``models.state``
and rebuilding the ``WorkerView`` from them before every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.models.recovery import RecoveryAction
from orchestrator.recovery import ExitInfo, PermissionRecoveryEngine, RecoveryPolicy, WorkerView

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "w-t1"

denials = st.builds(
    ev.PermissionDenied,
    tool=st.sampled_from(["Write", "Bash", "apply_patch"]),
    by_policy=st.sampled_from([False, False, True]),
)
# Half of the lines are denials: escalation is the path with the most state (rungs, ceilings).
payloads = denials | st.one_of(
    st.builds(ev.RateLimited, retry_after_s=st.none() | st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(ev.AuthFailed, detail=st.text(max_size=20)),
    st.builds(
        ev.ApiError,
        kind=st.sampled_from(["server_error", "overloaded", "stream_cut", "context_overflow", "other"]),
    ),
    st.builds(ev.CliRetry, attempt=st.none() | st.integers(0, 10)),
    st.builds(ev.CliRefused, reason=st.sampled_from(["root_bypass", "resume_not_found", "environment"])),
    st.builds(ev.Message, role=st.just("assistant"), text=st.text(max_size=20)),
    st.builds(ev.AgentResult, ok=st.booleans()),
)
exits = st.builds(
    ExitInfo,
    exit_code=st.sampled_from([None, 0, 1, 2, 41, 137, 144, 145, 173, 244]),
    reason=st.sampled_from(["finished", "crashed", "killed", "oom", "stalled", "stopped", "timeout"]),
    result_ok=st.none() | st.booleans(),
    turn_incomplete=st.booleans(),
)
stimuli = st.lists(
    st.tuples(
        st.one_of(
            st.tuples(st.just("line"), payloads),
            st.tuples(st.just("exit"), exits),
            st.tuples(st.just("silence"), st.floats(min_value=0, max_value=5000)),
        ),
        # Then the coordinator starts the pending container (mostly; else more lines come first).
        st.sampled_from([True, True, True, False]),
    ),
    min_size=1,
    max_size=40,
)
# Sampled rather than ranged: hypothesis favours the ends of ranges, and a ceiling of 0 or a single
# attempt would leave escalation unexercised most of the time.
rungs = st.sampled_from([0, 1, 2, 2])
policies = st.builds(
    RecoveryPolicy,
    claude_max_rung=rungs,
    codex_max_rung=rungs,
    gemini_max_rung=rungs,
    writer_start_rung=st.sampled_from([0, 0, 1]),
    max_attempts=st.sampled_from([1, 2, 4, 6]),
    max_backoffs=st.integers(0, 6),
    max_restarts=st.integers(0, 4),
    stall_timeout_s=st.floats(min_value=1, max_value=1000),
)


@dataclass
class FakeCoordinator:
    """Records events like the real coordinator and starts containers the way actions say."""

    agent: AgentName
    is_writer: bool
    policy: RecoveryPolicy
    events: list[ev.AgentEvent] = field(default_factory=list)
    actions: list[RecoveryAction] = field(default_factory=list)
    started: list[tuple[int, int]] = field(default_factory=list)  # (attempt, rung) of every container
    now: datetime = T0
    memory: int | None = None

    def record(self, data: ev.EventData, worker: str = NAME) -> None:
        self.now += timedelta(seconds=1)
        seq = len(self.events) + 1
        event = ev.AgentEvent(
            seq=seq, ts=self.now, session_id="s", worker=worker, type=ev.TYPE_OF[type(data)], data=data
        )
        self.events.append(event)

    def start(self, attempt: int, rung: int) -> None:
        self.started.append((attempt, rung))
        self.record(
            ev.WorkerStarted(
                agent=self.agent, image="i", container_id=f"c{attempt}", argv=[], attempt=attempt, rung=rung
            )
        )
        self.record(ev.CliSession(id="cli-1"))

    def view(self) -> WorkerView:
        return WorkerView.from_events(self.events, NAME, is_writer=self.is_writer, memory_bytes=self.memory)

    def act(self, action: RecoveryAction | None) -> None:
        if action is None:
            return
        self.actions.append(action)
        self.record(ev.Recovery(action=action))
        if action.memory_bytes is not None:
            self.memory = action.memory_bytes

    def start_pending(self) -> None:
        pending = self.view().pending
        if pending is not None:
            self.record(ev.WorkerExited(exit_code=137, reason="killed"))
            self.start(pending.attempt, pending.rung or 0)


Step = tuple[tuple[str, object], bool]


def run(agent: AgentName, is_writer: bool, policy: RecoveryPolicy, steps: list[Step]) -> FakeCoordinator:
    engine = PermissionRecoveryEngine(policy, seed=1)
    coordinator = FakeCoordinator(agent, is_writer, policy)
    coordinator.start(1, policy.start_rung(agent, is_writer=is_writer))
    for (kind, value), start_after in steps:
        if kind == "line":
            value = cast(ev.EventData, value)
            coordinator.record(value)
            coordinator.act(engine.monitor_stream(value, coordinator.view()))
        elif kind == "exit" and isinstance(value, ExitInfo):
            coordinator.record(ev.WorkerExited(exit_code=value.exit_code, reason=value.reason))
            coordinator.act(engine.on_exit(coordinator.view(), value))
        elif kind == "silence" and isinstance(value, float):
            coordinator.act(
                engine.check_stall(coordinator.view(), coordinator.now + timedelta(seconds=value))
            )
        elif kind == "person_stops":
            coordinator.record(ev.HumanDecision(action="stop"))
        if start_after:
            coordinator.start_pending()
    return coordinator


@settings(max_examples=400, deadline=None)
@given(
    agent=st.sampled_from(list(AgentName)),
    is_writer=st.sampled_from([True, True, False]),
    policy=policies,
    steps=stimuli,
)
def test_restarts_are_bounded_and_rungs_never_go_down(
    agent: AgentName, is_writer: bool, policy: RecoveryPolicy, steps: list[Step]
) -> None:
    """For any sequence: at most max_attempts - 1 restarts, no container beyond max_attempts, rungs
    never go down, nothing after a give-up, ceilings hold, and at most one action is pending."""
    coordinator = run(agent, is_writer, policy, steps)
    restarts = [a for a in coordinator.actions if a.kind != "give_up"]
    assert len(restarts) <= policy.max_attempts - 1
    assert all(attempt <= policy.max_attempts for attempt, _ in coordinator.started)
    rungs = [rung for _, rung in coordinator.started] + [
        a.rung for a in coordinator.actions if a.rung is not None
    ]
    started_rungs = [rung for _, rung in coordinator.started]
    assert started_rungs == sorted(started_rungs)
    assert all(r <= max(policy.ceiling(agent), policy.start_rung(agent, is_writer=is_writer)) for r in rungs)
    gave_up = [i for i, a in enumerate(coordinator.actions) if a.kind == "give_up"]
    assert gave_up in ([], [len(coordinator.actions) - 1])
    assert [a.attempt for a in restarts] == sorted({a.attempt for a in restarts})


@settings(max_examples=200, deadline=None)
@given(policy=policies, steps=stimuli)
def test_a_person_stop_ends_all_recovery(policy: RecoveryPolicy, steps: list[Step]) -> None:
    """After a person stops the worker, no sequence of inputs yields another action."""
    coordinator = run(AgentName.CLAUDE, True, policy, [(("person_stops", None), False), *steps])
    assert coordinator.actions == []


@settings(max_examples=300, deadline=None)
@given(agent=st.sampled_from(list(AgentName)), line=st.text(max_size=300) | st.binary(max_size=300).map(repr))
def test_garbage_lines_never_raise(agent: AgentName, line: str) -> None:
    """Any text as a raw line, through the agent's real parser when it exists, gives None or an action."""
    worker = WorkerView(name=NAME, agent=agent)
    result = PermissionRecoveryEngine().monitor_stream(line, worker)
    assert result is None or result.worker == NAME


@settings(max_examples=200, deadline=None)
@given(agent=st.sampled_from(list(AgentName)), is_writer=st.booleans(), policy=policies, payload=payloads)
def test_a_denial_by_our_own_rule_is_never_escalated(
    agent: AgentName, is_writer: bool, policy: RecoveryPolicy, payload: ev.EventData
) -> None:
    """For any worker and policy, a ``by_policy`` denial yields no action at all."""
    if isinstance(payload, ev.PermissionDenied):
        payload = payload.model_copy(update={"by_policy": True})
        worker = WorkerView(name=NAME, agent=agent, is_writer=is_writer)
        assert PermissionRecoveryEngine(policy).monitor_stream(payload, worker) is None
