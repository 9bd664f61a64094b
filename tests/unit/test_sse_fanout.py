"""The shared fan-out of a live session: one task, each event encoded once, every reader exact.

Most tests drive ``SessionFanout.messages`` directly on a real ``EventWriter`` in a temp folder (a
reader "takes" a message when it asks for the next one, so a pause between asks is a slow socket);
the last ones go through the HTTP route under a real uvicorn.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent

from api import fanout as fanout_module
from api.app import create_app
from api.fanout import Fanouts, SessionFanout
from api.sse import StreamPolicy, sse_chunk
from api.testing import FakeSessionRunner, serve
from orchestrator.config import Settings
from orchestrator.models import Output, SessionFinished
from orchestrator.paths import SessionPaths
from orchestrator.store import EventWriter

pytestmark = pytest.mark.timeout(120)
POLICY = StreamPolicy(ping_s=0.2, poll_s=0.05, queue_size=8, stall_s=0.3, send_timeout_s=0.5, grace_s=0.5)
PATIENT = replace(POLICY, stall_s=10.0)  # small buffers, but no reader is ever stalled for so long
Messages = AsyncGenerator[ServerSentEvent | bytes, None]


def open_writer(root: Path, recent_events: int = 2048) -> EventWriter:
    return EventWriter.open(SessionPaths.of(root / "workspace", "s" * 12), recent_events=recent_events)


def emit(writer: EventWriter, count: int) -> None:
    """``count`` output events, durable (and the writer's followers woken) when it returns."""
    for _ in range(count):
        writer.emit("codex-t1", Output(stream="stdout", line=f"line {writer.pending}"), "t1")
    writer.flush()


def finish(writer: EventWriter) -> None:
    writer.emit("orchestrator", SessionFinished(status="succeeded"))
    writer.flush()


def as_bytes(message: ServerSentEvent | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.encode()


@dataclass
class Message:
    event: str
    id: int | None
    data: bytes


def parse(wire: bytes) -> list[Message]:
    """SSE bytes -> messages, pings left out."""
    found = []
    for block in wire.split(b"\r\n\r\n"):
        fields = dict(line.split(b": ", 1) for line in block.split(b"\r\n") if b": " in line)
        if fields and fields.get(b"event") != b"ping":
            ident = fields.get(b"id")
            found.append(Message(fields[b"event"].decode(), int(ident) if ident else None, fields[b"data"]))
    return found


def log_wire(writer: EventWriter, after: int) -> bytes:
    """What ``to_sse`` makes of every stored event with ``seq > after``: the line as stored is the data."""
    wire = []
    for line in writer.paths.events.read_bytes().splitlines():
        body = orjson.loads(line)
        if body["seq"] > after:
            wire.append(ServerSentEvent(data=line.decode(), event=body["type"], id=str(body["seq"])).encode())
    return b"".join(wire)


async def read_all(messages: Messages, pause: float = 0.0) -> bytes:
    """Take every message of a stream, waiting ``pause`` after each (a slow socket)."""
    got = []
    async for message in messages:
        got.append(as_bytes(message))
        await asyncio.sleep(pause)
    return b"".join(got)


async def settle() -> None:
    """Let every task that is ready run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


def fanout_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("sse-fanout")]


# ---- one fan-out, many readers -------------------------------------------------------------


async def test_readers_at_the_live_end_get_the_same_bytes_each_event_encoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty readers receive byte-identical streams, exactly the log as SSE; each event is encoded once."""
    writer = open_writer(tmp_path)
    emit(writer, 3)
    encoded: list[int] = []

    def counting_sse_chunk(events: Any) -> bytes:
        encoded.extend(event.seq for event in events)
        return sse_chunk(events)

    monkeypatch.setattr(fanout_module, "sse_chunk", counting_sse_chunk)
    fanout = SessionFanout(writer, StreamPolicy(queue_size=1000))
    readers = [asyncio.create_task(read_all(fanout.messages(after=3))) for _ in range(20)]
    await settle()
    for _ in range(10):
        emit(writer, 5)
        await asyncio.sleep(0.01)
    finish(writer)
    wires = await asyncio.wait_for(asyncio.gather(*readers), 10)
    writer.close()
    assert [log_wire(writer, after=3)] * 20 == wires
    assert list(range(4, 55)) == encoded  # 50 lines and session_finished, once each for 20 readers


async def test_the_fanout_ends_after_session_finished_and_so_do_its_readers(tmp_path: Path) -> None:
    """After ``session_finished`` the task is done and the registry forgets the fan-out."""
    writer = open_writer(tmp_path)
    fanouts = Fanouts(POLICY)
    fanout = fanouts.of(writer)
    readers = [asyncio.create_task(read_all(fanout.messages(after=0))) for _ in range(3)]
    await settle()
    emit(writer, 4)
    finish(writer)
    wires = await asyncio.wait_for(asyncio.gather(*readers), 10)
    await settle()
    assert [[m.id for m in parse(w)] for w in wires] == [[1, 2, 3, 4, 5]] * 3
    assert fanout.task is not None and fanout.task.done()
    assert (len(fanouts), fanout.readers, fanout_tasks()) == (0, 0, [])
    writer.close()


async def test_the_fanout_task_ends_when_the_last_reader_leaves(tmp_path: Path) -> None:
    """Readers that hang up (the response closes their stream) end the task: nothing is left running."""
    writer = open_writer(tmp_path)
    fanouts = Fanouts(POLICY)
    fanout = fanouts.of(writer)
    streams = [fanout.messages(after=0) for _ in range(3)]
    emit(writer, 2)
    firsts = [parse(as_bytes(await anext(s)))[0].id for s in streams]
    assert (len(fanouts), firsts, len(fanout_tasks())) == (1, [1, 1, 1], 1)
    for stream in streams[:2]:
        await stream.aclose()
    assert fanout.task is not None and not fanout.task.done()  # one reader is still there
    await streams[2].aclose()
    await settle()
    assert fanout.task.done()
    assert (len(fanouts), fanout.readers, fanout_tasks()) == (0, 0, [])
    again = fanouts.of(writer)  # the next reader gets a new fan-out
    assert again is not fanout
    writer.close()


async def test_a_slow_reader_is_dropped_without_delaying_the_others(tmp_path: Path) -> None:
    """A reader that stops taking messages loses its place after ``stall_s``; the others get every event at once."""
    writer = open_writer(tmp_path)
    fanout = SessionFanout(writer, POLICY)
    fast = [asyncio.create_task(read_all(fanout.messages(after=0))) for _ in range(3)]
    slow = fanout.messages(after=0)
    emit(writer, 1)
    first = parse(as_bytes(await anext(slow)))
    for _ in range(20):
        emit(writer, 5)
        await asyncio.sleep(0.001)
    finish(writer)
    written_at = asyncio.get_running_loop().time()
    wires = await asyncio.wait_for(asyncio.gather(*fast), 5)  # while the slow one takes nothing
    await asyncio.sleep(max(0.0, written_at + POLICY.stall_s * 1.5 - asyncio.get_running_loop().time()))
    rest = parse(await read_all(slow))
    writer.close()
    assert [list(range(1, 103))] * 3 == [[m.id for m in parse(w)] for w in wires]
    assert [m.id for m in first] == [1]
    final = orjson.loads(rest[-1].data)
    assert (rest[-1].event, final["error"]["code"], final["resume_after"]) == ("error", "slow_reader", 1)
    assert rest[:-1] == []  # what it had buffered is dropped: it resumes from the log


async def test_a_reader_slower_than_the_writer_but_not_stalled_catches_up_and_misses_nothing(
    tmp_path: Path,
) -> None:
    """A full buffer detaches a reader; it sends what it has, catches up from the log and rejoins."""
    writer = open_writer(tmp_path, recent_events=16)
    fanout = SessionFanout(writer, PATIENT)
    reader = asyncio.create_task(read_all(fanout.messages(after=0), pause=0.005))
    await settle()
    for _ in range(30):
        emit(writer, 7)
        await asyncio.sleep(0.002)
    finish(writer)
    wire = await asyncio.wait_for(reader, 20)
    writer.close()
    assert list(range(1, 212)) == [m.id for m in parse(wire)]


async def test_a_log_that_cannot_be_read_ends_attached_readers_with_store_error(tmp_path: Path) -> None:
    """When the fan-out must read the log and cannot, its readers get what they had, then ``store_error``."""
    writer = open_writer(tmp_path, recent_events=2)
    fanout = SessionFanout(writer, POLICY)
    stream = fanout.messages(after=0)
    emit(writer, 1)
    assert [m.id for m in parse(as_bytes(await anext(stream)))] == [1]
    writer.paths.events.unlink()  # the writer appends to the unlinked file; readers cannot open it
    emit(writer, 5)  # more than the writer keeps in memory: the fan-out must read the log
    rest = parse(await asyncio.wait_for(read_all(stream), 10))
    writer.close()
    body = orjson.loads(rest[-1].data)
    assert (rest[-1].event, body["error"]["code"], body["resume_after"]) == ("error", "store_error", 1)


async def test_a_stop_ends_attached_readers_at_once_with_shutting_down(tmp_path: Path) -> None:
    """A stop (server shutdown) ends a reader waiting for events with ``shutting_down`` after its last seq."""
    writer = open_writer(tmp_path)
    stop = asyncio.Event()
    fanout = SessionFanout(writer, POLICY)
    stream = fanout.messages(after=0, stops=(stop.wait,))
    emit(writer, 2)
    assert [m.id for m in parse(as_bytes(await anext(stream)))] == [1, 2]
    stop.set()
    rest = parse(await asyncio.wait_for(read_all(stream), 2))
    writer.close()
    body = orjson.loads(rest[-1].data)
    assert [(m.event, body["error"]["code"], body["resume_after"]) for m in rest] == [
        ("error", "shutting_down", 2)
    ]


# ---- joining while events are appended ------------------------------------------------------


@dataclass(frozen=True)
class Join:
    after: int  # relative: a seq this far below (negative: above) the last durable one
    pause: float  # the reader's slowness per message


Step = int | Join  # emit this many events in one batch, or a reader joins


steps = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=12),
        st.builds(Join, st.integers(min_value=-2, max_value=40), st.sampled_from([0.0, 0.0, 0.001])),
    ),
    min_size=1,
    max_size=14,
)


