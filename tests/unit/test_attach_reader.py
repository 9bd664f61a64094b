"""``Attached`` (``orchestrator/runtime/attach.py``): the attach reader, on a socket pair instead of an engine.

The test plays the engine: it writes multiplexed frames into one end of a socket pair and closes it
as an exiting container's attach does; ``runs_on`` is the engine's answer to "does it still run?".
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.errors import ContainerNotFound
from orchestrator.runtime import LogLine
from orchestrator.runtime.attach import Attached
from orchestrator.runtime.pipe import End, Item, Pipe
from orchestrator.runtime.runs import lines_of

ID = "c" * 64


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">B3xL", kind, len(payload)) + payload


def exited(clean: bool) -> bool:
    return False


@pytest.fixture
def engine() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the engine's end, the runtime's end)."""
    ours, theirs = socket.socketpair()
    yield theirs, ours
    theirs.close()


def reader(sock: socket.socket, runs_on: Callable[[bool], bool] = exited, **bounds: float) -> Attached:
    attached = Attached(ID, sock, b"", runs_on, **bounds)  # type: ignore[arg-type]
    attached.start()
    return attached


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def drain(pipe: Pipe, first: list[Item]) -> tuple[list[LogLine], Item]:
    """Every line until the reader's last item (an ``End`` or an error), which is returned too."""
    lines: list[LogLine] = []
    items = first
    while True:
        for item in items:
            if isinstance(item, list):
                lines += lines_of(item)
            else:
                return lines, item
        items = await pipe.take()


async def test_lines_read_before_the_claim_are_kept_and_the_rest_follows(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """Output before the first stream waits for it; after the exit, the tail without newline comes last."""
    theirs, ours = engine
    attached = reader(ours)
    written = frame(1, b"one\ntw") + frame(2, b"err\n")
    theirs.sendall(written)
    await until(lambda: attached.kept == len(written))
    pipe = Pipe(asyncio.get_running_loop())
    first = attached.claim(pipe)
    assert first is not None
    theirs.sendall(frame(1, b"o\nthree\nno newline"))
    theirs.close()
    lines, last = await drain(pipe, first)
    assert [(line.stream, line.text) for line in lines] == [("stdout", "one"), ("stderr", "err"), ("stdout", "two"), ("stdout", "three"),
            ("stdout", "no newline")]  # fmt: skip
    assert last == End()
    assert [line.time_ns for line in lines] == sorted(line.time_ns for line in lines)
    await until(lambda: attached.finished)


async def test_an_unclaimed_reader_over_its_bound_is_dropped_and_never_blocks_the_writer(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """Past its bound nobody waits for it: the socket closes (the writer is not held up), the claim fails."""
    theirs, ours = engine
    attached = reader(ours, unclaimed_bytes=100_000)
    theirs.settimeout(5)
    with pytest.raises(OSError):  # the reader hung up: the engine's writes fail instead of blocking
        for _ in range(10_000):
            theirs.sendall(frame(1, b"line\n" * 1000))
    await until(lambda: attached.finished)
    assert attached.claim(Pipe(asyncio.get_running_loop())) is None


async def test_an_unclaimed_reader_past_its_deadline_is_dropped_even_in_silence(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """A container that prints once and then says nothing: nobody claims it, the reader goes after the deadline."""
    theirs, ours = engine
    attached = reader(ours, unclaimed_s=0.3)
    theirs.sendall(frame(1, b"hello\n"))
    await until(lambda: attached.finished)
    assert (attached.unclaimed, attached.claim(Pipe(asyncio.get_running_loop()))) == (False, None)


async def test_a_connection_that_breaks_while_the_container_runs_on_says_what_was_read(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """The stream ends with the lines counted per stream; the partial line is left to the stored log."""
    theirs, ours = engine
    asked: list[bool] = []

    def running(clean: bool) -> bool:
        asked.append(clean)
        return True

    attached = reader(ours, running)
    pipe = Pipe(asyncio.get_running_loop())
    first = attached.claim(pipe)
    assert first == []
    theirs.sendall(frame(1, b"a\nb\npartial") + frame(2, b"e\n"))
    theirs.close()
    lines, last = await drain(pipe, [])
    assert (["a", "b", "e"], End(resume={"stdout": 2, "stderr": 1}), [True]) == (
        [line.text for line in lines],
        last,
        asked,
    )


async def test_the_engines_error_after_the_end_goes_to_the_consumer(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """The container was removed meanwhile: the stream gets ``ContainerNotFound``, after the lines before it."""
    theirs, ours = engine

    def removed(clean: bool) -> bool:
        raise ContainerNotFound("no container")

    attached = reader(ours, removed)
    pipe = Pipe(asyncio.get_running_loop())
    attached.claim(pipe)
    theirs.sendall(frame(1, b"last words\n"))
    theirs.close()
    lines, last = await drain(pipe, [])
    assert [line.text for line in lines] == ["last words"]
    assert isinstance(last, ContainerNotFound)


async def test_a_consumer_that_leaves_ends_the_thread_while_the_container_runs(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """``leave`` closes the connection of a silent, running container; the thread ends at once."""
    theirs, ours = engine
    attached = reader(ours)
    attached.claim(Pipe(asyncio.get_running_loop()))
    attached.leave()
    await until(lambda: attached.finished, timeout_s=1)
    assert theirs.recv(10) == b""  # the engine sees the hang-up


async def test_closing_ends_a_claimed_stream_and_drops_an_unclaimed_one(
    engine: tuple[socket.socket, socket.socket],
) -> None:
    """The runtime closes: its open streams end (with ``End``), unclaimed readers go, threads end."""
    theirs, ours = engine
    other_theirs, other_ours = socket.socketpair()
    claimed, unclaimed = reader(ours), reader(other_ours)
    pipe = Pipe(asyncio.get_running_loop())
    claimed.claim(pipe)
    theirs.sendall(frame(1, b"up\n"))
    first = await pipe.take()
    for attached in (claimed, unclaimed):
        attached.close()
    lines, last = await drain(pipe, first)
    await until(lambda: claimed.finished and unclaimed.finished, timeout_s=1)
    other_theirs.close()
    assert (["up"], End()) == ([line.text for line in lines], last)
    assert unclaimed.claim(Pipe(asyncio.get_running_loop())) is None
