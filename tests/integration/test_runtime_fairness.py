"""``DockerRuntime.stream`` hands out a burst of buffered lines without starving the event loop.

The group-commit flusher and the SSE readers run on the same loop as the consumer of a stream; if
thousands of buffered lines were handed out without a pause, they would wait until the burst ends
(and a live reader would fall far behind).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from orchestrator.runtime import LogLine
from orchestrator.runtime.docker import DockerRuntime
from tests.integration.hardened import Sandbox

LINES = 3000


@pytest.fixture
async def sandbox(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path, images["base"])
    try:
        yield box
    finally:
        await box.cleanup()


async def test_other_tasks_run_while_a_buffered_burst_is_handed_out(sandbox: Sandbox) -> None:
    """Between the first and the last line of one buffered burst, other tasks of the loop ran."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with DockerRuntime() as runtime:
        container_id = await runtime.start(sandbox.spec(f"seq 1 {LINES}; sleep 3"))
        seen: list[int] = []
        stream = cast(AsyncGenerator[LogLine, None], runtime.stream(container_id))
        async with contextlib.aclosing(stream) as lines:
            first = await anext(lines)
            await asyncio.sleep(1.5)  # the reader threads buffer the whole burst meanwhile
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            at_start = ticks
            async for line in lines:
                seen.append(int(line.text))
                if len(seen) == LINES - 1:
                    break
            task.cancel()
        await runtime.remove(container_id)
    assert [int(first.text), *seen] == list(range(1, LINES + 1))
    assert ticks - at_start >= (LINES - 1) // 256 - 1  # the loop ran about once per 256 lines at least
