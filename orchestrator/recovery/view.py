"""What the recovery engine reads about a worker (``WorkerView``) and about its exit (``ExitInfo``).

Both are plain data derived from the event log: ``WorkerView.from_state`` takes the folded
``AgentState`` plus the ``RecoveryAction``s already recorded for the worker (``from_events`` does
both from the raw events). The recorded actions are the engine's only memory: counts per cause,
whether an action is still pending for the running attempt, whether the worker gave up.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import Field

from orchestrator.models import events as ev
from orchestrator.models.common import AgentName, Model, UtcDatetime
from orchestrator.models.events import ExitReason
from orchestrator.models.recovery import RecoveryAction
from orchestrator.models.state import AgentState, WorkerStatus, replay
from orchestrator.recovery.ladder import TOP_RUNG

ACTIVE: frozenset[str] = frozenset({"starting", "running"})


class WorkerView(Model):
    """One worker as the recovery rules see it.

    ``attempt`` is the container now (or last) running, 1-based; ``past`` holds every action recorded
    for this worker, oldest first. An action whose ``attempt`` is above ``attempt`` is *pending*: it
    was decided, the next container has not started, and later lines of the old one are ignored.
    """

    name: str = Field(min_length=1)
    agent: AgentName
    attempt: int = Field(default=1, ge=1)
    rung: int = Field(default=0, ge=0, le=TOP_RUNG)
    is_writer: bool = True
    status: WorkerStatus = "running"
    stopped_by_person: bool = False
    memory_bytes: int | None = Field(default=None, gt=0, description="the running container's limit")
    cli_session_id: str | None = None
    started_at: UtcDatetime | None = None
    last_output_at: UtcDatetime | None = None
    past: tuple[RecoveryAction, ...] = ()

    @classmethod
    def from_state(
        cls,
        state: AgentState,
        *,
        is_writer: bool,
        past: Iterable[RecoveryAction] = (),
        memory_bytes: int | None = None,
        agent: AgentName | None = None,
    ) -> WorkerView:
        """The view of a folded ``AgentState``; ``past`` = the worker's recorded ``RecoveryAction``s.

        ``agent``, when given, is the worker's CLI (else the state's: known once it started).
        """
        agent = agent or state.agent
        if agent is None:
            raise ValueError(
                f"worker {state.name!r} has no agent yet (no plan_ready or worker_started event); "
                "the recovery engine needs to know which CLI it runs"
            )
        return cls(
            name=state.name,
            agent=agent,
            attempt=max(state.attempt, 1),
            rung=state.rung,
            is_writer=is_writer,
            status=state.status,
            stopped_by_person=state.stopped_by_person,
            memory_bytes=memory_bytes,
            cli_session_id=state.cli_session_id,
            started_at=state.started_at,
            last_output_at=state.last_output_at,
            past=tuple(past),
        )

    @classmethod
    def from_events(
        cls, events: Iterable[ev.AgentEvent], name: str, *, is_writer: bool, memory_bytes: int | None = None
    ) -> WorkerView:
        """The view of worker ``name`` folded from a session's events (reads ``events`` once)."""
        kept = list(events)
        state = replay(kept).workers.get(name) or AgentState(name=name)
        past = [e.data.action for e in kept if e.worker == name and isinstance(e.data, ev.Recovery)]
        return cls.from_state(state, is_writer=is_writer, past=past, memory_bytes=memory_bytes)

    def count(self, *causes: str) -> int:
        """How many restarting actions (not give-ups) were recorded for any of ``causes``."""
        return sum(1 for a in self.past if a.kind != "give_up" and a.cause in causes)

    @property
    def gave_up(self) -> bool:
        """A ``give_up`` was recorded: nothing restarts this worker again."""
        return any(a.kind == "give_up" for a in self.past)

    @property
    def pending(self) -> RecoveryAction | None:
        """The recorded action whose container has not started yet, if any."""
        return next((a for a in self.past if a.kind != "give_up" and a.attempt > self.attempt), None)

    @property
    def top_rung(self) -> int:
        """The highest rung this worker ran on or was granted: restarts never go below it."""
        return max([self.rung, *(a.rung for a in self.past if a.rung is not None)])

    @property
    def active(self) -> bool:
        """The container is starting or running (what a stall check looks at)."""
        return self.status in ACTIVE


class ExitInfo(Model):
    """How a worker's container ended, as the coordinator saw it.

    ``result_ok`` is the CLI's own final verdict (the adapter's ``AgentResult.ok``; None when it
    printed none). ``turn_incomplete`` is set when the stream ended without Claude's
    ``message_stop`` / Gemini's finish reason: such a run may exit 0 with the last tool call lost.
    """

    exit_code: int | None = None
    reason: ExitReason = "finished"
    result_ok: bool | None = None
    turn_incomplete: bool = False
    evidence: str = ""

    @classmethod
    def of(cls, exited: ev.WorkerExited, *, result: ev.AgentResult | None = None) -> ExitInfo:
        """The exit info of a ``worker_exited`` payload and the run's final ``agent_result``."""
        return cls(
            exit_code=exited.exit_code,
            reason=exited.reason,
            result_ok=None if result is None else result.ok,
            evidence=f"exit {exited.exit_code} ({exited.reason})",
        )


def aware(now: datetime) -> datetime:
    """``now`` if it carries a time zone; a naive time is refused (its zone is a guess)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now={now.isoformat()} has no time zone; pass an aware UTC datetime")
    return now
