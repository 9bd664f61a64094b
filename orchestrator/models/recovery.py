"""What the recovery engine decided: a ``RecoveryAction``, recorded before anything acts on it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from orchestrator.models.common import Model

RecoveryKind = Literal[
    "escalate_permissions", "backoff_restart", "restart", "resume", "raise_memory", "give_up"
]


class RecoveryAction(Model):
    kind: RecoveryKind
    worker: str
    cause: str = Field(description="the rule that matched")
    evidence: str = Field(default="", description="the matching line, redacted")
    new_flags: list[str] = Field(default_factory=list)
    delay_s: float = Field(default=0.0, ge=0.0)
    attempt: int = Field(default=1, ge=1, description="the attempt this action starts")
    rung: int | None = Field(default=None, ge=0, description="the permission rung after the action")
    memory_bytes: int | None = Field(default=None, ge=0, description="the new memory limit (raise_memory)")
    message: str = Field(default="", description="for give_up: what to fix")
