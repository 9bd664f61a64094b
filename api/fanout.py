"""One shared fan-out per live session: each new event is encoded once and handed to every reader.

A session written by this process (its ``EventWriter`` lives here) has at most one running
``SessionFanout``, kept by ``Fanouts`` (on ``app.state``). Its one task follows the writer
(``EventReader.follow_batches``: woken by ``EventWriter.subscribe``, events from
``EventWriter.recent`` with the JSON it stored), encodes the SSE messages of each piece of new events
(at most ``MAX_CHUNK``) once, as one chunk, and appends the same bytes to the bounded buffer of every
attached reader, letting the readers send between two pieces. The task starts with the first reader and ends when
the last one leaves, after ``session_finished``, or when the log cannot be read.

A reader (``SessionFanout.messages``) keeps every guarantee of ``api.sse``. It starts after ``after``:

- *Catching up*: while it is behind the fan-out it reads on its own, through a ``ReaderFeed`` of the batches of
  ``follow_batches(after)`` (the writer's memory, or the log when the events are no longer there).
- *Attached*: once the last event it took has ``seq >= last`` (the last seq the fan-out handed
  out), it is attached, in the same step of the event loop, so the fan-out cannot move in between;
  the fan-out skips every event a reader already has. So the seam has no gap and no duplicate.
- The fan-out never waits for a reader. When a reader's buffer is full, the fan-out detaches it
  and adds nothing more; the reader sends its buffer, catches up from the log and is attached
  again. A reader that takes nothing for ``stall_s`` after its buffer filled is dropped with
  ``slow_reader``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace

from sse_starlette import ServerSentEvent

from api.sse import (
    FINAL,
    MAX_CHUNK,
    Logged,
    ReaderFeed,
    Stop,
    StreamEnd,
    StreamPolicy,
    final_index,
    sse_chunk,
    sse_messages,
    to_sse,
)
from orchestrator.errors import OrchestratorError
from orchestrator.log import get_logger
from orchestrator.store import EventReader, EventWriter

log = get_logger(__name__)


@dataclass(eq=False)
class _Reader:
    """One reader of a fan-out: where it is and its buffer of encoded messages."""

    position: int  # the last seq it has (sent, in the chunk being sent, or buffered)
    sent: int  # the last seq taken for its socket: what it resumes after
    items: deque[tuple[int, bytes, int]] = field(default_factory=deque)  # (last seq, messages, count)
    buffered: int = 0  # events in ``items``
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    end: StreamEnd | None = None
    attached: bool = False
    handed_over: bool = False  # its last catch-up ended by attaching it (not by ending the stream)
    closing: bool = False  # its buffer ends with session_finished
    full_at: float | None = None  # when the fan-out found its buffer full (and detached it)
    taken_at: float = 0.0

    def finish(self, end: StreamEnd, urgent: bool = True) -> None:
        """End the stream; ``urgent`` drops what is buffered (the reader resumes from the log)."""
        if self.end is None:
            self.end = end
            if urgent:
                self.items.clear()
                self.buffered = 0
            self.ready.set()

    def push(self, last: int, data: bytes, count: int) -> None:
        """Buffer the messages of ``count`` events ending with seq ``last``."""
        self.items.append((last, data, count))
        self.buffered += count
        self.position = last
        self.ready.set()

    def take(self) -> tuple[int, bytes]:
        """The buffered messages of about ``MAX_CHUNK`` events at most (at least one item): (last seq, bytes)."""
        taken: list[bytes] = []
        count = 0
        while self.items and (not taken or count + self.items[0][2] <= MAX_CHUNK):
            item = self.items.popleft()
            taken.append(item[1])
            count += item[2]
        self.buffered -= count
        return item[0], b"".join(taken) if len(taken) > 1 else taken[0]


class SessionFanout:
    """The readers of one live session's writer (see the module doc)."""

    def __init__(
        self,
        writer: EventWriter,
        policy: StreamPolicy,
        on_end: Callable[[SessionFanout], None] = lambda _: None,
    ) -> None:
        self.writer = writer
        self.last = writer.last_seq  # the last seq handed out (or skipped, with no reader attached)
        self.stopped = False  # it attaches no reader any more
        self.task: asyncio.Task[None] | None = None
        self._policy = policy
        self._on_end = on_end
        self._attached: list[_Reader] = []
        self._members = 0

    @property
    def readers(self) -> int:
        """Readers streaming through it now, attached or catching up."""
        return self._members

    async def messages(
        self, after: int, stops: Sequence[Stop] = ()
    ) -> AsyncGenerator[ServerSentEvent | bytes, None]:
        """One reader's stream from ``seq > after`` (the body of its response), ending as ``api.sse`` says."""
        reader = _Reader(position=after, sent=after)
        self._join(reader)
        watchers = [asyncio.create_task(self._watch(reader, stop)) for stop in stops]
        loop = asyncio.get_running_loop()
        try:
            while True:
                if reader.items:
                    now = loop.time()
                    if self._stalled(reader, now):
                        reader.finish(StreamEnd.slow_reader(self._policy, reader.sent))
                        continue
                    reader.sent, data = reader.take()
                    reader.taken_at = now
                    yield data
                    if reader.closing and not reader.items and reader.end is None:
                        return
                elif reader.end is not None:
                    yield to_sse(replace(reader.end, resume_after=reader.sent))
                    return
                elif not reader.attached:
                    reader.handed_over = False
                    async for message in self._catch_up(reader):
                        yield message
                    if not reader.handed_over:
                        return  # its own feed ended it: session_finished or a final error
                else:
                    reader.ready.clear()
                    await reader.ready.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            self._leave(reader)

    def _stalled(self, reader: _Reader, now: float) -> bool:
        """Its buffer filled up and it has taken nothing for ``stall_s`` since."""
        full_at = reader.full_at
        return full_at is not None and now - max(full_at, reader.taken_at) >= self._policy.stall_s

    async def _catch_up(self, reader: _Reader) -> AsyncGenerator[ServerSentEvent | bytes, None]:
        """The reader's events from its own feed until it is level with the fan-out (then attached)."""
        reader.full_at = None
        source = EventReader(self.writer.paths).follow_batches(
            reader.position, self.writer, self._policy.poll_s
        )
        feed = ReaderFeed.of_batches(
            source, self._policy, stops=(reader.stopped.wait,), after=reader.position
        )

        def handover(event: Logged) -> bool:
            reader.position = reader.sent = event.seq
            reader.handed_over = event.type != FINAL and self._attach(reader)
            return reader.handed_over

        async with contextlib.aclosing(sse_messages(feed, handover=handover)) as messages:
            async for message in messages:
                yield message

    async def _watch(self, reader: _Reader, stop: Stop) -> None:
        await stop()
        reader.stopped.set()
        reader.finish(StreamEnd.shutting_down(reader.sent))

    def _join(self, reader: _Reader) -> None:
        self._members += 1
        if not self.stopped and self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"sse-fanout-{self.writer.paths.session_id}")
        self._attach(reader)

    def _attach(self, reader: _Reader) -> bool:
        """Attach the reader if it has every event handed out so far; True if attached."""
        if self.stopped or reader.end is not None or reader.position < self.last:
            return False
        reader.attached, reader.full_at = True, None
        self._attached.append(reader)
        return True

    def _leave(self, reader: _Reader) -> None:
        self._members -= 1
        if reader.attached:
            reader.attached = False
            self._attached.remove(reader)
        if self._members == 0:
            self.close()

    def close(self) -> None:
        """Attach no reader any more and end the task (call it when no reader streams through it)."""
        self._stop()
        if self.task is not None:
            self.task.cancel()

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._on_end(self)

    async def _run(self) -> None:
        source = EventReader(self.writer.paths).follow_batches(self.last, self.writer, self._policy.poll_s)
        try:
            async for batch in source:
                for start in range(0, len(batch), MAX_CHUNK):
                    if self.stopped:
                        return  # cancelled, but the follower's wait_for swallowed it (see api.sse.end_tasks)
                    piece = batch[start : start + MAX_CHUNK]
                    final = final_index(piece)
                    self._publish(piece if final is None else piece[: final + 1])
                    if final is not None:
                        return
                    await asyncio.sleep(0)  # the readers send what they got before the next piece
        except (OrchestratorError, OSError) as exc:
            for reader in self._attached:
                reader.finish(StreamEnd.store_error(exc, reader.position), urgent=False)
        finally:
            self._stop()
            for reader in self._attached:
                reader.attached = False
            self._attached.clear()
            aclose = getattr(source, "aclose", None)  # an async generator: its cleanup unsubscribes
            if aclose is not None:
                await aclose()

    def _publish(self, events: Sequence[Logged]) -> None:
        """Hand ``events`` (in seq order) to every attached reader that lacks them, as one message
        chunk encoded once; detach the readers whose buffer is full."""
        last = events[-1].seq
        self.last = last
        if not self._attached:
            return
        data = sse_chunk(events)  # stored lines: their bytes as stored
        final = events[-1].type == FINAL
        first = events[0].seq
        full: list[_Reader] = []
        for reader in self._attached:
            if last <= reader.position:
                continue
            if reader.buffered >= self._policy.queue_size:
                full.append(reader)
                continue
            if reader.position >= first:  # it has some of them already (it attached mid-batch)
                skip = reader.position - first + 1
                reader.push(last, sse_chunk(events[skip:]), len(events) - skip)
            else:
                reader.push(last, data, len(events))
            reader.closing = final
        for reader in full:
            reader.attached, reader.full_at = False, asyncio.get_running_loop().time()
            self._attached.remove(reader)
            reader.ready.set()


class Fanouts:
    """The fan-outs of this app's live sessions, at most one running per writer (kept on ``app.state``)."""

    def __init__(self, policy: StreamPolicy) -> None:
        self._policy = policy
        self._running: dict[EventWriter, SessionFanout] = {}

    def __len__(self) -> int:
        return len(self._running)

    def of(self, writer: EventWriter) -> SessionFanout:
        """The running fan-out of ``writer``, created if there is none.

        Iterate its ``messages`` at once: a fan-out whose last reader left before another joined
        has stopped, and serves the newcomer through the reader's own feed (exact, but not shared).
        """
        for stale in [f for w, f in self._running.items() if w.closed and not f.readers]:
            stale.close()  # one created for a response that never started
        fanout = self._running.get(writer)
        if fanout is None:
            fanout = SessionFanout(writer, self._policy, on_end=self._forget)
            self._running[writer] = fanout
        return fanout

    def _forget(self, fanout: SessionFanout) -> None:
        if self._running.get(fanout.writer) is fanout:
            del self._running[fanout.writer]
