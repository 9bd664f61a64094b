"""``DockerRuntime`` on a real engine: what the contract cannot show on the fake.

Re-attach from a fresh process, volume (100k lines), long lines, separate streams, long silences,
early cancellation, and an engine that is not there. Then the attach path (``attach.py``): which
reader serves a stream (attach for the first, the stored log otherwise), a character cut between
two writes, the tail of a container that exits at once, an attach nobody claims, and no thread or
socket left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import ContainerNotFound, DockerUnavailable, RuntimeFailure
from orchestrator.runtime import SESSION_LABEL, WORKER_LABEL, ContainerSpec, LogLine
from orchestrator.runtime.docker import DockerRuntime
from tests.integration.hardened import Sandbox


async def test_a_fresh_runtime_finds_the_container_and_continues_its_stream(sandbox: Sandbox) -> None:
    """After a restart: found by labels, streamed from the last line read, nothing lost or repeated."""
    script = "for i in $(seq 1 40); do echo line$i; sleep 0.05; done"
    first: list[LogLine] = []
    async with DockerRuntime() as before:  # the orchestrator that will "die"; the container runs on
        container_id = await before.start(sandbox.spec(script))
        async with contextlib.aclosing(before.stream(container_id)) as lines:
            async for line in lines:
                first.append(line)
                if len(first) == 10:
                    break

    async with DockerRuntime() as fresh:
        found = await fresh.find({SESSION_LABEL: sandbox.session_id, WORKER_LABEL: "probe-t1"})
        assert [(container_id, True)] == [(info.id, info.running) for info in found]
        # the cursor comes from the stored log: the live attach's times are receipt times (protocol)
        head: list[LogLine] = []
        async with contextlib.aclosing(fresh.stream(container_id)) as lines:
            async for line in lines:
                head.append(line)
                if len(head) == len(first):
                    break
        assert [line.text for line in head] == [line.text for line in first]
        rest = [line async for line in fresh.stream(container_id, since_ns=head[-1].time_ns)]
        exit_info = await fresh.wait(container_id, timeout_s=30)
    assert [f"line{i}" for i in range(1, 41)] == [line.text for line in first + rest]
    assert (exit_info.exit_code, exit_info.reason) == (0, "finished")


async def test_a_hundred_thousand_lines_arrive_complete_and_in_order(sandbox: Sandbox) -> None:
    """100k lines: every one, in order, none merged or split."""
    started = time.monotonic()
    run = await sandbox.run("seq 1 100000", timeout_s=120)
    elapsed = time.monotonic() - started
    print(f"100k lines in {elapsed:.2f} s ({100_000 / elapsed:,.0f} lines/s)")
    assert [str(i) for i in range(1, 100_001)] == run.out
    assert run.err == []


async def test_a_forty_kib_line_arrives_whole(sandbox: Sandbox) -> None:
    """A 40 KiB line (Docker cuts at 16 KiB, here inside a two-byte character) arrives as one line."""
    line = "x" + "é" * 20480  # 40,961 bytes: the 16 KiB cuts fall inside a character
    run = await sandbox.run(f'python3 -c \'print("before"); print("{line}"); print("after")\'')
    assert ["before", line, "after"] == run.out


async def test_stdout_and_stderr_are_kept_apart(sandbox: Sandbox) -> None:
    """Interleaved writes to both streams: each stream complete and in its own order."""
    run = await sandbox.run("for i in $(seq 1 500); do echo out$i; echo err$i >&2; done")
    assert [f"out{i}" for i in range(1, 501)] == run.out
    assert [f"err{i}" for i in range(1, 501)] == run.err


async def test_silence_longer_than_the_client_timeout_does_not_end_the_stream(sandbox: Sandbox) -> None:
    """An agent that thinks for longer than the HTTP timeout keeps its stream."""
    await sandbox.runtime.close()
    sandbox.runtime = DockerRuntime(timeout_s=1)
    run = await sandbox.run("echo before; sleep 2.5; echo after")
    assert run.out == ["before", "after"]


async def test_leaving_a_stream_early_frees_its_readers(sandbox: Sandbox) -> None:
    """Breaking out of a stream closes its reader threads; the container is untouched."""
    container_id = await sandbox.runtime.start(sandbox.spec("while :; do echo tick; sleep 0.05; done"))
    async with contextlib.aclosing(sandbox.runtime.stream(container_id)) as lines:
        async for _ in lines:
            break
    deadline = time.monotonic() + 5
    while any(t.name.startswith(f"logs-{container_id[:12]}") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "reader threads still alive"
        await asyncio.sleep(0.05)
    assert (await sandbox.runtime.inspect(container_id)).running


async def test_closing_the_runtime_ends_its_open_streams(sandbox: Sandbox) -> None:
    """``close`` ends the streams it serves (the container runs on); a closed runtime refuses work."""
    container_id = await sandbox.runtime.start(sandbox.spec("while :; do echo tick; sleep 0.05; done"))
    closing = sandbox.runtime
    sandbox.runtime = DockerRuntime()  # for the cleanup
    seen: list[str] = []

    async def read() -> None:
        seen.extend([line.text async for line in closing.stream(container_id)])

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.5)
    await closing.close()
    await asyncio.wait_for(reader, 5)
    assert seen
    assert (await sandbox.runtime.inspect(container_id)).running
    with pytest.raises(RuntimeFailure, match="closed"):
        await closing.inspect(container_id)


async def test_a_removed_container_is_not_found(sandbox: Sandbox) -> None:
    """Streaming or waiting on a removed container: ``ContainerNotFound`` (relaunch, do not re-attach)."""
    container_id = await sandbox.runtime.start(sandbox.spec("true"))
    await sandbox.runtime.remove(container_id)
    with pytest.raises(ContainerNotFound):
        [line async for line in sandbox.runtime.stream(container_id)]
    with pytest.raises(ContainerNotFound):
        await sandbox.runtime.wait(container_id)


@pytest.mark.parametrize("url", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
async def test_no_engine_is_docker_unavailable(url: str) -> None:
    """An engine that does not answer: ``DockerUnavailable`` (exit 5) with the fix in the message."""
    async with DockerRuntime(url, timeout_s=2) as runtime:
        with pytest.raises(DockerUnavailable) as caught:
            await runtime.ping()
    assert caught.value.exit_code == 5
    assert "scripts/docker-engine" in caught.value.message


def readers(container_id: str) -> set[str]:
    """The kinds of reader threads alive for the container: ``attach``, ``stdout``, ``stderr``."""
    prefix = f"logs-{container_id[:12]}-"
    return {t.name.removeprefix(prefix) for t in threading.enumerate() if t.name.startswith(prefix)}


async def read(runtime: DockerRuntime, container_id: str) -> tuple[list[LogLine], set[str]]:
    """Every line of a ``stream_batches``, and the readers that were alive at its first batch."""
    lines: list[LogLine] = []
    seen: set[str] = set()
    async for batch in runtime.stream_batches(container_id):
        seen = seen or readers(container_id)
        lines += batch
    return lines, seen


def texts(lines: list[LogLine], stream: str) -> list[str]:
    return [line.text for line in lines if line.stream == stream]


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def readers_end(container_id: str) -> None:
    await until(lambda: not readers(container_id))


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_a_fresh_container_is_read_through_its_attach_and_a_second_stream_through_the_log(
    sandbox: Sandbox,
) -> None:
    """100k lines through the attach, whole and in order; a second stream reads the stored log, same lines.

    (The container lingers a moment so that its attach reader is still there to be seen.)
    """
    container_id = await sandbox.runtime.start(sandbox.spec("seq 1 100000; sleep 0.5; echo done >&2"))
    started = time.monotonic()
    first: list[LogLine] = []
    first_readers: set[str] = set()
    async for batch in sandbox.runtime.stream_batches(container_id):
        first_readers = first_readers or readers(container_id)
        first += batch
        if batch[-1].text == "100000":
            elapsed = time.monotonic() - started
    print(f"attach: 100k lines in {elapsed:.3f} s ({100_000 / elapsed:,.0f} lines/s)")
    second, second_readers = await read(sandbox.runtime, container_id)
    expected = ([str(i) for i in range(1, 100_001)], ["done"])
    for lines in (first, second):
        assert expected == (texts(lines, "stdout"), texts(lines, "stderr"))
    assert (first_readers, second_readers) == ({"attach"}, {"stdout", "stderr"})
    times = [line.time_ns for line in first]
    assert times == sorted(times), "attach times never go back"


async def test_a_character_cut_between_two_writes_is_intact(sandbox: Sandbox) -> None:
    """The first byte of \"é\" in one write (one frame), the second in the next: one intact line."""
    script = (
        "import sys, time\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'caf\\xc3'); out.flush(); time.sleep(0.2)\n"
        "out.write(b'\\xa9 ok\\n'); out.flush()\n"
    )
    run = await sandbox.run(f"python3 -c {shlex.quote(script)}")
    assert run.out == ["café ok"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("echo only", ["only"]),
        ("true", []),
        ("printf 'no newline'", ["no newline"]),
        ("seq 1 50000; printf tail", [*map(str, range(1, 50_001)), "tail"]),
    ],
)
async def test_the_tail_of_a_container_that_exits_at_once_arrives_whole(
    sandbox: Sandbox, script: str, expected: list[str]
) -> None:
    """Whatever was written before the exit comes, a last line without newline too."""
    container_id = await sandbox.runtime.start(sandbox.spec(script))
    lines, _ = await read(sandbox.runtime, container_id)
    assert expected == [line.text for line in lines]


