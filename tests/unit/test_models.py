"""The data models: JSON round-trips, strict inbound validation, plan consistency."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from orchestrator.models import (
    PAYLOADS,
    AgentEvent,
    EventDraft,
    OrchestratorDecision,
    Output,
    RecoveryAction,
    ReviewRequest,
    ReviewResponse,
    SubTask,
    TaskBreakdown,
)
from tests.support.strategies import EVENT_TYPES, events_of

VALID_EVENT = {
    "seq": 1, "ts": "2026-01-01T00:00:00Z", "session_id": "sess0001", "worker": "codex-t2",
    "task_id": "t2", "type": "output", "data": {"stream": "stdout", "line": "hello"},
}  # fmt: skip


@pytest.mark.parametrize("kind", EVENT_TYPES)
@settings(max_examples=25, deadline=None)
@given(data=__import__("hypothesis").strategies.data())
def test_every_event_type_round_trips_through_json_unchanged(kind: str, data: object) -> None:
    """An event of any type, serialised to JSON and parsed back, equals the original."""
    event = data.draw(events_of(kind))  # type: ignore[attr-defined]
    assert AgentEvent.model_validate_json(event.model_dump_json()) == event


def test_the_payload_is_validated_as_the_model_of_its_type() -> None:
    """``data`` is parsed into the payload class registered for ``type`` (discriminated union)."""
    event = AgentEvent.model_validate(VALID_EVENT)
    assert isinstance(event.data, Output)
    assert event.data.line == "hello"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "no_such_type"}, "type"),
        ({"seq": 0}, "seq"),
        ({"seq": "one"}, "seq"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "2026-01-01T00:00:00"}, "ts"),  # naive time refused: timestamps are UTC-aware
        ({"data": {"stream": "stdin", "line": "x"}}, "stream"),
        ({"data": {"stream": "stdout", "line": "x", "extra": 1}}, "extra"),
        ({"surprise": True}, "surprise"),
        ({"type": "usage"}, "data"),  # output payload under the usage type
    ],
)
def test_bad_events_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    """Unknown fields, wrong types and mismatched payloads fail with an error naming the field."""
    with pytest.raises(ValidationError) as info:
        AgentEvent.model_validate({**VALID_EVENT, **change})
    assert field in str(info.value)


def test_a_draft_derives_its_type_from_the_payload() -> None:
    """``EventDraft.of`` needs no type string: the payload class decides it."""
    draft = EventDraft.of("gemini-t1", Output(stream="stderr", line="x"), "t1")
    assert (draft.type, draft.task_id) == ("output", "t1")


def test_every_payload_type_is_registered_once() -> None:
    """Each event type maps to its own payload class."""
    assert len(set(PAYLOADS.values())) == len(PAYLOADS)


def _task(tid: str, deps: list[str] | None = None, path: str = "src") -> dict[str, object]:
    return {"id": tid, "title": tid, "description": "d", "agent": "codex",
            "dirs": [{"path": path, "mode": "rw"}], "depends_on": deps or []}  # fmt: skip


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([_task("t1"), _task("t1")], "not unique: t1"),
        ([_task("t1", ["t9"])], "unknown task(s): t9"),
        ([_task("t1", ["t1"])], "depends on itself"),
        ([_task("t1", ["t2"]), _task("t2", ["t3"]), _task("t3", ["t1"])], "cycle"),
        ([_task("t1", path="../outside")], "leaves the repository"),
        ([_task("t1", path="/etc")], "absolute"),
        ([_task("t1", path="a\x00b")], "NUL"),
        ([_task("../t1")], "task id"),
        ([], "at least 1"),
    ],
)
def test_invalid_plans_are_refused_with_the_reason(tasks: list[dict[str, object]], message: str) -> None:
    """A TaskBreakdown checks unique ids, known dependencies, no cycles, paths inside the repo."""
    with pytest.raises(ValidationError) as info:
        TaskBreakdown.model_validate({"goal": "g", "tasks": tasks})
    assert message in str(info.value)


def test_a_valid_plan_is_accepted_and_knows_its_writers() -> None:
    """A plan with backwards dependencies validates; a task with an rw dir writes."""
    plan = TaskBreakdown.model_validate({"goal": "g", "tasks": [_task("t1"), _task("t2", ["t1"])]})
    assert plan.task("t2").depends_on == ["t1"]
    assert plan.task("t1").writes


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (SubTask, {"id": "t1", "title": "x", "description": "d", "agent": "copilot"}, "agent"),
        (
            ReviewResponse,
            {
                "request_id": "r",
                "reviewer": "claude",
                "verdict": "approve",
                "severity": "none",
                "confidence": 1.5,
            },
            "confidence",
        ),  # fmt: skip
        (
            ReviewResponse,
            {
                "request_id": "r",
                "reviewer": "claude",
                "verdict": "meh",
                "severity": "none",
                "confidence": 0.5,
            },
            "verdict",
        ),  # fmt: skip
        (ReviewRequest, {"id": "r"}, "session_id"),
        (OrchestratorDecision, {"action": "EXPLODE", "rule": 1, "request_id": "r"}, "action"),
        (OrchestratorDecision, {"action": "STOP", "rule": 5, "request_id": "r"}, "rule"),
        (RecoveryAction, {"kind": "reboot", "worker": "w", "cause": "c"}, "kind"),
        (RecoveryAction, {"kind": "restart", "worker": "w", "cause": "c", "delay_s": -1}, "delay_s"),
        (RecoveryAction, {"kind": "restart", "worker": "w", "cause": "c", "bonus": 1}, "bonus"),
    ],
)
def test_models_refuse_unknown_fields_and_wrong_types(
    model: type, body: dict[str, object], field: str
) -> None:
    """Inbound data is strict: every model names the offending field."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    assert field in str(info.value)
