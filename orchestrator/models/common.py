"""Shared building blocks of the models: base classes, enums, time."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer

UtcDatetime = Annotated[
    AwareDatetime,
    PlainSerializer(lambda d: d.astimezone(UTC).isoformat().replace("+00:00", "Z"), return_type=str),
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Model(BaseModel):
    """Strict model: unknown fields are refused, values are frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MutableModel(BaseModel):
    """A derived, mutable view (state folds); still refuses unknown fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class AgentName(StrEnum):
    CLAUDE = "claude"
    CODEX = "codex"
    GEMINI = "gemini"