async def test_an_attach_nobody_claims_never_blocks_the_container_and_the_log_has_every_line(
    sandbox: Sandbox,
) -> None:
    """10 MB nobody reads: the attach goes past its bound, the container exits; a later stream gets it all."""
    script = 'python3 -c \'import sys; [print(f"{i:08d} " + "y" * 90) for i in range(100000)]\''
    container_id = await sandbox.runtime.start(sandbox.spec(script))
    exit_info = await sandbox.runtime.wait(container_id, timeout_s=60)
    await until(lambda: not readers(container_id))
    lines, seen = await read(sandbox.runtime, container_id)
    assert exit_info.exit_code == 0
    assert seen == {"stdout", "stderr"}
    assert [f"{i:08d} " + "y" * 90 for i in range(100_000)] == [line.text for line in lines]


async def test_remove_stop_leave_and_close_end_every_reader_thread_and_socket(sandbox: Sandbox) -> None:
    """Unclaimed then removed, claimed then left, stopped, and at ``close`` one read and one not:
    every attach reader ends, and once closed the runtime holds no thread or socket any more."""
    attempts = itertools.count(1)

    def ticking() -> ContainerSpec:
        return sandbox.spec("while :; do echo tick; sleep 0.05; done", attempt=next(attempts))

    threads, fds = threading.active_count(), open_fds()
    runtime = DockerRuntime()
    for _ in range(3):
        removed = await runtime.start(ticking())
        assert readers(removed) == {"attach"}
        await runtime.remove(removed)
        left = await runtime.start(ticking())
        async with contextlib.aclosing(runtime.stream_batches(left)) as batches:
            async for _ in batches:
                break
        stopped = await runtime.start(ticking())
        await runtime.stop(stopped, grace_s=1)
        for container_id in (removed, left, stopped):
            await readers_end(container_id)
        await runtime.remove(left)
        await runtime.remove(stopped)
    unread, read_at_close = await runtime.start(ticking()), await runtime.start(ticking())
    seen: list[LogLine] = []

    async def consume() -> None:
        async for line in runtime.stream(read_at_close):
            seen.append(line)

    reader = asyncio.create_task(consume())
    await until(lambda: bool(seen))
    await runtime.close()
    await asyncio.wait_for(reader, 5)  # the open stream ended
    await until(lambda: not readers(unread) and not readers(read_at_close))
    await until(lambda: threading.active_count() == threads)
    assert open_fds() == fds
