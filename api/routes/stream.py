"""``GET /api/sessions/{id}/stream``: the session's events as server-sent events.

Resumes exactly: from ``Last-Event-ID`` when the browser reconnects (it wins, being newer), else
from ``?after=``, else from the start. A finished session with nothing left to send answers 204,
which tells an EventSource to stop reconnecting. Readers of a session that runs in this process
share its fan-out (``api.fanout``); readers of any other session each follow the log.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import WithJsonSchema

from api.auth import require_stream_token
from api.deps import IndexDep, OptionalRunnerDep, PathsDep, PolicyDep
from api.fanout import Fanouts
from api.schemas import error_responses
from api.sse import SSE_ITEM_SCHEMA, EventStream, ReaderFeed, ping, sse_messages
from orchestrator.models.state import FINISHED_SESSION
from orchestrator.store import EventReader

router = APIRouter(prefix="/api/sessions", tags=["stream"])
SEQ = WithJsonSchema({"type": "integer", "minimum": 0})  # optional, but never null on the wire


class EventStreamDoc(Response):
    """Names the media type in the OpenAPI document; the route answers an ``EventSourceResponse``."""

    media_type = "text/event-stream"


@router.get(
    "/{session_id}/stream",
    response_class=EventStreamDoc,
    dependencies=[Depends(require_stream_token)],
    responses={
        200: {
            "description": "every AgentEvent as `id: <seq>`, `event: <type>`, `data: <json>`; pings; "
            "a final `event: error` when the reader is dropped or the server shuts down",
            "content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}},
        },
        204: {"description": "the session has finished and the reader has every event"},
        **error_responses(400, 401, 404, 422, by_ref=True),
    },
)
async def stream(
    request: Request,
    paths: PathsDep,
    index: IndexDep,
    runner: OptionalRunnerDep,
    policy: PolicyDep,
    after: Annotated[int | None, Query(ge=0, description="start after this seq"), SEQ] = None,
    last_event_id: Annotated[
        int | None, Header(ge=0, description="set by EventSource on reconnect"), SEQ
    ] = None,
) -> Response:
    """Follow the session live, from any position."""
    start = last_event_id if last_event_id is not None else (after or 0)
    summary = await asyncio.to_thread(index.summary, paths)
    if summary.status in FINISHED_SESSION and start >= summary.last_seq:
        return Response(status_code=204)
    writer = runner.writer_for(paths.session_id) if runner is not None else None
    shutdown = anyio.Event()
    shutting_down: asyncio.Event = request.app.state.shutting_down
    stops = (shutting_down.wait, shutdown.wait)
    if writer is not None:
        fanouts: Fanouts = request.app.state.fanouts
        body = fanouts.of(writer).messages(start, stops)
    else:
        source = EventReader(paths).follow_batches(start, poll_s=policy.poll_s)
        body = sse_messages(ReaderFeed.of_batches(source, policy, stops=stops, after=start))
    return EventStream(
        body,
        ping=policy.ping_s,
        ping_message_factory=ping,
        send_timeout=policy.send_timeout_s,
        shutdown_event=shutdown,
        shutdown_grace_period=policy.grace_s,
    )
