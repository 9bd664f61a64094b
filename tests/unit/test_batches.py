"""``batched`` (``orchestrator/runtime/batches.py``): a line stream as batches of what is ready."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from orchestrator.runtime import LogLine
from orchestrator.runtime.batches import batched


async def source(count: int, *, pause_every: int = 0, error: Exception | None = None,
                 closed: list[bool] | None = None) -> AsyncGenerator[LogLine, None]:  # fmt: skip
    try:
        for number in range(count):
            if pause_every and number and not number % pause_every:
                await asyncio.sleep(0.01)  # the next lines are not ready yet
            yield LogLine("stdout", str(number), number)
        if error is not None:
            raise error
    finally:
        if closed is not None:
            closed.append(True)


async def test_batches_are_the_lines_in_order_never_empty_never_over_the_size() -> None:
    """1000 lines, ready in groups of 300: the same lines, in order, in non-empty batches of at most 64."""
    batches = [batch async for batch in batched(source(1000, pause_every=300), size=64)]
    assert [str(n) for n in range(1000)] == [line.text for batch in batches for line in batch]
    assert all(0 < len(batch) <= 64 for batch in batches)
    assert len(batches) < 1000 // 2  # grouped, not one line a batch


async def test_the_sources_error_comes_after_its_lines() -> None:
    """Lines before the error are handed out, then the error is raised."""
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="engine gone"):
        async for batch in batched(source(10, error=RuntimeError("engine gone"))):
            seen += [line.text for line in batch]
    assert [str(n) for n in range(10)] == seen


async def test_leaving_early_closes_the_source() -> None:
    """Closing the batches closes the line stream under them."""
    closed: list[bool] = []
    async with contextlib.aclosing(batched(source(10_000, pause_every=10, closed=closed))) as batches:
        async for _ in batches:
            break
    assert closed == [True]