async def run_script(root: Path, script: list[Step], recent: int, yields: int) -> None:
    writer = open_writer(root, recent_events=recent)
    emit(writer, 5)
    fanouts = Fanouts(PATIENT)
    readers: list[tuple[int, asyncio.Task[bytes]]] = []
    for step in script:
        if isinstance(step, Join):
            after = max(0, writer.last_seq - step.after)
            messages = fanouts.of(writer).messages(after)
            readers.append((after, asyncio.create_task(read_all(messages, step.pause))))
        else:
            emit(writer, step)
        for _ in range(yields):
            await asyncio.sleep(0)
    emit(writer, 3)  # every reader, even one that joined after a seq still to come, has events left
    finish(writer)
    wires = await asyncio.wait_for(asyncio.gather(*(task for _, task in readers)), 30)
    writer.close()
    for (after, _), wire in zip(readers, wires, strict=True):
        got = parse(wire)
        expected = parse(log_wire(writer, after))
        assert [m.id for m in expected] == [m.id for m in got], f"reader after {after}"
        assert [orjson.loads(m.data) for m in expected] == [orjson.loads(m.data) for m in got]
    await settle()
    assert (len(fanouts), fanout_tasks()) == (0, [])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=steps, recent=st.sampled_from([4, 16, 2048]), yields=st.integers(min_value=0, max_value=3))
