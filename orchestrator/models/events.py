"""``AgentEvent``: one line of ``events.jsonl``, an envelope around one typed payload per type.

The envelope is ``{seq, ts, session_id, worker, task_id, type, data}``; ``data`` is validated as the
payload model registered for ``type`` in ``PAYLOADS`` (a discriminated union on ``type``). Build
events with ``EventDraft`` (no seq or time yet); only the store turns a draft into an ``AgentEvent``.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from orchestrator.models.common import AgentName, Model, UtcDatetime
from orchestrator.models.plan import TaskBreakdown
from orchestrator.models.recovery import RecoveryAction
from orchestrator.models.review import OrchestratorDecision, ReviewRequest, ReviewResponse

SessionOutcome = Literal["succeeded", "failed", "stopped"]
ExitReason = Literal["finished", "crashed", "killed", "oom", "stalled", "stopped", "timeout"]


class SessionCreated(Model):
    prompt: str
    repo: str
    options: dict[str, Any] = Field(default_factory=dict)


class SessionPaused(Model):
    reason: str
    decision_seq: int | None = None


class SessionResumed(Model):
    by: str = "orchestrator"


class SessionInterrupted(Model):
    signal: str
    detail: str = ""


class SessionFinished(Model):
    status: SessionOutcome
    summary: str = ""


class PlanReady(Model):
    breakdown: TaskBreakdown


class WorkerStarted(Model):
    agent: AgentName
    image: str
    container_id: str
    argv: list[str]
    attempt: int = Field(ge=1)
    flags: list[str] = Field(default_factory=list)
    rung: int = Field(default=0, ge=0)


class Output(Model):
    stream: Literal["stdout", "stderr"]
    line: str


class OutputLines(Model):
    """Consecutive lines of one stream, read together: the same as one ``output`` per line, in order.

    The supervisor stores a worker's output this way (one event per run of lines, not per line);
    ``output`` is what logs written before carry, and stays readable.
    """

    stream: Literal["stdout", "stderr"]
    lines: list[str] = Field(min_length=1)


class Message(Model):
    role: str
    text: str


class ToolCall(Model):
    tool: str
    input: dict[str, Any] = Field(default_factory=dict)
    call_id: str = ""


class ToolResult(Model):
    call_id: str = ""
    ok: bool
    summary: str = ""


class PermissionDenied(Model):
    tool: str
    detail: str = ""
    by_policy: bool = Field(default=False, description="denied by a rule the orchestrator set itself")


class RateLimited(Model):
    retry_after_s: float | None = None
    detail: str = ""


class AuthFailed(Model):
    detail: str


class ApiError(Model):
    """A model-API failure that is neither a rate limit nor an auth failure."""

    kind: Literal["server_error", "overloaded", "stream_cut", "context_overflow", "other"]
    status: int | None = None
    detail: str = ""


class CliRetry(Model):
    """The CLI retries by itself; recorded, not acted on."""

    attempt: int | None = None
    detail: str = ""


RefusalReason = Literal[
    "untrusted_workspace", "root_bypass", "bad_arguments", "resume_not_found", "environment"
]


class CliRefused(Model):
    """The CLI refused to start or to continue for a reason the same command cannot get past."""

    reason: RefusalReason
    detail: str = ""


class CliSession(Model):
    """The CLI's own session / thread id, used to resume its conversation."""

    id: str


class AgentResult(Model):
    """The CLI's final result of a run."""

    ok: bool
    text: str = ""
    subtype: str = ""
    duration_ms: int | None = None
    structured: dict[str, Any] | None = Field(
        default=None, description="the JSON object the CLI returned for a schema (Claude --json-schema)"
    )


class Usage(Model):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = None
    cached_input_tokens: int = Field(default=0, ge=0, description="part of input_tokens read from a cache")


class Recovery(Model):
    action: RecoveryAction


class WorkerExited(Model):
    exit_code: int | None
    reason: ExitReason


class TaskFinished(Model):
    status: Literal["succeeded", "failed", "skipped", "stopped"]
    summary: str = ""
    files_changed: list[str] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    branch: str | None = None


class ReviewRequested(Model):
    request: ReviewRequest


class ReviewReceived(Model):
    response: ReviewResponse


class Decision(Model):
    decision: OrchestratorDecision


class HumanDecision(Model):
    action: Literal["continue", "stop"]
    note: str = ""
    by: str = "person"


class Merged(Model):
    branch: str
    tasks: list[str]
    commit: str = ""


class MergeConflict(Model):
    task_id: str
    files: list[str]


class EgressDenied(Model):
    host: str
    detail: str = ""


class EgressOpened(Model):
    """The session runs without the egress allowlist (``network=open``), as asked; recorded at its start."""

    agents: list[AgentName] = Field(default_factory=list)
    detail: str = ""


class Error(Model):
    message: str
    detail: str = ""


