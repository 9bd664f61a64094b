"""``batched``: a stream of lines as batches of what is ready, for runtimes that read line by line;
``unbatched``: the other way, ``stream`` made from ``stream_batches``.

``BATCH`` is the largest batch any runtime's ``stream_batches`` hands out (the loop runs between two).

A pump task reads the lines ahead (at most ``4 * size`` waiting); each batch is what it had read
when the consumer asked, at most ``size`` lines and never empty, in order. The source's error comes
after the lines it yielded before it; closing the batches closes the source.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from orchestrator.runtime.spec import LogLine

BATCH = 2048  # lines (~2 ms of a consumer's work): a burst must not keep the event loop from its other tasks longer


class _Done:
    """The source is exhausted."""


async def batched(lines: AsyncIterator[LogLine], size: int = BATCH) -> AsyncGenerator[list[LogLine], None]:
    """``lines`` grouped as they become ready; see the module docstring."""
    queue: asyncio.Queue[LogLine | _Done | Exception] = asyncio.Queue(maxsize=4 * size)

    async def pump() -> None:
        try:
            async for line in lines:
                await queue.put(line)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(err)
            return
        await queue.put(_Done())

    task = asyncio.create_task(pump(), name="batched-lines")
    try:
        while True:
            batch: list[LogLine] = []
            item = await queue.get()
            while isinstance(item, LogLine):
                batch.append(item)
                if len(batch) >= size or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield batch
            if isinstance(item, Exception):
                raise item
            if isinstance(item, _Done):
                return
            await asyncio.sleep(0)  # let the pump (and the rest of the loop) run between batches
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()


async def unbatched(batches: AsyncGenerator[list[LogLine], None]) -> AsyncGenerator[LogLine, None]:
    """The lines of ``batches`` one by one (closing this closes ``batches``)."""
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for line in batch:
                yield line
