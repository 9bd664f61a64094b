"""The ``Runtime`` contract (``orchestrator/runtime/protocol.py``), on the fake and on Docker alike."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.errors import ContainerNotFound, ImageMissing, RuntimeFailure
from orchestrator.runtime import LogLine
from orchestrator.runtime.batches import BATCH
from orchestrator.runtime.runs import lines_of, size
from tests.contract.conftest import TEST_LABEL, Harness, Program

TALK = Program(lines=(("stdout", "o1"), ("stderr", "e1"), ("stdout", "o2"), ("stderr", "e2")), exit_code=3)


async def collect(harness: Harness, container_id: str, since_ns: int | None = None) -> list[LogLine]:
    return [line async for line in harness.runtime.stream(container_id, since_ns)]


async def collect_batches(
    harness: Harness, container_id: str, since_ns: int | None = None
) -> list[list[LogLine]]:
    return [batch async for batch in harness.runtime.stream_batches(container_id, since_ns)]


def texts(lines: list[LogLine], stream: str) -> list[str]:
    return [line.text for line in lines if line.stream == stream]


async def test_lines_arrive_per_stream_in_order_with_the_exit(harness: Harness) -> None:
    """stdout and stderr stay apart and in order; the exit code comes with its reason."""
    container_id = await harness.runtime.start(harness.spec(TALK))
    lines = await collect(harness, container_id)
    actual = await harness.runtime.wait(container_id, timeout_s=30)
    assert (texts(lines, "stdout"), texts(lines, "stderr")) == (["o1", "o2"], ["e1", "e2"])
    assert (actual.exit_code, actual.oom_killed, actual.reason) == (3, False, "crashed")


async def test_a_clean_exit_is_finished(harness: Harness) -> None:
    """Exit 0 without our asking is ``finished``."""
    container_id = await harness.runtime.start(harness.spec(Program(lines=(("stdout", "ok"),))))
    actual = await harness.runtime.wait(container_id, timeout_s=30)
    assert (actual.exit_code, actual.reason) == (0, "finished")


async def test_output_is_kept_for_a_late_or_second_reader(harness: Harness) -> None:
    """A stream opened after the exit, or twice, still gets every line (each stream in its order).

    The times may differ between the two (Docker: the first reads the attach, stamped on receipt).
    """
    container_id = await harness.runtime.start(harness.spec(TALK))
    await harness.runtime.wait(container_id, timeout_s=30)
    first = await collect(harness, container_id)
    second = await collect(harness, container_id)
    assert len(first) == 4
    for stream in ("stdout", "stderr"):
        assert texts(first, stream) == texts(second, stream)


async def test_since_continues_after_a_line_without_repeating_it(harness: Harness) -> None:
    """``since_ns`` = the time of the last line read: only later lines come again."""
    program = Program(lines=tuple(("stdout", f"line{i}") for i in range(6)), every_s=0.05)
    container_id = await harness.runtime.start(harness.spec(program))
    await harness.runtime.wait(container_id, timeout_s=30)
    live = await collect(
        harness, container_id
    )  # the first reader: on Docker, the live attach (receipt times)
    everything = await collect(harness, container_id)  # a later one: the stored log and its times
    rest = await collect(harness, container_id, since_ns=everything[2].time_ns)
    assert [line.text for line in rest] == ["line3", "line4", "line5"]
    for read in (live, everything):
        assert read == sorted(read, key=lambda line: line.time_ns)


async def test_a_last_line_without_newline_is_flushed(harness: Harness) -> None:
    """Output that ends without a newline still arrives as a last line."""
    program = Program(lines=(("stdout", "first"),), partial="no newline ünï")
    container_id = await harness.runtime.start(harness.spec(program))
    lines = await collect(harness, container_id)
    assert texts(lines, "stdout") == ["first", "no newline ünï"]


async def test_batches_carry_the_lines_of_stream_in_order_never_empty_at_most_batch(harness: Harness) -> None:
    """``stream_batches`` gives what ``stream`` gives, in order, stdout and stderr apart, in batches of 1..BATCH."""
    program = Program(
        lines=tuple(("stderr" if i % 3 == 2 else "stdout", f"line{i}") for i in range(600)), partial="tail"
    )
    container_id = await harness.runtime.start(harness.spec(program))
    batches = await collect_batches(harness, container_id)
    again = await collect(harness, container_id)
    lines = [line for batch in batches for line in batch]
    expected_out = [f"line{i}" for i in range(600) if i % 3 != 2] + ["tail"]
    expected_err = [f"line{i}" for i in range(600) if i % 3 == 2]
    assert (expected_out, expected_err) == (texts(lines, "stdout"), texts(lines, "stderr"))
    assert (texts(again, "stdout"), texts(again, "stderr")) == (expected_out, expected_err)
    assert all(0 < len(batch) <= BATCH for batch in batches)
    for stream in ("stdout", "stderr"):
        times = [line.time_ns for line in lines if line.stream == stream]
        assert times == sorted(times)


async def test_runs_carry_the_lines_of_stream_exactly_one_stream_and_one_time_each(harness: Harness) -> None:
    """``stream_runs`` gives what ``stream`` gives, as runs: never empty, at most ``BATCH`` lines a batch."""
    program = Program(
        lines=tuple(("stderr" if i % 5 == 4 else "stdout", f"run{i}") for i in range(300)), partial="tail"
    )
    container_id = await harness.runtime.start(harness.spec(program))
    batches = [batch async for batch in harness.runtime.stream_runs(container_id)]
    again = await collect(harness, container_id)
    lines = [line for batch in batches for line in lines_of(batch)]
    assert (texts(lines, "stdout"), texts(lines, "stderr")) == (
        texts(again, "stdout"),
        texts(again, "stderr"),
    )
    assert texts(lines, "stdout")[-1] == "tail" and len(lines) == 301
    assert all(batch and all(run.texts for run in batch) and size(batch) <= BATCH for batch in batches)
    for stream in ("stdout", "stderr"):
        times = [line.time_ns for line in lines if line.stream == stream]
        assert times == sorted(times)


async def test_batches_after_since_repeat_nothing(harness: Harness) -> None:
    """``stream_batches(since_ns)`` = the lines after that time only, as ``stream`` does.

    How they are grouped depends on when the reader threads hand them over; no batch is empty.
    """
    program = Program(lines=tuple(("stdout", f"line{i}") for i in range(6)), every_s=0.05)
    container_id = await harness.runtime.start(harness.spec(program))
    await harness.runtime.wait(container_id, timeout_s=30)
    await collect(harness, container_id)  # the first reader: on Docker, the live attach (receipt times)
    everything = await collect(harness, container_id)  # a later one: the stored log and its times
    rest = await collect_batches(harness, container_id, since_ns=everything[2].time_ns)
    assert [line.text for batch in rest for line in batch] == ["line3", "line4", "line5"]
    assert all(rest)


async def test_wait_times_out_while_running_then_stop_ends_it(harness: Harness) -> None:
    """``wait(timeout)`` raises TimeoutError and leaves it running; ``stop`` ends it (143, stopped)."""
    container_id = await harness.runtime.start(harness.spec(Program(lines=(("stdout", "up"),), hang=True)))
    with pytest.raises(TimeoutError):
        await harness.runtime.wait(container_id, timeout_s=0.3)
    assert (await harness.runtime.inspect(container_id)).running
    started = time.monotonic()
    await harness.runtime.stop(container_id, grace_s=5)
    actual = await harness.runtime.wait(container_id, timeout_s=30)
    assert time.monotonic() - started < 4, "SIGTERM must end it before the grace runs out"
    assert (actual.exit_code, actual.reason) == (143, "stopped")
    await harness.runtime.stop(container_id, grace_s=1)  # stopping a stopped container is fine


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(harness: Harness) -> None:
    """SIGTERM ignored: SIGKILL after the grace, exit 137, still ``stopped`` (we asked)."""
    container_id = await harness.runtime.start(harness.spec(Program(hang=True, ignore_term=True)))
    started = time.monotonic()
    await harness.runtime.stop(container_id, grace_s=1)
    actual = await harness.runtime.wait(container_id, timeout_s=30)
    assert time.monotonic() - started >= 0.9
    assert (actual.exit_code, actual.reason) == (137, "stopped")


async def test_kill_is_immediate(harness: Harness) -> None:
    """``kill``: SIGKILL now, exit 137, reason ``killed``; killing again is fine."""
    container_id = await harness.runtime.start(harness.spec(Program(hang=True, ignore_term=True)))
    await harness.runtime.kill(container_id)
    actual = await harness.runtime.wait(container_id, timeout_s=30)
    assert (actual.exit_code, actual.reason) == (137, "killed")
    await harness.runtime.kill(container_id)


async def test_pause_holds_the_output_and_unpause_resumes_it(harness: Harness) -> None:
    """A paused container prints nothing; unpaused, it goes on to the end."""
    program = Program(lines=tuple(("stdout", f"tick{i}") for i in range(12)), every_s=0.1)
    container_id = await harness.runtime.start(harness.spec(program))
    seen: list[str] = []

    async def read() -> None:
        seen.extend([line.text async for line in harness.runtime.stream(container_id)])

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)
    await harness.runtime.pause(container_id)
    assert (await harness.runtime.inspect(container_id)).status == "paused"
    await asyncio.sleep(0.5)  # lines already in flight land now
    held = len(seen)
    await asyncio.sleep(0.8)
    assert held == len(seen), "a paused container printed"
    await harness.runtime.unpause(container_id)
    await asyncio.wait_for(reader, 30)
    assert [f"tick{i}" for i in range(12)] == seen


async def test_out_of_memory_is_reported(harness: Harness) -> None:
    """A process over its memory limit is killed; the exit says ``oom``."""
    container_id = await harness.runtime.start(harness.spec(Program(oom=True), memory_mib=48))
    actual = await harness.runtime.wait(container_id, timeout_s=60)
    assert (actual.oom_killed, actual.reason, actual.exit_code) == (True, "oom", 137)


async def test_find_by_labels_and_inspect(harness: Harness) -> None:
    """``find`` lists containers (any state) carrying all the labels; ``inspect`` gives the state."""
    running = await harness.runtime.start(
        harness.spec(Program(hang=True), labels={"orchestrator.worker": "a"})
    )
    done = await harness.runtime.start(
        harness.spec(Program(exit_code=2), labels={"orchestrator.worker": "b"})
    )
    await harness.runtime.wait(done, timeout_s=30)
    found = await harness.runtime.find({TEST_LABEL: harness.run_id})
    only_b = await harness.runtime.find({TEST_LABEL: harness.run_id, "orchestrator.worker": "b"})
    assert {running, done} == {info.id for info in found}
    assert [(done, "exited", 2)] == [(i.id, i.status, i.exit_code) for i in only_b]
    assert (await harness.runtime.inspect(running)).running
    assert await harness.runtime.find({TEST_LABEL: "no-such-run"}) == []


async def test_remove_takes_running_containers_and_ignores_missing_ones(harness: Harness) -> None:
    """``remove`` works on a running container; removing twice is fine; then it is not found."""
    container_id = await harness.runtime.start(harness.spec(Program(hang=True)))
    await harness.runtime.remove(container_id)
    await harness.runtime.remove(container_id)
    with pytest.raises(ContainerNotFound):
        await harness.runtime.inspect(container_id)
    with pytest.raises(ContainerNotFound):
        await harness.runtime.wait(container_id)
    with pytest.raises(ContainerNotFound):
        await harness.runtime.stop("0" * 64)


async def test_a_missing_image_is_image_missing(harness: Harness) -> None:
    """An image that is not built: ``ImageMissing`` (exit 5), nothing left behind."""
    with pytest.raises(ImageMissing) as caught:
        await harness.runtime.start(harness.spec(Program(), image="orchestrator-contract-missing:0"))
    assert caught.value.exit_code == 5
    assert await harness.runtime.find({TEST_LABEL: harness.run_id}) == []


async def test_a_taken_name_is_refused(harness: Harness) -> None:
    """Two containers cannot share a name."""
    name = harness.unique("twin")
    await harness.runtime.start(harness.spec(Program(hang=True), name=name))
    with pytest.raises(RuntimeFailure):
        await harness.runtime.start(harness.spec(Program(), name=name))


async def test_networks_are_idempotent_and_checked(harness: Harness) -> None:
    """``ensure_network`` twice is one network; a clash of kind is refused; a missing one too."""
    name = harness.unique("net")
    first = await harness.runtime.ensure_network(name, internal=True, labels={TEST_LABEL: harness.run_id})
    assert first == await harness.runtime.ensure_network(name, internal=True)
    with pytest.raises(RuntimeFailure):
        await harness.runtime.ensure_network(name, internal=False)
    container_id = await harness.runtime.start(harness.spec(Program(), network=name))
    assert (await harness.runtime.wait(container_id, timeout_s=30)).exit_code == 0
    await harness.runtime.remove(container_id)
    with pytest.raises(RuntimeFailure):
        await harness.runtime.start(harness.spec(Program(), network=harness.unique("other")))
    await harness.runtime.remove_network(name)
    await harness.runtime.remove_network(name)