PAYLOADS: dict[str, type[Model]] = {
    "session_created": SessionCreated,
    "session_paused": SessionPaused,
    "session_resumed": SessionResumed,
    "session_interrupted": SessionInterrupted,
    "session_finished": SessionFinished,
    "plan_ready": PlanReady,
    "worker_started": WorkerStarted,
    "output": Output,
    "output_lines": OutputLines,
    "message": Message,
    "tool_call": ToolCall,
    "tool_result": ToolResult,
    "permission_denied": PermissionDenied,
    "rate_limited": RateLimited,
    "auth_failed": AuthFailed,
    "api_error": ApiError,
    "cli_retry": CliRetry,
    "cli_session": CliSession,
    "cli_refused": CliRefused,
    "agent_result": AgentResult,
    "usage": Usage,
    "recovery": Recovery,
    "worker_exited": WorkerExited,
    "task_finished": TaskFinished,
    "review_requested": ReviewRequested,
    "review_received": ReviewReceived,
    "decision": Decision,
    "human_decision": HumanDecision,
    "merged": Merged,
    "merge_conflict": MergeConflict,
    "egress_denied": EgressDenied,
    "egress_opened": EgressOpened,
    "error": Error,
}
TYPE_OF: dict[type[Model], str] = {cls: name for name, cls in PAYLOADS.items()}

EventType = Literal[
    "session_created", "session_paused", "session_resumed", "session_interrupted", "session_finished",
    "plan_ready", "worker_started", "output", "message", "tool_call", "tool_result",
    "permission_denied", "rate_limited", "auth_failed", "api_error", "cli_retry", "cli_session",
    "agent_result", "usage", "recovery", "worker_exited", "task_finished", "review_requested",
    "review_received", "decision", "human_decision", "merged", "merge_conflict", "egress_denied", "error",
    "cli_refused", "egress_opened", "output_lines",
]  # fmt: skip

EventData = (
    SessionCreated | SessionPaused | SessionResumed | SessionInterrupted | SessionFinished | PlanReady
    | WorkerStarted | Output | Message | ToolCall | ToolResult | PermissionDenied | RateLimited | AuthFailed
    | ApiError | CliRetry | CliSession | AgentResult | Usage | Recovery | WorkerExited | TaskFinished
    | ReviewRequested | ReviewReceived | Decision | HumanDecision | Merged | MergeConflict | EgressDenied
    | Error | CliRefused | EgressOpened | OutputLines
)  # fmt: skip


def type_of(data: object) -> EventType:
    """The event type of a payload; ``TypeError`` for anything that is not one."""
    kind = TYPE_OF.get(type(data)) if isinstance(data, Model) else None
    if kind is None:
        raise TypeError(f"not an event payload: {type(data).__name__}")
    return cast(EventType, kind)


def lines_of(data: EventData) -> list[str]:
    """The output lines a payload carries: those of ``output_lines``, the one of ``output``, else none."""
    if isinstance(data, OutputLines):
        return data.lines
    return [data.line] if isinstance(data, Output) else []


def _dispatch(values: Any) -> Any:
    """Validate ``data`` as the payload registered for ``type`` (the discriminator)."""
    if isinstance(values, dict) and "data" in values:
        kind = values.get("type")
        payload = PAYLOADS.get(kind) if isinstance(kind, str) else None
        if payload is None:
            raise ValueError(f"type: unknown event type {kind!r}")
        data = values["data"]
        if not isinstance(data, payload):
            try:
                values = {**values, "data": payload.model_validate(data)}
            except ValidationError as exc:  # name the field as data.<field>
                errors = [
                    InitErrorDetails(
                        type=e["type"], loc=("data", *e["loc"]), input=e["input"], ctx=e.get("ctx", {})
                    )
                    for e in exc.errors()
                ]
                raise ValidationError.from_exception_data(f"{kind} event", errors) from None
    return values


class EventDraft(Model):
    """An event before the store gives it a ``seq`` and a time."""

    worker: str
    task_id: str | None = None
    type: EventType
    data: EventData

    _dispatch = model_validator(mode="before")(_dispatch)

    @classmethod
    def of(cls, worker: str, data: EventData, task_id: str | None = None) -> EventDraft:
        """A draft whose type is derived from the payload class (``data`` is a validated payload already)."""
        return cls.model_construct(worker=worker, task_id=task_id, type=type_of(data), data=data)


class AgentEvent(Model):
    """One recorded event. ``seq`` is gap-free and strictly increasing within a session."""

    seq: int = Field(ge=1)
    ts: UtcDatetime
    session_id: str
    worker: str
    task_id: str | None = None
    type: EventType
    data: EventData

    _dispatch = model_validator(mode="before")(_dispatch)

    @model_validator(mode="after")
    def _payload_matches_type(self) -> AgentEvent:
        if not isinstance(self.data, PAYLOADS[self.type]):
            raise ValueError(f"data: payload {type(self.data).__name__} does not match type {self.type!r}")
        return self
