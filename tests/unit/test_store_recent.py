"""The writer's memory of its last durable events, and the group-commit flusher's timing rule.

In-process followers take new events from ``EventWriter.recent`` instead of re-reading the log;
what they get must be exactly what the log holds, whether they are live, far behind or both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.sse import to_sse
from orchestrator.log import Redactor
from orchestrator.models import AgentEvent, EventDraft, Output, SessionFinished
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter

pytestmark = pytest.mark.timeout(60)


def _out(i: int) -> EventDraft:
    return EventDraft.of("codex-t1", Output(stream="stdout", line=f"line {i} " + "é" * (i % 3)), "t1")


@pytest.fixture
def paths(tmp_path: Path) -> SessionPaths:
    return SessionPaths.of(tmp_path, "sess0001")


def test_recent_gives_the_durable_events_after_a_seq_as_the_log_stores_them(paths: SessionPaths) -> None:
    """Each ``Stored`` is the appended event, its line in the log, and the byte offset after it."""
    with EventWriter.open(paths) as writer:
        appended = [writer.append(_out(i)) for i in range(5)]
        assert writer.recent(0) == []  # buffered is not durable
        writer.flush()
        stored = writer.recent(2)
        assert stored is not None
        log = paths.events.read_bytes()
        assert [s.event for s in stored] == appended[2:]
        assert [s.event.seq for s in stored] == [3, 4, 5]
        for item in stored:
            line_start = log.rfind(b"\n", 0, item.end - 1) + 1
            assert log[line_start : item.end] == item.text.encode() + b"\n"
        assert writer.recent(5) == []
        assert writer.recent(99) == []


def test_recent_is_bounded_and_says_when_events_fell_out(paths: SessionPaths) -> None:
    """Past ``recent_events``, the oldest are dropped: asking from before them answers None."""
    with EventWriter.open(paths, recent_events=4) as writer:
        for i in range(10):
            writer.append(_out(i))
            writer.flush()
        assert writer.recent(5) is None  # seq 6 is gone
        found = writer.recent(6)
        assert found is not None
        assert [s.event.seq for s in found] == [7, 8, 9, 10]


def test_a_reopened_writer_remembers_nothing_but_knows_there_is_nothing_new(paths: SessionPaths) -> None:
    """After a reopen the memory is empty: older events come from the log (None), none are new ([])."""
    with EventWriter.open(paths) as writer:
        writer.append(_out(1))
    with EventWriter.open(paths) as writer:
        assert (writer.recent(0), writer.recent(1)) == (None, [])


def test_json_of_is_the_stored_line_for_every_event(paths: SessionPaths) -> None:
    """``json_of`` equals the line in the log, from memory or not, redacted events included."""
    redactor = Redactor(["hunter2-secret"])
    with EventWriter.open(paths, redactor=redactor, recent_events=2) as writer:
        for i in range(3):
            writer.append(_out(i))
        writer.emit("codex-t1", Output(stream="stderr", line="token hunter2-secret leaked"), "t1")
        writer.flush()
        lines = paths.events.read_bytes().decode().splitlines()
        events = list(EventReader(paths).read())
        in_memory = [s.event for s in writer.recent(2) or []]
        assert [writer.json_of(e) for e in in_memory] == lines[2:]
        assert [orjson.loads(writer.json_of(e)) for e in events] == [orjson.loads(x) for x in lines]
        assert "hunter2" not in lines[3]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
    keep=st.integers(min_value=1, max_value=40),
    start=st.floats(min_value=0, max_value=1),
)
def test_a_follower_gets_exactly_the_log_after_its_seq_whatever_it_remembers(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int], keep: int, start: float
) -> None:
    """For any batch sizes, memory bound and start: the follower's events are the log's, once, in order."""
    paths = SessionPaths.of(tmp_path_factory.mktemp("s"), "sess0001")
    after = int(start * sum(batches))  # before the final session_finished, which ends the follower

    async def scenario() -> list[AgentEvent]:
        writer = EventWriter.open(paths, recent_events=keep)
        got: list[AgentEvent] = []

        async def follow() -> None:
            async for event in EventReader(paths).follow(after=after, writer=writer, poll_s=5):
                got.append(event)
                if isinstance(event.data, SessionFinished):
                    return

        task = asyncio.create_task(follow())
        count = 0
        for size in batches:
            for _ in range(size):
                writer.append(_out(count))
                count += 1
            await writer.commit()
            await asyncio.sleep(0)
        writer.emit("orchestrator", SessionFinished(status="succeeded"))
        await writer.commit()
        await asyncio.wait_for(task, 5)
        writer.close()
        return got

    got = asyncio.run(scenario())
    expected = [e for e in EventReader(paths).read() if e.seq > after]
    assert [e.model_dump() for e in got] == [e.model_dump() for e in expected]


async def test_the_flusher_commits_an_event_after_a_quiet_spell_at_once(paths: SessionPaths) -> None:
    """The first event is durable without waiting ``interval_s``; the next waits out the interval."""
    writer = EventWriter.open(paths)
    flusher = asyncio.create_task(writer.run_flusher(interval_s=30.0))
    try:
        writer.append(_out(1))
        for _ in range(300):
            if writer.last_seq == 1:
                break
            await asyncio.sleep(0.01)
        assert writer.last_seq == 1
        writer.append(_out(2))
        await asyncio.sleep(0.3)
        assert (writer.last_seq, writer.pending) == (1, 1)  # grouped: at most one fsync per interval
    finally:
        flusher.cancel()
        writer.close()
    assert [e.seq for e in EventReader(paths).read()] == [1, 2]  # close flushed the rest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    runs=st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=4), min_size=1, max_size=12),
    flush_every=st.integers(min_value=1, max_value=5),
    keep=st.integers(min_value=1, max_value=20),
    after=st.integers(min_value=0, max_value=12),
)
def test_the_sse_messages_from_memory_are_the_log_s_lines_as_sse_starlette_writes_them(
    tmp_path_factory: pytest.TempPathFactory, runs: list[list[str]], flush_every: int, keep: int, after: int
) -> None:
    """Any text (non-ASCII too), any pages, any forgotten head: ``sse()`` is each kept line's message, in order."""
    paths = SessionPaths.of(tmp_path_factory.mktemp("s"), "sess0001")
    with EventWriter.open(paths, recent_events=keep) as writer:
        for number, lines in enumerate(runs, 1):
            writer.append_output("codex-t1", "t1", "stderr" if number % 2 else "stdout", lines)
            if number % flush_every == 0:
                writer.flush()
        writer.flush()
        kept = writer.recent(after)
        if kept is None:  # fell out of memory: the log serves
            assert after < writer.last_seq - keep
            return
        logged = {e.seq: e for e in EventReader(paths).read()}
        assert [s.seq for s in kept] == [seq for seq in logged if seq > after]
        assert [s.text for s in kept] == [logged[s.seq].model_dump_json() for s in kept]
        assert kept.sse() == b"".join(to_sse(s).encode() for s in kept)
