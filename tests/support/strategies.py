"""Hypothesis strategies derived from the pydantic models: every field, every constraint."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import annotated_types
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from orchestrator.models import PAYLOADS, AgentEvent

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
DATETIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond))


def _bounds(info: FieldInfo | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for meta in info.metadata if info else []:
        if isinstance(meta, annotated_types.Ge):
            found["min_value"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            found["min_value"] = meta.gt
            found["exclude_min"] = True
        elif isinstance(meta, annotated_types.Le):
            found["max_value"] = meta.le
        elif isinstance(meta, annotated_types.MinLen):
            found["min_size"] = meta.min_length
        elif isinstance(meta, annotated_types.MaxLen):
            found["max_size"] = meta.max_length
    return found


def for_type(annotation: Any, info: FieldInfo | None = None) -> st.SearchStrategy[Any]:
    """A strategy of valid values for ``annotation`` (with the field's constraints)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    bounds = _bounds(info)
    if origin is typing.Annotated:
        return for_type(args[0], info)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([for_type(a, info) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        size = {k: v for k, v in bounds.items() if k in ("min_size", "max_size")}
        size.setdefault("max_size", 3)
        return st.lists(for_type(args[0]), **size)
    if origin is dict:
        return st.dictionaries(TEXT, JSON, max_size=3)
    if annotation is type(None):
        return st.none()
    if annotation is datetime or getattr(annotation, "__name__", "") == "AwareDatetime":
        return DATETIMES
    if annotation is Any or annotation is object:
        return JSON
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return models(annotation)
        if issubclass(annotation, Enum):
            return st.sampled_from(list(annotation))
        if annotation is bool:
            return st.booleans()
        if annotation is int:
            lo = bounds.get("min_value", -(2**31))
            return st.integers(
                min_value=lo + (1 if bounds.get("exclude_min") else 0),
                max_value=bounds.get("max_value", 2**31),
            )
        if annotation is float:
            return st.floats(
                min_value=bounds.get("min_value", -1e6), max_value=bounds.get("max_value", 1e6),
                exclude_min=bounds.get("exclude_min", False), allow_nan=False,
            )  # fmt: skip
        if annotation is str:
            return st.text(
                st.characters(blacklist_categories=("Cs",)), min_size=bounds.get("min_size", 0),
                max_size=min(bounds.get("max_size", 40), 40),
            )  # fmt: skip
        if annotation is datetime:
            return DATETIMES
    raise NotImplementedError(f"no strategy for {annotation!r}")


def models(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Valid instances of ``cls`` with every field drawn (optional ones too)."""
    if cls.__name__ == "TaskBreakdown":
        return plans()
    fields = {name: for_type(info.annotation, info) for name, info in cls.model_fields.items()}
    return st.fixed_dictionaries(fields).map(cls.model_validate)


def plans() -> st.SearchStrategy[Any]:
    """Valid TaskBreakdowns: dependencies only point backwards, so there is never a cycle."""
    from orchestrator.models import SubTask, TaskBreakdown

    @st.composite
    def build(draw: st.DrawFn) -> TaskBreakdown:
        count = draw(st.integers(1, 4))
        tasks = []
        for i in range(count):
            deps = (
                draw(st.lists(st.sampled_from([f"t{j}" for j in range(1, i + 1)]), unique=True)) if i else []
            )
            tasks.append(SubTask(
                id=f"t{i + 1}", title=draw(st.text(min_size=1, max_size=20).filter(str.strip)) or "x",
                description="do it", agent=draw(st.sampled_from(["claude", "codex", "gemini"])),
                dirs=[{"path": draw(st.sampled_from([".", "src", "docs/a"])), "mode": draw(st.sampled_from(["ro", "rw"]))}],
                depends_on=deps, acceptance=draw(st.lists(TEXT, max_size=2)),
            ))  # fmt: skip
        return TaskBreakdown(goal="a goal", tasks=tasks, rationale=draw(TEXT))

    return build()


EVENT_TYPES = sorted(PAYLOADS)


def events_of(kind: str, seq: int = 1) -> st.SearchStrategy[AgentEvent]:
    return st.builds(
        lambda data, ts, worker, task: AgentEvent(
            seq=seq, ts=ts, session_id="sess0001", worker=worker, task_id=task, type=kind, data=data
        ),
        models(PAYLOADS[kind]), DATETIMES, st.sampled_from(["claude-t1", "codex-t2", "gemini-t3", "orchestrator"]),
        st.sampled_from([None, "t1", "t2", "t3"]),
    )  # fmt: skip


@st.composite
def event_sequences(draw: st.DrawFn, max_size: int = 25) -> list[AgentEvent]:
    """A sequence of events of any types with gap-free seqs from 1."""
    kinds = draw(st.lists(st.sampled_from(EVENT_TYPES), max_size=max_size))
    return [draw(events_of(kind, seq=i + 1)) for i, kind in enumerate(kinds)]
