"""``DockerRuntime`` on a real engine: what the contract cannot show on the fake.

Re-attach from a fresh process, volume (100k lines), long lines, separate streams, long silences,
early cancellation, and an engine that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.errors import ContainerNotFound, DockerUnavailable, RuntimeFailure
from orchestrator.runtime import SESSION_LABEL, WORKER_LABEL, LogLine
from orchestrator.runtime.docker import DockerRuntime
from tests.integration.hardened import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path, images["base"])
    try:
        yield box
    finally:
        await box.cleanup()


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
        rest = [line async for line in fresh.stream(container_id, since_ns=first[-1].time_ns)]
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
