"""``/api/sessions``: list, start, read, page events, decide, resume, stop, report.

Reads come from the session's files (one code path for sessions of this process and of others);
changes go through the ``SessionRunner``. File reads run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel

from api.auth import require_token
from api.deps import IndexDep, PathsDep, RunnerDep
from api.listing import CURSOR_PATTERN
from api.runner import StartSession
from api.schemas import (
    DecisionBody,
    EventPage,
    Report,
    SessionAccepted,
    SessionPage,
    SessionSummary,
    error_responses,
)
from orchestrator.errors import SessionFinished, SessionNotFound, StateConflict, StoreError
from orchestrator.models import AgentEvent, EventType
from orchestrator.models.state import FINISHED_SESSION, FINISHED_WORKER, SessionState, SessionStatus
from orchestrator.paths import SessionPaths, validate_worker_name
from orchestrator.store import EventReader

router = APIRouter(prefix="/api/sessions", dependencies=[Depends(require_token)], tags=["sessions"])
_READ = error_responses(400, 401, 404, 422)
_CHANGE = error_responses(400, 401, 404, 409, 422, 503)
WORKER_PATTERN = r"^[0-9A-Za-z_-][0-9A-Za-z_.-]{0,79}$"  # validate_worker_name: no leading dot
WorkerPath = Annotated[
    str,
    Path(description="the worker name, e.g. codex-t2 (an unsafe name is a 400 invalid_id)",
         json_schema_extra={"pattern": WORKER_PATTERN}),
]  # fmt: skip


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialise once with the model's own JSON (no second validation pass by FastAPI)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


async def _summary(index: IndexDep, paths: SessionPaths) -> SessionSummary:
    return await asyncio.to_thread(index.summary, paths)


def _finished_error(summary: SessionSummary, what: str) -> SessionFinished:
    return SessionFinished(
        f"session {summary.id} has finished ({summary.status}) and cannot be {what}; start a new session"
    )


@router.get("", response_model=SessionPage, responses=error_responses(400, 401, 422))
async def list_sessions(
    index: IndexDep,
    status: Annotated[SessionStatus | None, Query(description="only sessions with this status")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="sessions per page")] = 50,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the last page")
    ] = None,
) -> Response:
    """Sessions, newest first."""
    return model_response(await asyncio.to_thread(index.page, status, limit, cursor))


@router.post("", status_code=202, response_model=SessionAccepted, responses=_CHANGE)
async def start_session(body: StartSession, runner: RunnerDep, index: IndexDep) -> Response:
    """Start a session; it runs in this server's process. Answers once it is recorded."""
    session_id = await runner.start(body)
    summary = await asyncio.to_thread(index.summary, SessionPaths.of(index.workspace, session_id))
    return model_response(SessionAccepted(session_id=session_id, status=summary.status), 202)


@router.get("/{session_id}", response_model=SessionState, responses=_READ)
async def get_session(paths: PathsDep) -> Response:
    """The session's state: plan, workers, reviews, decisions, totals."""
    return model_response(await asyncio.to_thread(EventReader(paths).state))


def _read_page(paths: SessionPaths, after: int, limit: int, worker: str | None,
               event_type: str | None) -> EventPage:  # fmt: skip
    found: list[AgentEvent] = []
    for event in EventReader(paths).read(after):
        if (worker is None or event.worker == worker) and (event_type is None or event.type == event_type):
            found.append(event)
            if len(found) >= limit:
                break
    return EventPage(events=found, next_after=found[-1].seq if len(found) == limit else None)


