"""Peer review policy (POLICIES.md §3): when to review, whom to ask, and what the answers decide.

Pure: data in, data out. No I/O and no clock except a ``now`` argument; the coordinator records
the returned ``Trigger`` / ``ReviewRequest`` / ``OrchestratorDecision`` as events and then acts.

The decision is the first of 4 rules that fires (``rule`` records which):

1. STOP     a response with severity critical; a security/destructive finding of severity high or
            worse from a response with confidence >= threshold; a strict majority of the
            *requested* reviewers reject with confidence >= threshold.
2. PAUSE    any other reject; any severity high or worse (response or finding); no valid
            response at all to a ``risky_action`` review.
3. WARN     any request_changes; any severity medium (response or finding); no valid response to
            a ``task_finished`` or ``checkpoint`` review (the work is kept, marked unreviewed).
4. CONTINUE otherwise.

Every condition only looks at "how bad" a response is, so making one response worse never makes
the decision milder (tested as a property).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from orchestrator.config import ReviewSettings
from orchestrator.errors import UsageError
from orchestrator.log import get_logger
from orchestrator.models.common import AgentName, Model, UtcDatetime
from orchestrator.models.events import AgentEvent, TaskFinished, ToolCall
from orchestrator.models.review import (
    DecisionAction,
    OrchestratorDecision,
    ReviewContext,
    ReviewRequest,
    ReviewResponse,
    ReviewSubject,
)
from orchestrator.review_risk import RiskRules
from orchestrator.review_rules import TriggerKind, Verdicts, first_rule

__all__ = [
    "DEFAULT_WRITE_TOOLS",
    "ReviewContextInput",
    "ReviewOrchestrator",
    "ReviewPolicy",
    "Trigger",
    "TriggerKind",
    "describe_validation",
]

log = get_logger(__name__)

DEFAULT_WRITE_TOOLS = frozenset(
    {"write", "edit", "multiedit", "notebookedit", "write_file", "replace", "file_change", "apply_patch"}
)


def _default_reviewers() -> dict[AgentName, tuple[AgentName, ...]]:
    return {agent: tuple(other for other in AgentName if other != agent) for agent in AgentName}


class ReviewPolicy(Model):
    """The knobs of the review policy. Frozen and validated; build once, pass down."""

    risk: RiskRules = Field(default_factory=RiskRules, description="which tool calls are risky")
    write_tools: frozenset[str] = Field(
        default=DEFAULT_WRITE_TOOLS, description="tools (lower case) whose call changes a file"
    )
    checkpoint_every: int = Field(default=0, ge=0, description="review every N file changes (0 = off)")
    fix_rounds: int = Field(default=1, ge=0, le=5, description="fix rounds after request_changes")
    confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    reviewers: dict[AgentName, tuple[AgentName, ...]] = Field(
        default_factory=_default_reviewers, description="who reviews the work of each agent"
    )

    @field_validator("reviewers")
    @classmethod
    def _no_self_review(
        cls, value: dict[AgentName, tuple[AgentName, ...]]
    ) -> dict[AgentName, tuple[AgentName, ...]]:
        for author, reviewers in value.items():
            if author in reviewers:
                raise ValueError(f"{author} would review its own work; list only the other agents")
        return value

    @classmethod
    def from_settings(cls, settings: ReviewSettings, **overrides: Any) -> ReviewPolicy:
        """A policy from ``Settings.review`` (``ReviewSettings``): fix_rounds and checkpoint_every."""
        knobs = {"fix_rounds": settings.fix_rounds, "checkpoint_every": settings.checkpoint_every}
        return cls.model_validate({**knobs, **overrides})


class Trigger(Model):
    """Why a review is due: the kind, the event that caused it and a human-readable reason."""

    kind: TriggerKind
    worker: str
    task_id: str | None = None
    seq: int | None = Field(default=None, description="the seq of the event that fired the trigger")
    reason: str
    pattern: str | None = Field(default=None, description="the risky pattern, for risky_action")
    files_changed: list[str] = Field(default_factory=list)


class ReviewContextInput(Model):
    """What ``create_review_request`` needs; a dict is validated into this first."""

    id: str = Field(min_length=1, description="the review request id")
    session_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    author: str = Field(min_length=1, description="the worker whose work is reviewed")
    author_agent: AgentName | None = Field(default=None, description="picks the reviewers if none given")
    reviewers: list[AgentName] | None = None
    trigger: TriggerKind = "task_finished"
    task: str = Field(min_length=1, description="the task's description")
    acceptance: list[str] = Field(default_factory=list)
    diff: str = ""
    files_changed: list[str] = Field(default_factory=list)
    summary: str = ""
    created_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _someone_reviews(self) -> ReviewContextInput:
        if self.reviewers is None and self.author_agent is None:
            raise ValueError("reviewers: give the reviewers, or author_agent to pick the other agents")
        if self.reviewers is not None and not self.reviewers:
            raise ValueError("reviewers: empty; name at least one reviewing agent")
        return self


class ReviewOrchestrator:
    """The review policy: triggers, review requests and the 4-rule verdict. Pure."""

    def __init__(self, policy: ReviewPolicy | None = None) -> None:
        self.policy = policy or ReviewPolicy()

    # -- triggers -------------------------------------------------------------------------------

    def is_risky(self, tool_call: ToolCall) -> str | None:
        """The name of the risky pattern the tool call matches, or ``None``."""
        return self.policy.risk.match(tool_call)

    def should_trigger_review(self, events: Sequence[AgentEvent]) -> bool:
        """Whether the events call for a review (see ``review_trigger``)."""
        return self.review_trigger(events) is not None

    def review_trigger(self, events: Sequence[AgentEvent]) -> Trigger | None:
        """The most urgent review the events call for, or ``None``.

        Only events after the last ``review_requested`` of the same task count (a task's earlier
        events were reviewed already). Urgency: ``risky_action`` (the first risky tool call),
        then ``task_finished`` (a succeeded task with a non-empty ``files_changed``), then
        ``checkpoint`` (``checkpoint_every`` file-changing tool calls, when that knob is > 0).
        """
        reviewed_up_to: dict[str | None, int] = {}
        for event in events:
            if event.type == "review_requested":
                reviewed_up_to[event.task_id] = event.seq
        pending = [e for e in events if e.seq > reviewed_up_to.get(e.task_id, 0)]
        return self._risky(pending) or self._finished(pending) or self._checkpoint(pending)

    def _risky(self, events: Sequence[AgentEvent]) -> Trigger | None:
        for event in events:
            if isinstance(event.data, ToolCall) and (pattern := self.is_risky(event.data)) is not None:
                return Trigger(
                    kind="risky_action",
                    worker=event.worker,
                    task_id=event.task_id,
                    seq=event.seq,
                    pattern=pattern,
                    reason=f"{event.worker} called {event.data.tool} matching the risky pattern {pattern}",
                )
        return None

    def _finished(self, events: Sequence[AgentEvent]) -> Trigger | None:
        for event in events:
            data = event.data
            if isinstance(data, TaskFinished) and data.status == "succeeded" and data.files_changed:
                return Trigger(
                    kind="task_finished",
                    worker=event.worker,
                    task_id=event.task_id,
                    seq=event.seq,
                    files_changed=list(data.files_changed),
                    reason=f"task {event.task_id} finished with {len(data.files_changed)} changed file(s)",
                )
        return None

    def _checkpoint(self, events: Sequence[AgentEvent]) -> Trigger | None:
        every = self.policy.checkpoint_every
        if every <= 0:
            return None
        changes: dict[str | None, int] = {}
        for event in events:
            data = event.data
            if isinstance(data, ToolCall) and data.tool.lower() in self.policy.write_tools:
                count = changes.get(event.task_id, 0) + _change_count(data)
                changes[event.task_id] = count
                if count >= every:
                    return Trigger(
                        kind="checkpoint",
                        worker=event.worker,
                        task_id=event.task_id,
                        seq=event.seq,
                        reason=f"{count} file changes since the last review (checkpoint every {every})",
                    )
        return None

    # -- requests -------------------------------------------------------------------------------

    def reviewers_for(
        self, author_agent: AgentName, available: Sequence[AgentName] | None = None
    ) -> list[AgentName]:
        """The agents that review ``author_agent``'s work, limited to ``available`` when given."""
        chosen = self.policy.reviewers.get(author_agent, ())
        return [a for a in chosen if available is None or a in available]

    def create_review_request(
        self, context: Mapping[str, Any] | ReviewContextInput, *, now: datetime | None = None
    ) -> ReviewRequest:
        """A ``ReviewRequest`` from a context (see ``ReviewContextInput``).

        Raises ``UsageError`` naming the field when the context is not valid, or when no agent is
        left to review. ``created_at`` is the context's, else ``now``, else the wall clock.
        """
        ctx = context if isinstance(context, ReviewContextInput) else _validate_context(context)
        reviewers = ctx.reviewers
        if reviewers is None:
            assert ctx.author_agent is not None  # the model validator guarantees one of the two
            reviewers = self.reviewers_for(ctx.author_agent)
        if not reviewers:
            raise UsageError(
                f"reviewers: no agent reviews the work of {ctx.author_agent}; "
                "configure reviewers for it in the review policy"
            )
        fields: dict[str, Any] = {
            "id": ctx.id,
            "session_id": ctx.session_id,
            "task_id": ctx.task_id,
            "author": ctx.author,
            "reviewers": reviewers,
            "trigger": ctx.trigger,
            "subject": ReviewSubject(diff=ctx.diff, files_changed=ctx.files_changed, summary=ctx.summary),
            "context": ReviewContext(task=ctx.task, acceptance=ctx.acceptance),
        }
        created = ctx.created_at or now
        if created is not None:
            fields["created_at"] = created
        return ReviewRequest(**fields)

    # -- decision -------------------------------------------------------------------------------

    def evaluate_verdict(
        self,
        reviews: Sequence[ReviewResponse],
        *,
        requested: Sequence[str] | int | None = None,
        trigger: Trigger | TriggerKind = "task_finished",
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> OrchestratorDecision:
        """The decision on the valid answers to one review request: the first of the 4 rules.

        ``reviews`` holds only valid answers (an unparseable answer counts as none); a reviewer
        answering twice counts once, with its last answer. ``requested`` is who was asked (names
        or a count; default: the reviewers present); the majority of rule 1 is over
        ``max(requested, answered)``. ``request_id`` defaults to the answers' and is required when
        there is none. ``decided_at`` is ``now``, else the wall clock.
        """
        latest = {r.reviewer: r for r in reviews}
        answers = list(latest.values())
        asked = self._requested_count(requested, answers)
        kind = trigger.kind if isinstance(trigger, Trigger) else trigger
        rid = request_id or (answers[0].request_id if answers else None)
        if not rid:
            raise UsageError("request_id: needed when no reviewer answered; pass the review request's id")
        verdicts = Verdicts(answers, max(asked, len(answers)), kind, self.policy.confidence_threshold)
        rule, action, reasons = first_rule(verdicts)
        missing = verdicts.requested - len(answers)
        if answers and missing > 0:
            reasons.append(f"{missing} of {verdicts.requested} requested reviewers gave no valid answer")
        fields: dict[str, Any] = {
            "action": action,
            "rule": rule,
            "reasons": reasons,
            "request_id": rid,
            "reviews": answers,
        }
        if now is not None:
            fields["decided_at"] = now
        decision = OrchestratorDecision(**fields)
        log.debug("review.decision", request_id=rid, action=action.value, rule=rule, answers=len(answers))
        return decision

    def decide(
        self, request: ReviewRequest, reviews: Sequence[ReviewResponse], *, now: datetime | None = None
    ) -> OrchestratorDecision:
        """``evaluate_verdict`` with the requested reviewers, trigger and id taken from ``request``.

        Answers whose ``request_id`` is not the request's are ignored.
        """
        mine = [r for r in reviews if r.request_id == request.id]
        return self.evaluate_verdict(
            mine,
            requested=[str(a) for a in request.reviewers],
            trigger=request.trigger,
            request_id=request.id,
            now=now,
        )

    def wants_fix_round(self, decision: OrchestratorDecision, rounds_done: int) -> bool:
        """Whether a WARN with a ``request_changes`` answer gets another fix round by the author."""
        return (
            decision.action is DecisionAction.WARN
            and rounds_done < self.policy.fix_rounds
            and any(r.verdict == "request_changes" for r in decision.reviews)
        )

    @staticmethod
    def _requested_count(requested: Sequence[str] | int | None, answers: Sequence[ReviewResponse]) -> int:
        if requested is None:
            return len(answers)
        if isinstance(requested, bool) or (isinstance(requested, int) and requested < 0):
            raise UsageError(
                f"requested: {requested!r} is not a number of reviewers; pass a count >= 0 or names"
            )
        if isinstance(requested, int):
            return requested
        return len(set(requested))


def _change_count(call: ToolCall) -> int:
    changes = call.input.get("changes")
    if isinstance(changes, list | dict) and changes:
        return len(changes)
    return 1


def _validate_context(context: Any) -> ReviewContextInput:
    if not isinstance(context, Mapping):
        raise UsageError(
            f"review context: expected a mapping of fields, got {type(context).__name__}; "
            "pass a dict or a ReviewContextInput"
        )
    try:
        return ReviewContextInput.model_validate(dict(context))
    except ValidationError as exc:
        raise UsageError(f"invalid review context: {describe_validation(exc)}") from exc


def describe_validation(exc: ValidationError) -> str:
    """One line per problem: the field path, what is wrong, and the bad value (shortened)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        value = repr(error.get("input"))
        shown = value if len(value) <= 60 else value[:57] + "..."
        bad = "" if error["type"] == "missing" else f" (got {shown})"
        parts.append(f"{where}: {error['msg']}{bad}")
    return "; ".join(parts)
