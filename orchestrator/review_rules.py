"""The 4 review rules of POLICIES.md §3 as data: an ordered list of small named conditions.

Each condition takes the ``Verdicts`` (the valid answers, how many reviewers were requested, the
trigger, the confidence threshold) and returns human-readable reasons naming the reviewer and the
finding; an empty list means it did not fire. ``first_rule`` returns the first rule with any
reason. Every condition only looks at how bad an answer is, which keeps the decision monotone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.models.review import SEVERITY_ORDER, DecisionAction, Finding, ReviewResponse

TriggerKind = Literal["task_finished", "risky_action", "checkpoint"]


@dataclass(frozen=True)
class Verdicts:
    """What the rules look at: the answers, how many were requested, the trigger."""

    reviews: Sequence[ReviewResponse]
    requested: int
    trigger: TriggerKind
    threshold: float


Condition = Callable[[Verdicts], list[str]]


def _where(finding: Finding) -> str:
    if finding.file is None:
        return ""
    return f" in {finding.file}" + (f":{finding.line}" if finding.line is not None else "")


def _critical_response(v: Verdicts) -> list[str]:
    return [
        f"{r.reviewer} rated the work critical ({r.verdict}, confidence {r.confidence:.2f}): {r.summary}".rstrip(
            ": "
        )
        for r in v.reviews
        if r.severity == "critical"
    ]


def _grave_security_finding(v: Verdicts) -> list[str]:
    return [
        f"{r.reviewer}: {f.severity} {f.category} finding{_where(f)} (confidence {r.confidence:.2f}): {f.message}"
        for r in v.reviews
        if r.confidence >= v.threshold
        for f in r.findings
        if f.category in ("security", "destructive") and SEVERITY_ORDER[f.severity] >= SEVERITY_ORDER["high"]
    ]


def _confident_rejects(v: Verdicts) -> list[ReviewResponse]:
    return [r for r in v.reviews if r.verdict == "reject" and r.confidence >= v.threshold]


def _majority_rejects(v: Verdicts) -> list[str]:
    rejects = _confident_rejects(v)
    if 2 * len(rejects) <= v.requested:
        return []
    names = ", ".join(r.reviewer for r in rejects)
    return [
        f"{len(rejects)} of {v.requested} requested reviewers reject with confidence >= {v.threshold}: {names}"
    ]


def _any_reject(v: Verdicts) -> list[str]:
    return [
        f"{r.reviewer} rejects (confidence {r.confidence:.2f}): {r.summary}".rstrip(": ")
        for r in v.reviews
        if r.verdict == "reject"
    ]


def _severity_at_least(level: str) -> Condition:
    floor = SEVERITY_ORDER[level]

    def condition(v: Verdicts) -> list[str]:
        reasons = [
            f"{r.reviewer} rated the work {r.severity}"
            for r in v.reviews
            if SEVERITY_ORDER[r.severity] >= floor
        ]
        reasons += [
            f"{r.reviewer}: {f.severity} {f.category} finding{_where(f)}: {f.message}"
            for r in v.reviews
            for f in r.findings
            if SEVERITY_ORDER[f.severity] >= floor
        ]
        return reasons

    condition.__name__ = f"severity_{level}"
    return condition


def _unanswered_risky(v: Verdicts) -> list[str]:
    if v.reviews or v.trigger != "risky_action":
        return []
    return ["no reviewer gave a valid answer about a risky action; a person must decide"]


def _any_request_changes(v: Verdicts) -> list[str]:
    return [
        f"{r.reviewer} requests changes (confidence {r.confidence:.2f}): {r.summary}".rstrip(": ")
        for r in v.reviews
        if r.verdict == "request_changes"
    ]


def _unanswered_work(v: Verdicts) -> list[str]:
    if v.reviews or v.trigger == "risky_action":
        return []
    return [f"unreviewed: no reviewer gave a valid answer ({v.trigger}); the work is kept, marked unreviewed"]


RULES: tuple[tuple[int, DecisionAction, tuple[Condition, ...]], ...] = (
    (1, DecisionAction.STOP, (_critical_response, _grave_security_finding, _majority_rejects)),
    (2, DecisionAction.PAUSE, (_any_reject, _severity_at_least("high"), _unanswered_risky)),
    (3, DecisionAction.WARN, (_any_request_changes, _severity_at_least("medium"), _unanswered_work)),
)
"""The ordered rules: the first whose conditions give any reason wins; otherwise rule 4 CONTINUE."""


def first_rule(verdicts: Verdicts) -> tuple[int, DecisionAction, list[str]]:
    """The rule number, action and reasons of the first rule that fires; rule 4 CONTINUE otherwise."""
    for number, action, conditions in RULES:
        fired = [reason for condition in conditions for reason in condition(verdicts)]
        if fired:
            return number, action, fired
    return 4, DecisionAction.CONTINUE, ["no reviewer found a problem"]