@router.get("/{session_id}/events", response_model=EventPage, responses=_READ)
async def list_events(
    paths: PathsDep,
    after: Annotated[int, Query(ge=0, description="only events with a greater seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    worker: Annotated[str | None, Query(pattern=WORKER_PATTERN)] = None,
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
) -> Response:
    """A page of the session's events, in order."""
    page = await asyncio.to_thread(_read_page, paths, after, limit, worker, event_type)
    return model_response(page)


@router.post("/{session_id}/decision", response_model=SessionAccepted, responses=_CHANGE)
async def decide(paths: PathsDep, body: DecisionBody, runner: RunnerDep, index: IndexDep) -> Response:
    """A person's decision on a paused session: continue or stop."""
    summary = await _summary(index, paths)
    if summary.status != "paused":
        raise StateConflict(
            f"session {summary.id} is {summary.status}, not paused: a decision is taken only while "
            "the session waits for one"
        )
    status = await runner.decide(paths.session_id, body.action, body.note)
    return model_response(SessionAccepted(session_id=paths.session_id, status=status))


@router.post("/{session_id}/resume", status_code=202, response_model=SessionAccepted, responses=_CHANGE)
async def resume(paths: PathsDep, runner: RunnerDep, index: IndexDep) -> Response:
    """Resume an interrupted session in this process."""
    summary = await _summary(index, paths)
    if summary.status in FINISHED_SESSION:
        raise _finished_error(summary, "resumed")
    if runner.writer_for(paths.session_id) is not None:
        raise StateConflict(f"session {summary.id} is already running in this server")
    await runner.resume(paths.session_id)
    after = await _summary(index, paths)
    return model_response(SessionAccepted(session_id=paths.session_id, status=after.status), 202)


@router.post("/{session_id}/stop", status_code=202, response_model=SessionAccepted, responses=_CHANGE)
async def stop(paths: PathsDep, runner: RunnerDep, index: IndexDep) -> Response:
    """Stop every worker and finish the session as stopped."""
    summary = await _summary(index, paths)
    if summary.status in FINISHED_SESSION:
        raise _finished_error(summary, "stopped")
    await runner.stop(paths.session_id)
    after = await _summary(index, paths)
    return model_response(SessionAccepted(session_id=paths.session_id, status=after.status), 202)


@router.post("/{session_id}/workers/{worker}/stop", status_code=202, response_model=SessionAccepted,
             responses=_CHANGE)  # fmt: skip
async def stop_worker(paths: PathsDep, worker: WorkerPath, runner: RunnerDep, index: IndexDep) -> Response:
    """Stop one worker; the recovery engine does not restart a worker a person stopped."""
    validate_worker_name(worker)
    state = await asyncio.to_thread(EventReader(paths).state)
    if state.status in FINISHED_SESSION:
        raise StateConflict(f"session {paths.session_id} has finished ({state.status}); nothing runs")
    found = state.workers.get(worker)
    if found is None:
        names = ", ".join(sorted(state.workers)) or "none yet"
        raise SessionNotFound(f"no worker {worker!r} in session {paths.session_id}; its workers: {names}")
    if found.status in FINISHED_WORKER:
        raise StateConflict(f"worker {worker} has already finished ({found.status})")
    await runner.stop_worker(paths.session_id, worker)
    after = await _summary(index, paths)
    return model_response(SessionAccepted(session_id=paths.session_id, status=after.status), 202)


def _read_report(paths: SessionPaths) -> bytes:
    try:
        raw = paths.report_json.read_bytes()
    except FileNotFoundError:
        raise StateConflict(
            f"session {paths.session_id} has finished but its report is not written yet; retry shortly"
        ) from None
    try:
        if not isinstance(orjson.loads(raw), dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise StoreError(
            f"{paths.report_json} is not a JSON object ({exc}); rebuild it from the log"
        ) from exc
    return raw


@router.get("/{session_id}/report", response_model=Report, responses=error_responses(400, 401, 404, 409, 422))
async def report(paths: PathsDep, index: IndexDep) -> Response:
    """``report.json`` of a finished session; 409 before it finished."""
    summary = await _summary(index, paths)
    if summary.status not in FINISHED_SESSION:
        raise StateConflict(f"session {summary.id} is {summary.status}; the report exists once it finished")
    return Response(await asyncio.to_thread(_read_report, paths), media_type="application/json")
