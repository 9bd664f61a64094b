"""Derived state: ``AgentState`` per worker and ``SessionState`` for the session.

State is never stored on its own (a snapshot is a cache of it): it is the fold of the event log.
``apply(state, event)`` is the one transition function; ``replay(events)`` folds from scratch.
Both are pure: no I/O, no clock. ``apply`` updates the state it is given (the fold owns it) and
returns it, so that folding a million events does not copy the state a million times.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import Field

from orchestrator.models import events as ev
from orchestrator.models.common import AgentName, MutableModel, UtcDatetime
from orchestrator.models.plan import TaskBreakdown
from orchestrator.models.review import OrchestratorDecision, ReviewResponse

WorkerStatus = Literal["pending", "starting", "running", "recovering", "paused", "succeeded", "failed",
                       "stopped", "skipped"]  # fmt: skip
SessionStatus = Literal["created", "planning", "running", "paused", "interrupted", "succeeded", "failed",
                        "stopped"]  # fmt: skip
FINISHED_SESSION: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
FINISHED_WORKER: frozenset[str] = frozenset({"succeeded", "failed", "stopped", "skipped"})


class AgentState(MutableModel):
    name: str
    agent: AgentName | None = None
    task_id: str | None = None
    status: WorkerStatus = "pending"
    container_id: str | None = None
    attempt: int = 0
    rung: int = 0
    flags: list[str] = Field(default_factory=list)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    last_output_at: UtcDatetime | None = None
    last_output_seq: int = 0
    stdout_lines: int = Field(default=0, description="stdout lines stored for the current attempt")
    stderr_lines: int = Field(default=0, description="stderr lines stored for the current attempt")
    events: int = 0
    error: str | None = None
    cli_session_id: str | None = None
    recoveries: int = 0
    stopped_by_person: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Totals(MutableModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class SessionState(MutableModel):
    session_id: str = ""
    status: SessionStatus = "created"
    prompt: str = ""
    repo: str = ""
    options: dict[str, object] = Field(default_factory=dict)
    created_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    plan: TaskBreakdown | None = None
    workers: dict[str, AgentState] = Field(default_factory=dict)
    tasks: dict[str, str] = Field(default_factory=dict, description="task id -> task status")
    reviews: list[ReviewResponse] = Field(default_factory=list)
    decisions: list[OrchestratorDecision] = Field(default_factory=list)
    pause_reason: str | None = None
    summary: str = ""
    errors: list[str] = Field(default_factory=list)
    merged_branch: str | None = None
    totals: Totals = Field(default_factory=Totals)
    last_seq: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_SESSION


def _worker(state: SessionState, event: ev.AgentEvent) -> AgentState:
    found = state.workers.get(event.worker)
    if found is None:
        found = AgentState(name=event.worker, task_id=event.task_id)
        state.workers[event.worker] = found
    return found


def _touch(worker: AgentState, event: ev.AgentEvent) -> None:
    worker.events += 1
    worker.last_output_at = event.ts
    worker.last_output_seq = event.seq


def apply(state: SessionState, event: ev.AgentEvent) -> SessionState:
    """Fold one event into ``state`` and return it."""
    state.last_seq = event.seq
    data = event.data
    match data:
        case ev.Output():
            apply_output(state, event.worker, event.task_id, data.stream, event.seq, event.ts)
        case ev.OutputLines():
            apply_output(
                state, event.worker, event.task_id, data.stream, event.seq, event.ts, len(data.lines)
            )
        case (
            ev.Message()
            | ev.ToolCall()
            | ev.ToolResult()
            | ev.PermissionDenied()
            | ev.RateLimited()
            | ev.AuthFailed()
            | ev.ApiError()
            | ev.CliRetry()
            | ev.AgentResult()
            | ev.EgressDenied()
        ):
            _touch(_worker(state, event), event)
        case ev.SessionCreated():
            state.session_id = event.session_id
            state.prompt, state.repo, state.options = data.prompt, data.repo, dict(data.options)
            state.created_at = event.ts
            state.status = "planning"
        case ev.PlanReady():
            state.plan = data.breakdown
            for task in data.breakdown.tasks:
                name = f"{task.agent}-{task.id}"
                state.tasks.setdefault(task.id, "pending")
                state.workers.setdefault(name, AgentState(name=name, agent=task.agent, task_id=task.id))
            state.status = "running"
        case ev.WorkerStarted():
            worker = _worker(state, event)
            worker.agent, worker.container_id = data.agent, data.container_id
            worker.attempt, worker.flags, worker.rung = data.attempt, list(data.flags), data.rung
            worker.status = "running"
            worker.started_at = worker.started_at or event.ts
            worker.finished_at = None
            worker.stdout_lines = worker.stderr_lines = 0
            if event.task_id:
                state.tasks[event.task_id] = "running"
        case ev.CliSession():
            _worker(state, event).cli_session_id = data.id
        case ev.Usage():
            worker = _worker(state, event)
            worker.input_tokens += data.input_tokens
            worker.output_tokens += data.output_tokens
            worker.cost_usd += data.cost_usd or 0.0
            state.totals.input_tokens += data.input_tokens
            state.totals.output_tokens += data.output_tokens
            state.totals.cost_usd += data.cost_usd or 0.0
        case ev.Recovery():
            worker = _worker(state, event)
            worker.recoveries += 1
            if data.action.kind == "give_up":
                worker.status, worker.error = "failed", data.action.message or data.action.cause
            else:
                worker.status = "recovering"
        case ev.WorkerExited():
            worker = _worker(state, event)
            worker.exit_code, worker.exit_reason = data.exit_code, data.reason
            worker.finished_at = event.ts
            if worker.status not in ("recovering", "failed"):
                worker.status = _exit_status(data)
        case ev.TaskFinished():
            state.tasks[event.task_id or event.worker] = data.status
            worker = _worker(state, event)
            worker.status = data.status
            worker.finished_at = worker.finished_at or event.ts
            if data.status == "failed" and data.summary:
                worker.error = data.summary
        case ev.HumanDecision():
            if data.action == "stop" and event.worker not in ("orchestrator", "person"):
                _worker(state, event).stopped_by_person = True
            elif state.status == "paused" and data.action == "continue":
                state.status = "running"
                state.pause_reason = None
        case ev.ReviewReceived():
            state.reviews.append(data.response)
        case ev.Decision():
            state.decisions.append(data.decision)
        case ev.SessionPaused():
            state.status, state.pause_reason = "paused", data.reason
        case ev.SessionResumed():
            state.status, state.pause_reason = "running", None
        case ev.SessionInterrupted():
            state.status = "interrupted"
        case ev.SessionFinished():
            state.status, state.summary, state.finished_at = data.status, data.summary, event.ts
        case ev.Merged():
            state.merged_branch = data.branch
        case ev.Error():
            state.errors.append(data.message)
        case _:
            pass
    return state


def apply_output(
    state: SessionState, worker: str, task_id: str | None, stream: str, seq: int, ts: datetime, lines: int = 1
) -> None:
    """``apply`` of one event with ``lines`` lines of output of one stream (``output`` or ``output_lines``).

    The store folds the runs of lines it writes without building an event object for them; the
    result is the same as ``apply`` of the event (a property test holds them equal).
    """
    state.last_seq = seq
    found = state.workers.get(worker)
    if found is None:
        found = state.workers[worker] = AgentState(name=worker, task_id=task_id)
    found.events += 1
    found.last_output_at = ts
    found.last_output_seq = seq
    if stream == "stdout":
        found.stdout_lines += lines
    else:
        found.stderr_lines += lines


def _exit_status(data: ev.WorkerExited) -> WorkerStatus:
    if data.reason == "finished" and data.exit_code == 0:
        return "succeeded"
    if data.reason in ("killed", "stopped"):
        return "stopped"
    return "failed"


def replay(events: Iterable[ev.AgentEvent], state: SessionState | None = None) -> SessionState:
    """Fold ``events`` into a new state (or onward from ``state``, a snapshot)."""
    result = state if state is not None else SessionState()
    for event in events:
        apply(result, event)
    return result


def worker_state(events: Iterable[ev.AgentEvent], name: str) -> AgentState:
    """The state of one worker folded from ``events``."""
    return replay(events).workers.get(name) or AgentState(name=name)
