"""Server-sent events: exact resume, the end after ``session_finished``, slow and stuck readers, shutdown.

``ReaderFeed`` is tested directly (the bounded buffer and its drop rule); the HTTP stream runs under
a real uvicorn on a free port (httpx's ASGI transport buffers whole bodies, so it cannot stream),
and the stuck-socket case drives the ASGI app with a ``send`` that never returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from api.app import begin_shutdown, create_app
from api.sse import ReaderFeed, StreamEnd, StreamPolicy, end_tasks
from api.testing import FakeSessionRunner, serve
from orchestrator.config import Settings
from orchestrator.errors import StoreError
from orchestrator.models import AgentEvent, EventDraft, Output, SessionFinished, utcnow

pytestmark = pytest.mark.timeout(60)
FAST = StreamPolicy(ping_s=0.2, poll_s=0.05, queue_size=8, stall_s=0.3, send_timeout_s=0.5, grace_s=0.5)


def line(n: int) -> Output:
    return Output(stream="stdout", line=f"line {n}")


def make_event(seq: int, payload: Any = None) -> AgentEvent:
    draft = EventDraft.of("codex-t1", payload or line(seq), "t1")
    return AgentEvent(seq=seq, ts=utcnow(), session_id="s" * 8, worker=draft.worker, task_id=draft.task_id,
                      type=draft.type, data=draft.data)  # fmt: skip


async def source_of(events: list[AgentEvent], gate: asyncio.Event | None = None) -> AsyncIterator[AgentEvent]:
    for event in events:
        yield event
    if gate is not None:
        await gate.wait()


def parse_sse(text: str) -> list[dict[str, str]]:
    """SSE text -> messages as dicts of their fields (comments and blank lines dropped)."""
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw:
            if current:
                messages.append(current)
            current = {}
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        current[name] = value[1:] if value.startswith(" ") else value
    if current:
        messages.append(current)
    return messages


async def read_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                      stop_after: int | None = None) -> list[dict[str, str]]:  # fmt: skip
    """Messages of one stream until the server ends it (or ``stop_after`` events with an id)."""
    messages: list[dict[str, str]] = []
    buffer = ""
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            buffer += chunk
            *complete, buffer = buffer.replace("\r\n", "\n").split("\n\n")
            for block in complete:
                messages.extend(parse_sse(block + "\n\n"))
            if stop_after is not None and sum("id" in m for m in messages) >= stop_after:
                break
    while messages and messages[-1].get("event") == "ping":
        messages.pop()  # a keep-alive ping runs beside the events and may land just before the close
    return messages


def seqs(messages: list[dict[str, str]]) -> list[int]:
    return [int(m["id"]) for m in messages if "id" in m]


@pytest.fixture
def runner(settings: Settings) -> FakeSessionRunner:
    return FakeSessionRunner(settings)


@pytest.fixture
def app(settings: Settings, runner: FakeSessionRunner) -> FastAPI:
    return create_app(settings, runner, stream_policy=FAST)


# ---- ReaderFeed ------------------------------------------------------------------------------


async def test_feed_yields_every_event_in_order_and_ends_after_session_finished() -> None:
    """The feed hands out each event once, in order, and stops at ``session_finished``."""
    events = [make_event(n) for n in range(1, 20)] + [make_event(20, SessionFinished(status="succeeded"))]
    feed = ReaderFeed(source_of([*events, make_event(21)]), FAST)
    got = [item async for item in feed.items()]
    assert [e.seq for e in events] == [i.seq for i in got if isinstance(i, AgentEvent)]
    assert not any(isinstance(i, StreamEnd) for i in got)
    assert FAST.queue_size >= feed.high_water


async def test_feed_drops_a_reader_that_stops_taking_events_and_bounds_its_buffer() -> None:
    """A full buffer untouched for ``stall_s`` ends the feed with ``slow_reader``; another feed is unaffected."""
    events = [make_event(n) for n in range(1, 201)]
    gate = asyncio.Event()
    slow = ReaderFeed(source_of(events, gate), FAST)
    fast = ReaderFeed(source_of(events, gate), FAST)

    async def take_all() -> list[int]:
        got = []
        async for item in fast.items():
            assert isinstance(item, AgentEvent)
            got.append(item.seq)
            if item.seq == 200:
                return got
        return got

    fast_task = asyncio.create_task(take_all())
    slow_items = slow.items()
    first = await anext(slow_items)
    await asyncio.sleep(FAST.stall_s * 3)  # the reader stops reading
    end = await anext(slow_items)
    await slow_items.aclose()
    assert isinstance(first, AgentEvent)
    assert isinstance(end, StreamEnd)
    assert (end.code, end.resume_after) == ("slow_reader", 1)
    assert "Last-Event-ID: 1" in end.message
    assert FAST.queue_size == slow.high_water
    assert slow.buffered == 0
    assert list(range(1, 201)) == await fast_task


async def test_feed_ends_at_once_with_shutting_down_when_a_stop_fires() -> None:
    """A set stop event ends the feed promptly with ``shutting_down``, even mid-follow."""
    stop = asyncio.Event()
    feed = ReaderFeed(source_of([make_event(1)], asyncio.Event()), FAST, stops=(stop.wait,))
    items = feed.items()
    assert (await anext(items)).seq == 1  # type: ignore[union-attr]
    stop.set()
    end = await asyncio.wait_for(anext(items), 1)
    assert isinstance(end, StreamEnd)
    assert (end.code, end.resume_after) == ("shutting_down", 1)


async def test_feed_ends_with_store_error_when_the_log_cannot_be_read() -> None:
    """A failing source becomes a final ``store_error`` item, not an exception in the response."""

    async def broken() -> AsyncIterator[AgentEvent]:
        yield make_event(1)
        raise StoreError("cannot read events.jsonl: disk gone")

    got = [item async for item in ReaderFeed(broken(), FAST).items()]
    assert got[0].seq == 1  # type: ignore[union-attr]
    assert isinstance(got[1], StreamEnd)
    assert got[1].code == "store_error"


async def test_end_tasks_ends_a_task_that_swallowed_its_cancellation() -> None:
    """A follower in ``wait_for`` woken as it is cancelled carries on (Python 3.11); it is cancelled again."""
    wake = asyncio.Event()
    woken: list[int] = []

    async def follower() -> None:
        while True:
            await asyncio.wait_for(wake.wait(), 10)
            woken.append(1)
            wake.clear()

    task = asyncio.create_task(follower())
    await asyncio.sleep(0)
    wake.set()  # and cancelled in the same step (end_tasks cancels first): wait_for returns, not raises
    await asyncio.wait_for(end_tasks([task]), 2)
    assert (woken, task.cancelled()) == ([1], True)


def test_policy_refuses_nonsense_knobs() -> None:
    """A zero queue or a non-positive time is refused when the policy is built."""
    with pytest.raises(ValueError, match="invalid stream policy"):
        StreamPolicy(queue_size=0)
    with pytest.raises(ValueError, match="invalid stream policy"):
        StreamPolicy(stall_s=0)


# ---- over HTTP ------------------------------------------------------------------------------


async def test_reader_joining_mid_session_gets_every_event_once_in_order_then_the_stream_ends(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """A reader that connects after events were written gets the history, then the live tail, then the end."""
    sid = await runner.create()
    for n in range(5):
        await runner.emit(sid, "codex-t1", line(n), "t1")

    async def write_more() -> None:
        await asyncio.sleep(0.2)
        for n in range(5, 40):
            await runner.emit(sid, "codex-t1", line(n), "t1")
        await runner.finish(sid)

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        writer = asyncio.create_task(write_more())
        messages = await read_stream(client, f"/api/sessions/{sid}/stream")
        await writer
    assert list(range(1, 43)) == seqs(messages)  # created, 40 lines, finished
    last = messages[-1]
    assert last["event"] == "session_finished"
    event = AgentEvent.model_validate_json(last["data"])
    assert (42, sid) == (event.seq, event.session_id)
    assert all(m["event"] == orjson.loads(m["data"])["type"] for m in messages if "id" in m)


async def test_reconnecting_with_last_event_id_resumes_exactly(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """Last-Event-ID (winning over the URL's ?after=) resumes after that seq: nothing lost, nothing twice."""
    sid = await runner.create()
    for n in range(30):
        await runner.emit(sid, "codex-t1", line(n), "t1")
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = seqs(await read_stream(client, f"/api/sessions/{sid}/stream", stop_after=12))[:12]
        for n in range(30, 40):
            await runner.emit(sid, "codex-t1", line(n), "t1")
        await runner.finish(sid)
        headers = {"Last-Event-ID": str(first[-1])}
        second = seqs(await read_stream(client, f"/api/sessions/{sid}/stream?after=0", headers=headers))
        by_after = seqs(await read_stream(client, f"/api/sessions/{sid}/stream?after=35"))
        caught_up = await client.get(f"/api/sessions/{sid}/stream", headers={"Last-Event-ID": "42"})
    assert list(range(1, 13)) == first
    assert list(range(13, 43)) == second
    assert list(range(36, 43)) == by_after
    assert caught_up.status_code == 204


async def test_idle_stream_sends_pings(app: FastAPI, runner: FakeSessionRunner) -> None:
    """A stream with nothing new sends ``event: ping`` with a timestamp to keep proxies open."""
    sid = await runner.create()
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        buffer = ""
        async with client.stream("GET", f"/api/sessions/{sid}/stream?after=1") as response:
            async for chunk in response.aiter_text():
                buffer += chunk
                if "event: ping" in buffer:
                    break
    ping = next(m for m in parse_sse(buffer) if m.get("event") == "ping")
    assert {"ts"} == set(orjson.loads(ping["data"]))
    assert "id" not in ping


async def test_shutdown_ends_open_streams_with_a_final_error_event(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """``begin_shutdown`` ends every open stream with ``event: error`` / ``shutting_down``."""
    sid = await runner.create()
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def shut_soon() -> None:
            await asyncio.sleep(0.3)
            begin_shutdown(app)

        task = asyncio.create_task(shut_soon())
        started = time.monotonic()
        messages = await read_stream(client, f"/api/sessions/{sid}/stream")
        await task
    assert seqs(messages) == [1]
    # keep-alive pings run beside the events and may still land after the final event: skip them
    final = [m for m in messages if m.get("event") != "ping"][-1]
    assert final["event"] == "error"
    body = orjson.loads(final["data"])
    assert (body["error"]["code"], body["resume_after"]) == ("shutting_down", 1)
    assert time.monotonic() - started < 10  # promptly, not at the 60 s test timeout (loaded CI machines)


async def test_many_readers_each_get_everything_and_the_writer_does_not_wait(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """Twenty readers follow one session; each gets every event; commits stay fast while they read."""
    sid = await runner.create()
    commits: list[float] = []

    async def write() -> None:
        await asyncio.sleep(0.3)
        for n in range(100):
            started = time.perf_counter()
            await runner.emit(sid, "codex-t1", line(n), "t1")
            commits.append(time.perf_counter() - started)
        await runner.finish(sid)

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        writer = asyncio.create_task(write())
        results = await asyncio.gather(
            *(read_stream(client, f"/api/sessions/{sid}/stream") for _ in range(20))
        )
        await writer
    assert [list(range(1, 103))] * 20 == [seqs(r) for r in results]
    commits.sort()
    assert commits[len(commits) // 2] < 1.0, f"median commit {commits[len(commits) // 2]:.3f}s"


# ---- a reader whose socket does not move ---------------------------------------------------


async def drive(app: FastAPI, path: str, send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
    """Call the ASGI app for one GET whose client never disconnects."""
    route, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": route, "raw_path": route.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
             "server": ("test", 80), "state": {}}  # fmt: skip
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    await app(scope, receive, send)


async def test_a_slow_reader_is_dropped_with_a_final_error_event(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """A client taking events slower than ``stall_s`` per buffer gets ``event: error`` / ``slow_reader``."""
    sid = await runner.create()
    for n in range(60):
        await runner.emit(sid, "codex-t1", line(n), "t1")
    bodies: list[bytes] = []

    async def slow_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))
            await asyncio.sleep(FAST.stall_s * 1.5)

    await asyncio.wait_for(drive(app, f"/api/sessions/{sid}/stream", slow_send), 20)
    messages = [m for m in parse_sse(b"".join(bodies).decode()) if m.get("event") != "ping"]
    got = seqs(messages)
    assert list(range(1, len(got) + 1)) == got
    assert len(got) < 61
    final = messages[-1]
    body = orjson.loads(final["data"])
    assert ("error", "slow_reader", got[-1]) == (final["event"], body["error"]["code"], body["resume_after"])


async def test_a_stuck_socket_is_cut_by_the_send_timeout(app: FastAPI, runner: FakeSessionRunner) -> None:
    """A send that never completes ends the response after ``send_timeout_s``; the writer carries on."""
    sid = await runner.create()
    sent: list[MutableMapping[str, Any]] = []
    forever = asyncio.Event()

    async def stuck_send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await forever.wait()

    response = asyncio.create_task(drive(app, f"/api/sessions/{sid}/stream", stuck_send))
    for n in range(50):
        await runner.emit(sid, "codex-t1", line(n), "t1")
    await asyncio.wait_for(response, 5)  # without the send timeout it would never end
    assert runner.writers[sid].last_seq == 51
    assert sent[0]["type"] == "http.response.start"
