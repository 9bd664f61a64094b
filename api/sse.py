"""Server-sent events of one session: the guarantees of every reader, and its own feed.

A reader follows ``events.jsonl`` from its ``seq``. Readers of a session written by this process share
one fan-out (``api.fanout``: each new event is encoded once and handed to every reader's buffer);
a reader that is behind it, and every reader of a session written elsewhere, has its own feed here:
``EventReader.follow`` (woken by the in-process writer, else polling) pumped into a ``ReaderFeed``.
Readers never block the writer, and a reader's position is just a ``seq``. Either way:

- In order, each event exactly once, from ``seq > after``; the stream ends after ``session_finished``.
- Memory per reader is bounded: at most ``queue_size`` buffered events (plus the batch being read).
- A reader that takes no event for ``stall_s`` while its buffer is full is dropped: the stream ends
  at once with ``StreamEnd(code="slow_reader")``. Nothing is lost: the log keeps every event and the
  reader resumes from its ``Last-Event-ID``. A reader whose socket does not move at all is cut by
  the response's ``send_timeout_s`` instead (nothing can be delivered to it any more).
- When a stop event is set (server shutdown), the stream ends at once with ``code="shutting_down"``;
  when the log cannot be read, after what was read, with ``code="store_error"``.

On the wire (``to_sse``): ``id: <seq>``, ``event: <type>``, ``data: <AgentEvent JSON>``; a final
``event: error`` without id carries ``{"error": {"code", "message"}, "resume_after": <seq>}``;
``event: ping`` with ``{"ts": ...}`` keeps idle connections open. Events already waiting when one
is sent go out with it in one write (``sse_messages``), each still its own message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from orchestrator.errors import OrchestratorError
from orchestrator.log import get_logger
from orchestrator.models import AgentEvent, utcnow
from orchestrator.recent_events import Recent, Stored

log = get_logger(__name__)
Logged = AgentEvent | Stored  # an event of the log: an object, or its stored line with seq and type
EndCode = Literal["slow_reader", "shutting_down", "store_error"]
Stop = Callable[[], Awaitable[object]]
Encode = Callable[[AgentEvent], str]
MAX_CHUNK = 256  # events written to the socket at once, at most
FINAL = "session_finished"

# The OpenAPI (3.2 ``itemSchema``) of one event on the wire, as schemathesis and clients read it.
SSE_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "the AgentEvent type, or ping, or error"},
        "id": {"type": "string", "description": "the event's seq (absent on ping and error)"},
        "data": {"type": "string", "description": "JSON: the AgentEvent, or {ts}, or the error body"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


@dataclass(frozen=True)
class StreamPolicy:
    """Knobs of every SSE stream; tests shrink the times."""

    ping_s: float = 15.0
    poll_s: float = 0.25
    queue_size: int = 1000
    stall_s: float = 10.0
    send_timeout_s: float = 30.0
    grace_s: float = 1.0

    def __post_init__(self) -> None:
        if self.queue_size < 1 or min(self.ping_s, self.poll_s, self.stall_s, self.send_timeout_s) <= 0:
            raise ValueError(f"invalid stream policy {self}: sizes and times must be positive")


@dataclass(frozen=True)
class StreamEnd:
    """Why a feed ended early; becomes the final ``event: error``."""

    code: EndCode
    message: str
    resume_after: int

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}, "resume_after": self.resume_after}

    @classmethod
    def slow_reader(cls, policy: StreamPolicy, last_sent: int) -> StreamEnd:
        size, stall = policy.queue_size, policy.stall_s
        log.info("sse.slow_reader_dropped", last_sent=last_sent, buffered=size)
        return cls(
            "slow_reader",
            f"this reader took no event for {stall:g} s with {size} waiting and was dropped; "
            f"reconnect with Last-Event-ID: {last_sent} (or ?after={last_sent}) to resume",
            last_sent,
        )

    @classmethod
    def shutting_down(cls, last_sent: int) -> StreamEnd:
        message = f"the server is shutting down; resume later with Last-Event-ID: {last_sent}"
        return cls("shutting_down", message, last_sent)

    @classmethod
    def store_error(cls, exc: Exception, last_sent: int) -> StreamEnd:
        log.warning("sse.source_failed", error=str(exc))
        return cls("store_error", f"reading the session failed: {exc}", last_sent)


class ReaderFeed:
    """The events of one session for one reader, through a bounded buffer (see the module doc).

    ``source`` yields events one by one; ``ReaderFeed.of_batches`` takes a source of batches
    (``EventReader.follow_batches``), which are buffered and handed on as they are, cut into pieces
    of at most ``MAX_CHUNK`` events (``pieces``), so that a flood costs no step per event.
    """

    def __init__(
        self,
        source: AsyncIterator[Logged],
        policy: StreamPolicy,
        stops: Sequence[Stop] = (),
        after: int = 0,
    ) -> None:
        self._source: AsyncIterator[Logged] | AsyncIterator[Sequence[Logged]] = source
        self._batched = False
        self._policy = policy
        self._stops = stops
        self._items: deque[Sequence[Logged]] = deque()
        self._count = 0  # events in ``_items``
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._end: StreamEnd | None = None
        self._exhausted = False
        self.last_sent = after  # the reader's position: it has every event up to this seq
        self.high_water = 0

    @classmethod
    def of_batches(
        cls,
        batches: AsyncIterator[Sequence[Logged]],
        policy: StreamPolicy,
        stops: Sequence[Stop] = (),
        after: int = 0,
    ) -> ReaderFeed:
        """A feed whose source yields batches of events (in seq order)."""
        feed = cls(_nothing(), policy, stops, after)
        feed._source, feed._batched = batches, True
        return feed

    @property
    def buffered(self) -> int:
        """Events waiting in the buffer."""
        return self._count

    def _finish(self, end: StreamEnd, urgent: bool = True) -> None:
        """End the feed; ``urgent`` drops what is buffered (the reader resumes from the log)."""
        if self._end is None:
            self._end = end
            if urgent:
                self._items.clear()
                self._count = 0
            self._ready.set()

    async def _pump(self) -> None:
        try:
            async for got in self._source:
                batch: Sequence[Logged] = got if self._batched else (got,)  # type: ignore[assignment]
                final = final_index(batch)
                if final is not None:
                    batch = batch[: final + 1]
                while batch:  # at most ``queue_size`` events wait: a batch goes in as there is room
                    while self._count >= self._policy.queue_size:
                        self._space.clear()
                        try:
                            async with asyncio.timeout(self._policy.stall_s):  # not wait_for: see end_tasks
                                await self._space.wait()
                        except TimeoutError:
                            self._finish(StreamEnd.slow_reader(self._policy, self.last_sent))
                            return
                    room = self._policy.queue_size - self._count
                    part, batch = (batch, ()) if len(batch) <= room else (batch[:room], batch[room:])
                    self._items.append(part)
                    self._count += len(part)
                    self.high_water = max(self.high_water, self._count)
                    self._ready.set()
                if final is not None:
                    return
        except (OrchestratorError, OSError) as exc:
            self._finish(StreamEnd.store_error(exc, self.last_sent), urgent=False)
            return
        finally:
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RuntimeError):
                    await aclose()  # runs the source's cleanup (the writer unsubscribes)
        self._exhausted = True
        self._ready.set()

    async def _watch(self, stop: Stop) -> None:
        await stop()
        self._finish(StreamEnd.shutting_down(self.last_sent))

    async def pieces(self) -> AsyncGenerator[Sequence[Logged] | StreamEnd, None]:
        """Events in order, in pieces of at most ``MAX_CHUNK``, then possibly one ``StreamEnd``;
        ends after ``session_finished``."""
        tasks = [asyncio.create_task(self._pump())]
        tasks += [asyncio.create_task(self._watch(stop)) for stop in self._stops]
        try:
            while True:
                if self._end is not None and not self._items:
                    yield replace(self._end, resume_after=self.last_sent)
                    return
                if self._items:
                    piece = self._items.popleft()
                    if len(piece) > MAX_CHUNK:
                        self._items.appendleft(piece[MAX_CHUNK:])
                        piece = piece[:MAX_CHUNK]
                    self._count -= len(piece)
                    self._space.set()
                    last = piece[-1]
                    self.last_sent = last.seq
                    yield piece
                    if last.type == FINAL:
                        return
                    continue
                if self._exhausted:
                    return
                self._ready.clear()
                await self._ready.wait()
        finally:
            await end_tasks(tasks)

    async def items(self) -> AsyncGenerator[Logged | StreamEnd, None]:
        """``pieces``, event by event."""
        async with contextlib.aclosing(self.pieces()) as pieces:
            async for piece in pieces:
                if isinstance(piece, StreamEnd):
                    yield piece
                else:
                    for event in piece:
                        yield event


async def _nothing() -> AsyncIterator[Logged]:
    return
    yield  # an async generator that yields nothing


async def end_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have ended, cancelling again any that carried on.

    Python 3.11's ``asyncio.wait_for`` swallows a cancellation that comes as its awaitable finishes
    (``EventReader.follow`` waits so for the writer's wake-up): the task then runs on to its next
    ``await``, where the second cancellation reaches it.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)


def to_sse(item: Logged | StreamEnd, encode: Encode | None = None) -> ServerSentEvent:
    """One feed item as an SSE message. A ``Stored`` line goes out as stored; for an event object,
    ``encode`` gives its JSON (default ``model_dump_json``)."""
    if isinstance(item, StreamEnd):
        return ServerSentEvent(data=orjson.dumps(item.body()).decode(), event="error")
    if isinstance(item, Stored):
        data = item.text
    else:
        data = item.model_dump_json() if encode is None else encode(item)
    return ServerSentEvent(data=data, event=item.type, id=str(item.seq))


def sse_bytes(item: Logged, encode: Encode | None = None) -> bytes:
    """``to_sse(item, encode).encode()``, written directly for a stored line (the hot path of a flood).

    A stored line is one line of JSON (no CR or LF) and its type is a known one: its message is
    exactly ``id``, ``event`` and one ``data`` line, as sse-starlette would write it.
    """
    if isinstance(item, Stored):
        return f"id: {item.seq}\r\nevent: {item.type}\r\ndata: {item.text}\r\n\r\n".encode()
    return to_sse(item, encode).encode()


def sse_chunk(events: Sequence[Logged]) -> bytes:
    """The SSE messages of ``events`` as one chunk (from the writer's memory: written at once)."""
    if isinstance(events, Recent):
        return events.sse()
    return b"".join([sse_bytes(event) for event in events])


def final_index(events: Sequence[Logged]) -> int | None:
    """Where ``session_finished`` is in ``events`` (None if it is not), without an object per event
    when they come from memory."""
    kinds = events.types() if isinstance(events, Recent) else [event.type for event in events]
    return kinds.index(FINAL) if FINAL in kinds else None


def ping() -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps({"ts": utcnow().isoformat()}).decode(), event="ping")


