"""``sse_messages`` sends events that are already waiting in one chunk, and never holds one back.

The bytes on the wire are the same as one message per event: only the number of writes changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent

from api.sse import MAX_CHUNK, ReaderFeed, StreamPolicy, sse_bytes, sse_messages, to_sse
from orchestrator.models import AgentEvent, EventDraft, Output, SessionFinished, utcnow
from orchestrator.recent_events import Stored

pytestmark = pytest.mark.timeout(30)
POLICY = StreamPolicy(queue_size=10_000, stall_s=5)


def event(seq: int, finished: bool = False) -> AgentEvent:
    payload = SessionFinished(status="succeeded") if finished else Output(stream="stdout", line=f"line {seq}")
    draft = EventDraft.of("codex-t1", payload, "t1")
    return AgentEvent(seq=seq, ts=utcnow(), session_id="s" * 8, worker=draft.worker, task_id=draft.task_id,
                      type=draft.type, data=draft.data)  # fmt: skip


async def at_once(events: list[AgentEvent]) -> AsyncIterator[AgentEvent]:
    for item in events:
        yield item


def as_bytes(chunk: ServerSentEvent | bytes) -> bytes:
    return chunk if isinstance(chunk, bytes) else chunk.encode()


async def test_waiting_events_go_out_together_with_the_same_bytes() -> None:
    """A backlog becomes few chunks whose bytes are exactly the messages one by one, in order."""
    events = [event(n) for n in range(1, 600)] + [event(600, finished=True)]
    chunks = [as_bytes(c) async for c in sse_messages(ReaderFeed(at_once(events), POLICY))]
    assert b"".join(chunks) == b"".join(to_sse(e).encode() for e in events)
    assert len(chunks) < len(events)
    assert all(c.count(b"\r\n\r\n") <= MAX_CHUNK for c in chunks)


async def test_encode_gives_the_data_of_each_event() -> None:
    """With ``encode``, an event's ``data:`` is what it returns (the writer's stored JSON)."""
    events = [event(1), event(2, finished=True)]
    chunks = [
        as_bytes(c) async for c in sse_messages(ReaderFeed(at_once(events), POLICY), lambda e: f"<{e.seq}>")
    ]
    assert b"".join(chunks).count(b"data: <") == 2
    assert b"data: <2>" in b"".join(chunks)


async def test_an_event_is_sent_without_waiting_for_the_next() -> None:
    """When nothing else waits, the event goes out alone at once."""
    release = asyncio.Event()
    one, two = event(1), event(2, finished=True)

    async def slow() -> AsyncIterator[AgentEvent]:
        yield one
        await release.wait()
        yield two

    messages = sse_messages(ReaderFeed(slow(), POLICY))
    first = as_bytes(await asyncio.wait_for(anext(messages), 5))
    assert first == to_sse(one).encode()
    release.set()
    rest = [as_bytes(c) async for c in messages]
    assert rest == [to_sse(two).encode()]


async def test_handover_ends_the_messages_with_the_event_it_accepts_and_closes_the_feed() -> None:
    """When ``handover`` says yes, that event is the last one sent and the source is closed at once."""
    events = [event(n) for n in range(1, 20)]
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[AgentEvent]:
        try:
            for item in events:
                yield item
            await asyncio.Event().wait()
        finally:
            closed.set()

    asked: list[int] = []

    def handover(item: AgentEvent | Stored) -> bool:
        asked.append(item.seq)
        return item.seq == 5

    chunks = [as_bytes(c) async for c in sse_messages(ReaderFeed(endless(), POLICY), handover=handover)]
    assert b"".join(chunks) == b"".join(to_sse(e).encode() for e in events[:5])
    assert asked == [1, 2, 3, 4, 5]
    assert closed.is_set()


@settings(max_examples=200, deadline=None)
@given(line=st.text(max_size=80), seq=st.integers(min_value=1, max_value=10**12))
def test_a_stored_line_is_written_as_sse_starlette_writes_it(line: str, seq: int) -> None:
    """The direct encoding of a stored line is byte for byte ``ServerSentEvent(...).encode()``."""
    text = orjson.dumps({"seq": seq, "type": "output", "data": {"stream": "stdout", "line": line}}).decode()
    stored = Stored(seq, "output", text)
    assert sse_bytes(stored) == to_sse(stored).encode()