def test_readers_joining_while_events_are_appended_get_each_event_once_in_order(
    script: list[Step], recent: int, yields: int
) -> None:
    """Whenever a reader joins, from any seq, whatever the batches, memory and its speed: the log after it, once."""
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(run_script(Path(root), script, recent, yields))


# ---- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def runner(settings: Settings) -> FakeSessionRunner:
    return FakeSessionRunner(settings)


@pytest.fixture
def app(settings: Settings, runner: FakeSessionRunner) -> FastAPI:
    return create_app(settings, runner, stream_policy=POLICY)


async def read_stream(
    client: httpx.AsyncClient, url: str, until: Callable[[list[Message]], bool]
) -> list[Message]:
    """Messages of one stream until ``until`` holds for them or the server ends it."""
    wire = b""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_bytes():
            wire += chunk
            if until(parse(wire.rpartition(b"\r\n\r\n")[0])):
                break
    return parse(wire.rpartition(b"\r\n\r\n")[0])


async def test_readers_of_a_live_session_share_one_fanout_that_ends_when_they_hang_up(
    app: FastAPI, runner: FakeSessionRunner
) -> None:
    """Over HTTP, readers of a session run here share one fan-out; when all hang up, no task is left."""
    sid = await runner.create()
    fanouts: Fanouts = app.state.fanouts
    seen: list[int] = []

    def has_four(messages: list[Message]) -> bool:
        seen.append(len(fanouts))
        return sum(m.id is not None for m in messages) >= 4

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        readers = [
            asyncio.create_task(read_stream(client, f"/api/sessions/{sid}/stream?after={after}", has_four))
            for after in (0, 1, 1)
        ]
        await asyncio.sleep(0.3)
        for n in range(6):
            await runner.emit(sid, "codex-t1", Output(stream="stdout", line=f"line {n}"), "t1")
        got = await asyncio.wait_for(asyncio.gather(*readers), 10)
        for _ in range(100):  # the server sees the hang-ups a moment later, then the task ends
            if not len(fanouts) and not fanout_tasks():
                break
            await asyncio.sleep(0.05)
        left = (len(fanouts), fanout_tasks())
    assert [[m.id for m in r][:4] for r in got] == [[1, 2, 3, 4], [2, 3, 4, 5], [2, 3, 4, 5]]
    assert {1} == set(seen)
    assert left == (0, [])
