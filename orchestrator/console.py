"""What a person sees while a session runs: a live table on a terminal, plain lines otherwise.

It follows the session's event log like any other reader (one code path with the API's SSE).
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.models import AgentEvent, SessionState, apply
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter


def describe(event: AgentEvent) -> str | None:
    """One plain line for the events a person cares about; None for the rest (output, usage...)."""
    data = event.data
    who = event.worker
    match data:
        case ev.SessionCreated():
            return f"session {event.session_id} created for {data.repo}"
        case ev.PlanReady():
            tasks = ", ".join(f"{t.id}={t.agent}" + (f"<-{'+'.join(t.depends_on)}" if t.depends_on else "")
                              for t in data.breakdown.tasks)  # fmt: skip
            return f"plan: {data.breakdown.goal} [{tasks}]"
        case ev.WorkerStarted():
            return (
                f"{who}: attempt {data.attempt} started on rung {data.rung} {' '.join(data.flags)}".rstrip()
            )
        case ev.Recovery():
            a = data.action
            extra = f" in {a.delay_s:.0f}s" if a.delay_s else ""
            return f"{who}: recovery {a.kind} ({a.cause}){extra}" + (f": {a.message}" if a.message else "")
        case ev.PermissionDenied():
            return f"{who}: permission denied for {data.tool}" + (" (by policy)" if data.by_policy else "")
        case ev.RateLimited():
            return f"{who}: rate limited"
        case ev.AuthFailed():
            return f"{who}: authentication failed: {data.detail[:120]}"
        case ev.WorkerExited():
            return f"{who}: exited {data.exit_code} ({data.reason})"
        case ev.TaskFinished():
            return f"{event.task_id}: {data.status} {data.summary[:160]}".rstrip()
        case ev.Decision():
            d = data.decision
            return f"review decision {d.action.value} (rule {d.rule}): {'; '.join(d.reasons)[:200]}"
        case ev.SessionPaused():
            return f"PAUSED: {data.reason}"
        case ev.HumanDecision():
            return f"decision by {data.by}: {data.action}"
        case ev.Merged():
            return f"merged {', '.join(data.tasks)} into {data.branch}"
        case ev.MergeConflict():
            return f"merge conflict in {data.task_id}: {', '.join(data.files)}"
        case ev.Error():
            return f"error ({who}): {data.message[:300]}"
        case ev.SessionFinished():
            return f"session {data.status}: {data.summary}"
        case ev.SessionInterrupted():
            return f"session interrupted ({data.signal}): {data.detail}"
    return None


def table(state: SessionState) -> Table:
    """The live view: each worker's state, attempts, rung and recoveries."""
    view = Table(title=f"session {state.session_id} · {state.status}", expand=False)
    for column in ("worker", "task", "status", "attempt", "rung", "recoveries", "tokens"):
        view.add_column(column)
    for worker in state.workers.values():
        view.add_row(worker.name, worker.task_id or "-", worker.status, str(worker.attempt), str(worker.rung),
                     str(worker.recoveries), f"{worker.input_tokens}/{worker.output_tokens}")  # fmt: skip
    return view


async def follow_session(
    paths: SessionPaths, writer: EventWriter | None = None, out: TextIO | None = None
) -> None:
    """Print the session as it goes, until ``session_finished`` (or cancellation)."""
    out = out or sys.stderr
    tty = out.isatty()
    state = SessionState()
    console = Console(file=out)
    live = Live(table(state), console=console, refresh_per_second=4) if tty else None
    try:
        if live:
            live.start()
        async for event in EventReader(paths).follow(writer=writer, poll_s=0.2):
            apply(state, event)
            line = describe(event)
            if line and live:
                live.console.print(line)
                live.update(table(state))
            elif line:
                out.write(f"{event.ts.strftime('%H:%M:%S')} {line}\n")
                out.flush()
            if isinstance(event.data, ev.SessionFinished):
                return
    finally:
        if live:
            live.stop()
