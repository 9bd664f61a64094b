"""``DockerRuntime.stream`` and ``stream_batches`` hand out a buffered burst without starving the event loop.

The group-commit flusher and the SSE readers run on the same loop as the consumer of a stream; if
thousands of buffered lines were handed out without a pause, they would wait until the burst ends
(and a live reader would fall far behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from orchestrator.runtime.batches import BATCH
from orchestrator.runtime.docker import DockerRuntime
from tests.integration.hardened import Sandbox

LINES = 5 * BATCH + 100


class Ticks:
    """How many turns another task of the loop got: ``run`` counts one per turn, forever."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


async def test_other_tasks_run_while_a_buffered_burst_is_handed_out(sandbox: Sandbox) -> None:
    """Between the first and the last line of one buffered burst, other tasks of the loop ran."""
    ticks = Ticks()
    async with DockerRuntime() as runtime:
        container_id = await runtime.start(sandbox.spec(f"seq 1 {LINES}; sleep 3"))
        seen: list[int] = []
        stream = runtime.stream(container_id)
        async with contextlib.aclosing(stream) as lines:
            first = await anext(lines)
            await asyncio.sleep(1.5)  # the reader threads buffer the whole burst meanwhile
            task = asyncio.create_task(ticks.run())
            await asyncio.sleep(0)
            at_start = ticks.count
            async for line in lines:
                seen.append(int(line.text))
                if len(seen) == LINES - 1:
                    break
            task.cancel()
        await runtime.remove(container_id)
    assert [int(first.text), *seen] == list(range(1, LINES + 1))
    assert ticks.count - at_start >= (LINES - 1) // BATCH - 1  # the loop ran about once per batch at least


async def test_the_loop_runs_between_any_two_batches_of_a_buffered_burst(sandbox: Sandbox) -> None:
    """``stream_batches``: the burst comes in batches of at most ``BATCH`` lines, other tasks run between any two."""
    ticks = Ticks()
    async with DockerRuntime() as runtime:
        container_id = await runtime.start(sandbox.spec(f"seq 1 {LINES}; sleep 3"))
        sizes: list[int] = []
        ticks_at: list[int] = []
        async with contextlib.aclosing(runtime.stream_batches(container_id)) as batches:
            first = await anext(batches)
            seen = [int(line.text) for line in first]
            await asyncio.sleep(1.5)  # the reader buffers the whole burst meanwhile
            task = asyncio.create_task(ticks.run())
            await asyncio.sleep(0)
            async for batch in batches:
                ticks_at.append(ticks.count)
                sizes.append(len(batch))
                seen += [int(line.text) for line in batch]
                if len(seen) == LINES:
                    break
            task.cancel()
        await runtime.remove(container_id)
    assert list(range(1, LINES + 1)) == seen
    assert all(0 < size <= BATCH for size in [len(first), *sizes])
    assert all(before < after for before, after in itertools.pairwise(ticks_at)), (
        "a batch followed another at once"
    )
