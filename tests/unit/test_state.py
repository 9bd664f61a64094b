"""The state fold: ``replay`` is a pure fold, equal however the log is split or snapshotted."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.models import (
    TYPE_OF,
    AgentEvent,
    EventData,
    Output,
    PlanReady,
    Recovery,
    RecoveryAction,
    SessionCreated,
    SessionFinished,
    SessionPaused,
    SessionResumed,
    SessionState,
    TaskBreakdown,
    Usage,
    WorkerExited,
    WorkerStarted,
    apply,
    replay,
)
from tests.support.strategies import event_sequences

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(*items: tuple[str, EventData]) -> list[AgentEvent]:
    return [
        AgentEvent(seq=i + 1, ts=T0, session_id="sess0001", worker=w, task_id="t1" if w != "orchestrator" else None,
                   type=TYPE_OF[type(d)], data=d)
        for i, (w, d) in enumerate(items)
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(events=event_sequences(), split=st.integers(0, 25))
def test_replay_equals_the_incremental_fold_through_a_snapshot(events: list[AgentEvent], split: int) -> None:
    """Folding all events at once equals folding a prefix, storing it as JSON, and folding the rest."""
    split = min(split, len(events))
    snapshot = SessionState.model_validate_json(replay(events[:split]).model_dump_json())
    assert replay(events[split:], state=snapshot) == replay(events)


@settings(max_examples=60, deadline=None)
@given(events=event_sequences())
def test_incremental_apply_equals_replay(events: list[AgentEvent]) -> None:
    """Applying events one by one to a live state equals replaying the log."""
    live = SessionState()
    for event in events:
        live = apply(live, event)
    assert live == replay(events)
    assert live.last_seq == len(events)


def test_a_session_folds_to_the_expected_state() -> None:
    """Created, planned, a worker started, recovered, succeeded: statuses, attempts and totals follow."""
    plan = TaskBreakdown.model_validate(
        {
            "goal": "g",
            "tasks": [
                {
                    "id": "t1",
                    "title": "x",
                    "description": "d",
                    "agent": "codex",
                    "dirs": [{"path": ".", "mode": "rw"}],
                }
            ],
        }  # fmt: skip
    )
    action = RecoveryAction(
        kind="escalate_permissions", worker="codex-t1", cause="permission_denied", attempt=2
    )
    events = _events(
        ("orchestrator", SessionCreated(prompt="p", repo="/r")),
        ("orchestrator", PlanReady(breakdown=plan)),
        ("codex-t1", WorkerStarted(agent="codex", image="i", container_id="c1", argv=["codex"], attempt=1)),
        ("codex-t1", Output(stream="stderr", line="patch rejected")),
        ("codex-t1", Recovery(action=action)),
        ("codex-t1", WorkerExited(exit_code=0, reason="killed")),
        ("codex-t1", WorkerStarted(agent="codex", image="i", container_id="c2", argv=["codex"], attempt=2)),
        ("codex-t1", Usage(input_tokens=10, output_tokens=5, cost_usd=0.25)),
        ("codex-t1", WorkerExited(exit_code=0, reason="finished")),
        ("orchestrator", SessionPaused(reason="review")),
        ("orchestrator", SessionResumed(by="person")),
        ("orchestrator", SessionFinished(status="succeeded", summary="done")),
    )
    state = replay(events)
    worker = state.workers["codex-t1"]
    expected = ("succeeded", 2, "c2", 1, 10, 0.25)
    actual = (worker.status, worker.attempt, worker.container_id, worker.recoveries,
              state.totals.input_tokens, state.totals.cost_usd)  # fmt: skip
    assert expected == actual
    assert (state.status, state.summary, state.last_seq) == ("succeeded", "done", 12)


def test_a_recovery_keeps_the_worker_recovering_through_its_exit() -> None:
    """The recovery is recorded before the container stops: the exit does not mark the worker failed."""
    action = RecoveryAction(kind="resume", worker="claude-t1", cause="crashed", attempt=2)
    events = _events(
        (
            "claude-t1",
            WorkerStarted(agent="claude", image="i", container_id="c1", argv=["claude"], attempt=1),
        ),
        ("claude-t1", Recovery(action=action)),
        ("claude-t1", WorkerExited(exit_code=1, reason="crashed")),
    )
    assert replay(events).workers["claude-t1"].status == "recovering"


def test_give_up_fails_the_worker_with_its_message() -> None:
    """A give_up action marks the worker failed with the message naming what to fix."""
    action = RecoveryAction(
        kind="give_up", worker="claude-t1", cause="auth_failed", message="set ORCH_CLAUDE__API_KEY"
    )
    events = _events(
        (
            "claude-t1",
            WorkerStarted(agent="claude", image="i", container_id="c1", argv=["claude"], attempt=1),
        ),
        ("claude-t1", Recovery(action=action)),
        ("claude-t1", WorkerExited(exit_code=1, reason="crashed")),
    )
    worker = replay(events).workers["claude-t1"]
    assert (worker.status, worker.error) == ("failed", "set ORCH_CLAUDE__API_KEY")
