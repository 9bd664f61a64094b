"""The event store: durable, gap-free, torn-line tolerant, single-writer, snapshot + tail."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from orchestrator.errors import SessionLocked, SessionNotFound
from orchestrator.log import Redactor
from orchestrator.models import EventDraft, Message, Output, SessionCreated, SessionFinished, replay
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader, EventWriter, atomic_write

REPO_ROOT = Path(__file__).resolve().parents[2]


def _out(i: int, worker: str = "codex-t1") -> EventDraft:
    return EventDraft.of(worker, Output(stream="stdout", line=f"line {i}"), "t1")


@pytest.fixture
def paths(tmp_path: Path) -> SessionPaths:
    return SessionPaths.of(tmp_path, "sess0001")


def test_appended_events_get_gap_free_seqs_and_become_visible_after_flush(paths: SessionPaths) -> None:
    """The store alone assigns seq 1, 2, 3...; readers see nothing until the batch is fsynced."""
    with EventWriter.open(paths) as writer:
        writer.emit("orchestrator", SessionCreated(prompt="p", repo="/r"))
        for i in range(3):
            writer.append(_out(i))
        assert list(EventReader(paths).read()) == []
        assert writer.flush() == 4
    assert [e.seq for e in EventReader(paths).read()] == [1, 2, 3, 4]
    assert [e.seq for e in EventReader(paths).read(after=2)] == [3, 4]


def test_a_second_writer_is_refused_with_a_clear_error(paths: SessionPaths) -> None:
    """One writer per session: a second open fails naming the holder; after close it may open."""
    with EventWriter.open(paths), pytest.raises(SessionLocked, match=str(os.getpid())):
        EventWriter.open(paths)
    with EventWriter.open(paths) as again:
        assert again.last_seq == 0


def test_a_second_writer_in_another_process_is_refused(paths: SessionPaths) -> None:
    """The lock holds across processes."""
    code = textwrap.dedent(f"""
        import sys
        from orchestrator.errors import SessionLocked
        from orchestrator.paths import SessionPaths
        from orchestrator.store import EventWriter
        try:
            EventWriter.open(SessionPaths.of({str(paths.workspace)!r}, "sess0001"))
        except SessionLocked as err:
            print(err); sys.exit(7)
    """)
    with EventWriter.open(paths):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 7, result.stderr
    assert "being run by pid" in result.stdout


def test_a_torn_last_line_is_ignored_on_read_and_repaired_by_the_next_writer(paths: SessionPaths) -> None:
    """A crash mid-write leaves half a line: readers skip it, the writer truncates it and continues."""
    with EventWriter.open(paths) as writer:
        for i in range(3):
            writer.append(_out(i))
    with paths.events.open("ab") as handle:
        handle.write(b'{"seq":4,"ts":"2026-01-01T00:00:00Z","session_id":"sess0001","wor')
    assert [e.seq for e in EventReader(paths).read()] == [1, 2, 3]
    with EventWriter.open(paths) as writer:
        assert writer.append(_out(9)).seq == 4
    assert [e.seq for e in EventReader(paths).read()] == [1, 2, 3, 4]
    assert paths.events.read_bytes().endswith(b"}\n")


@pytest.mark.parametrize(
    "garbage", [b"not json at all", b'{"seq": "x"}', b"\xff\xfe\x00", b"[]", b'{"seq":2}']
)
def test_a_corrupt_line_in_the_middle_is_skipped_not_fatal(paths: SessionPaths, garbage: bytes) -> None:
    """A garbage line never raises: readers skip it and the rest of the log is served."""
    with EventWriter.open(paths) as writer:
        writer.append(_out(1))
    with paths.events.open("ab") as handle:
        handle.write(garbage + b"\n")
    with EventWriter.open(paths) as writer:
        writer.append(_out(2))
    assert [e.seq for e in EventReader(paths).read()] == [1, 2]
    assert EventReader(paths).state().last_seq == 2


def test_snapshot_plus_tail_equals_full_replay(paths: SessionPaths) -> None:
    """A snapshot every 100 events: rebuilding reads the tail only and equals folding everything."""
    with EventWriter.open(paths, snapshot_every=100) as writer:
        writer.emit("orchestrator", SessionCreated(prompt="p", repo="/r"))
        for i in range(349):
            writer.append(_out(i, worker=f"w{i % 3}"))
            if i % 7 == 0:
                writer.flush()
    reader = EventReader(paths)
    state, offset = reader.rebuild()
    assert paths.snapshot.exists()
    assert state == replay(reader.read())
    assert offset == paths.events.stat().st_size
    assert state.last_seq == 350


def test_a_snapshot_that_does_not_fit_the_log_is_not_trusted(paths: SessionPaths) -> None:
    """A stale or foreign snapshot falls back to a full fold instead of a wrong state."""
    with EventWriter.open(paths, snapshot_every=100) as writer:
        for i in range(150):
            writer.append(_out(i))
    snapshot = paths.snapshot.read_bytes()
    paths.events.unlink()
    with EventWriter.open(paths, snapshot_every=10_000) as writer:
        for i in range(20):
            writer.append(_out(i))
    atomic_write(paths.snapshot, snapshot)
    reader = EventReader(paths)
    assert reader.state() == replay(reader.read())


def test_the_writer_reopens_with_the_same_state_and_continues_the_seq(paths: SessionPaths) -> None:
    """Closing and reopening rebuilds the live state; seq continues from the last stored event."""
    with EventWriter.open(paths, snapshot_every=100) as writer:
        for i in range(250):
            writer.append(_out(i))
        writer.flush()
        before = writer.state.model_copy(deep=True)
    with EventWriter.open(paths, snapshot_every=100) as writer:
        assert writer.state == before
        assert writer.append(_out(0)).seq == 251


def test_concurrent_readers_see_a_gap_free_prefix_while_writing(paths: SessionPaths) -> None:
    """Readers polling while a writer appends in batches only ever see seq 1..n without holes."""
    writer = EventWriter.open(paths)
    writer.flush()
    seen: list[list[int]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seqs = [e.seq for e in EventReader(paths).read()]
            seen.append(seqs)
            assert seqs == list(range(1, len(seqs) + 1))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for batch in range(40):
        for i in range(25):
            writer.append(_out(batch * 25 + i))
        writer.flush()
    stop.set()
    for thread in threads:
        thread.join()
    writer.close()
    assert all(s == list(range(1, len(s) + 1)) for s in seen)
    assert len(list(EventReader(paths).read())) == 1000


def test_kill_9_mid_batch_loses_no_stored_event_and_leaves_no_half_event(paths: SessionPaths) -> None:
    """A writer process killed with SIGKILL while appending: reopen sees whole events, seq continues."""
    code = textwrap.dedent(f"""
        from orchestrator.models import EventDraft, Output
        from orchestrator.paths import SessionPaths
        from orchestrator.store import EventWriter
        w = EventWriter.open(SessionPaths.of({str(paths.workspace)!r}, "sess0001"))
        print("ready", flush=True)
        i = 0
        while True:
            for _ in range(500):
                w.append(EventDraft.of("codex-t1", Output(stream="stdout", line="x" * (i % 3000)), "t1"))
                i += 1
            w.flush()
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO_ROOT) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        while (
            not paths.events.exists() or paths.events.stat().st_size < 2_000_000
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stored = [e.seq for e in EventReader(paths).read()]
    assert stored == list(range(1, len(stored) + 1))
    assert len(stored) > 0
    with EventWriter.open(paths) as writer:
        assert writer.last_seq == len(stored)
        assert writer.append(_out(0)).seq == len(stored) + 1
    assert paths.events.read_bytes().endswith(b"\n")


def test_known_secrets_and_key_shapes_are_redacted_before_storing(paths: SessionPaths) -> None:
    """A registered secret value and an sk-ant- key never reach the file or the returned event."""
    redactor = Redactor(["hunter2-secret-value"])
    with EventWriter.open(paths, redactor=redactor) as writer:
        event = writer.append(EventDraft.of("claude-t1", Output(
            stream="stderr", line="key hunter2-secret-value and sk-ant-api03-abcdefghijklmnop"
        )))  # fmt: skip
    text = paths.events.read_text()
    assert "hunter2" not in text
    assert "sk-ant-api03" not in text
    assert isinstance(event.data, Output)
    assert event.data.line == "key [REDACTED] and [REDACTED]"


@pytest.mark.parametrize("secret", ['pass"word-42', "back\\slash-secret", "tab\tand\nnewline-secret"])
def test_a_secret_that_json_escapes_is_redacted_in_the_stored_event_too(
    paths: SessionPaths, secret: str
) -> None:
    """A registered value holding a quote, a backslash or a control character is found in the event's
    JSON, where it is escaped, and never reaches the file or the returned event."""
    redactor = Redactor([secret])
    with EventWriter.open(paths, redactor=redactor) as writer:
        event = writer.append(
            EventDraft.of("claude-t1", Message(role="assistant", text=f"the value is {secret}."))
        )
    stored = paths.events.read_text()
    assert secret not in stored and orjson.dumps(secret).decode()[1:-1] not in stored
    assert isinstance(event.data, Message)
    assert event.data.text == "the value is [REDACTED]."
    assert [e.data for e in EventReader(paths).read()] == [event.data]


def test_reading_a_session_that_does_not_exist_is_a_clear_error(paths: SessionPaths) -> None:
    """An unknown session is SessionNotFound naming it, for readers and for resume."""
    with pytest.raises(SessionNotFound, match="sess0001"):
        list(EventReader(paths).read())
    with pytest.raises(SessionNotFound):
        EventWriter.open(paths, create=False)


async def test_follow_yields_stored_events_then_new_ones_woken_by_the_writer(paths: SessionPaths) -> None:
    """A follower gets the backlog after a seq, then each new batch as it is committed."""
    writer = EventWriter.open(paths)
    for i in range(5):
        writer.append(_out(i))
    writer.flush()
    received: list[int] = []

    async def follow() -> None:
        async for event in EventReader(paths).follow(after=2, writer=writer, poll_s=5):
            received.append(event.seq)
            if isinstance(event.data, SessionFinished):
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    writer.append(_out(5))
    writer.emit("orchestrator", SessionFinished(status="succeeded"))
    await writer.commit()
    await asyncio.wait_for(task, timeout=3)
    writer.close()
    assert received == [3, 4, 5, 6, 7]


async def test_follow_without_an_in_process_writer_polls_the_file(paths: SessionPaths) -> None:
    """A reader in another process (no writer to wake it) still sees new events by polling."""
    writer = EventWriter.open(paths)
    writer.flush()
    received: list[int] = []

    async def follow() -> None:
        async for event in EventReader(paths).follow(poll_s=0.02):
            received.append(event.seq)
            if len(received) == 3:
                return

    task = asyncio.create_task(follow())
    for i in range(3):
        writer.append(_out(i))
        await writer.commit()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(task, timeout=3)
    writer.close()
    assert received == [1, 2, 3]


async def test_the_background_flusher_commits_batches(paths: SessionPaths) -> None:
    """``run_flusher`` makes appended events durable without explicit flushes (group commit)."""
    writer = EventWriter.open(paths)
    flusher = asyncio.create_task(writer.run_flusher(0.001))
    for i in range(100):
        writer.append(_out(i))
    for _ in range(200):
        if writer.last_seq == 100:
            break
        await asyncio.sleep(0.01)
    flusher.cancel()
    writer.close()
    assert len(list(EventReader(paths).read())) == 100