async def sse_messages(
    feed: ReaderFeed, encode: Encode | None = None, handover: Callable[[Logged], bool] | None = None
) -> AsyncGenerator[ServerSentEvent | bytes, None]:
    """The feed as SSE messages (the body of the stream response).

    Events that are already buffered when one is taken are encoded together and sent as one chunk
    (up to ``MAX_CHUNK``): each send costs the server far more than an event's bytes, and a
    reader that lags gets more per send instead of falling further behind. An event never waits
    for a later one. ``encode`` as in ``to_sse`` (the live writer gives the JSON it stored).
    ``handover(event)`` is asked with the last event of each piece the feed hands on (each event,
    for a feed of single events): when it answers True, the messages end with that event (what the
    feed holds beyond it is dropped: the caller continues after it).
    """
    chunk: list[bytes] = []
    count = 0
    async with contextlib.aclosing(feed.pieces()) as pieces:
        async for piece in pieces:
            if isinstance(piece, StreamEnd):
                if chunk:
                    yield b"".join(chunk)
                    chunk, count = [], 0
                yield to_sse(piece)
                continue
            if chunk and count + len(piece) > MAX_CHUNK:
                yield b"".join(chunk)
                chunk, count = [], 0
            chunk.append(
                sse_chunk(piece) if encode is None else b"".join(sse_bytes(e, encode) for e in piece)
            )
            count += len(piece)
            if handover is not None and handover(piece[-1]):
                break
            if not feed.buffered or count >= MAX_CHUNK:
                yield b"".join(chunk)
                chunk, count = [], 0
    if chunk:
        yield b"".join(chunk)


class EventStream(EventSourceResponse):
    """sse-starlette's response, where a reader cut by ``send_timeout`` is a normal end, not an error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("sse.stuck_reader_cut", path=scope.get("path"), send_timeout_s=self.send_timeout)
