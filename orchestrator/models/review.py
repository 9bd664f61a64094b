"""Peer review messages and the orchestrator's decision."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from orchestrator.models.common import AgentName, Model, UtcDatetime, utcnow

Severity = Literal["none", "low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
Verdict = Literal["approve", "request_changes", "reject"]
VERDICT_ORDER: dict[str, int] = {"approve": 0, "request_changes": 1, "reject": 2}


class ReviewSubject(Model):
    diff: str = ""
    files_changed: list[str] = Field(default_factory=list)
    summary: str = ""


class ReviewContext(Model):
    task: str = Field(description="the task's description")
    acceptance: list[str] = Field(default_factory=list)


class ReviewRequest(Model):
    id: str
    session_id: str
    task_id: str
    author: str = Field(description="the worker whose work is reviewed")
    reviewers: list[AgentName]
    trigger: Literal["task_finished", "risky_action", "checkpoint"]
    subject: ReviewSubject
    context: ReviewContext
    created_at: UtcDatetime = Field(default_factory=utcnow)


class Finding(Model):
    category: Literal["security", "destructive", "correctness", "scope", "quality"]
    severity: Severity = "low"
    file: str | None = None
    line: int | None = Field(default=None, ge=0)
    message: str


class ReviewResponse(Model):
    request_id: str
    reviewer: str
    verdict: Verdict
    severity: Severity
    confidence: float = Field(ge=0.0, le=1.0)
    findings: list[Finding] = Field(default_factory=list)
    summary: str = ""


class DecisionAction(StrEnum):
    STOP = "STOP"
    PAUSE = "PAUSE"
    WARN = "WARN"
    CONTINUE = "CONTINUE"


DECISION_ORDER: dict[DecisionAction, int] = {
    DecisionAction.CONTINUE: 0,
    DecisionAction.WARN: 1,
    DecisionAction.PAUSE: 2,
    DecisionAction.STOP: 3,
}


class OrchestratorDecision(Model):
    action: DecisionAction
    rule: int = Field(ge=1, le=4, description="which of the 4 rules fired")
    reasons: list[str] = Field(default_factory=list)
    request_id: str
    reviews: list[ReviewResponse] = Field(default_factory=list)
    decided_at: UtcDatetime = Field(default_factory=utcnow)
