"""``Pipe``: runs of lines from reader threads to the event loop, bounded.

A reader thread ``put``s a list of ``LineRun`` (or an ``End``, or the error it met); the loop
``take``s everything buffered at once. When more than ``limit`` lines wait, ``put`` blocks: a slow
consumer makes its readers wait (and, through them, the container's output). ``close`` (the
consumer has gone) releases a blocked ``put``, which then returns False. ``handout`` turns what the
loop takes into the batches of runs a stream yields.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from orchestrator.runtime import runs
from orchestrator.runtime.batches import BATCH
from orchestrator.runtime.spec import LineRun, StreamName

PIPE_LIMIT = 8192  # lines buffered before the readers wait for the consumer


@dataclass(frozen=True, slots=True)
class End:
    """One reader's last item. ``resume``: its connection broke while the container ran on.

    Then the lines counted per stream were handed out already, and the rest is to be read from the
    engine's stored log, skipping that many lines of each stream.
    """

    resume: dict[StreamName, int] | None = None


Item = list[LineRun] | End | BaseException


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Pipe:
    """Reader threads -> event loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = PIPE_LIMIT) -> None:
        self._loop = loop
        self._limit = limit
        self._items: deque[Item] = deque()
        self._lines = 0
        self._cond = threading.Condition()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, item: Item) -> bool:
        """Thread side: hand over (non-empty) runs, an ``End`` or an error. False once closed."""
        with self._cond:
            while self._lines >= self._limit and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            if isinstance(item, list):
                self._lines += runs.size(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)
        return True

    async def take(self) -> list[Item]:
        """Loop side: everything buffered, waiting for at least one item."""
        while True:
            with self._cond:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._lines = 0
                    self._cond.notify_all()
                    return items
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._waiter = waiter
            await waiter

    def close(self) -> None:
        """The consumer has gone: ``put`` refuses from now on (a blocked one returns False)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def keep_after(
    since_ns: int | None, skip: dict[StreamName, int] | None
) -> Callable[[list[LineRun]], list[LineRun]] | None:
    """The filter of a stored-log stream: lines after ``since_ns``, past ``skip`` lines per stream."""
    if since_ns is None and not skip:
        return None
    left: dict[StreamName, int] = dict(skip or {})

    def keep(batch: list[LineRun]) -> list[LineRun]:
        kept: list[LineRun] = []
        for run in batch:
            texts = run.texts
            skipped = min(left.get(run.stream, 0), len(texts))
            if skipped:
                left[run.stream] -= skipped
                texts = texts[skipped:]
            if texts and (since_ns is None or run.time_ns > since_ns):
                kept.append(run if len(texts) == len(run.texts) else LineRun(run.stream, texts, run.time_ns))
        return kept

    return keep


async def handout(
    pipe: Pipe,
    first: list[Item],
    readers: int,
    ends: list[End],
    keep: Callable[[list[LineRun]], list[LineRun]] | None = None,
) -> AsyncGenerator[list[LineRun], None]:
    """Runs from ``first`` then ``pipe`` until ``readers`` ends (noted in ``ends``); raises a reader's error.

    What one ``take`` brings is cut into batches of at most ``BATCH`` lines, and the loop
    runs between two batches: a burst must not starve the flusher and the SSE readers.
    """
    items, ended, handed = first, 0, False
    while True:
        taken: list[LineRun] = []
        error: BaseException | None = None
        for item in items:
            if isinstance(item, list):
                taken += item if keep is None else keep(item)
            elif isinstance(item, End):
                ended += 1
                ends.append(item)
            else:
                error = item
                break
        for batch in runs.cut(taken, BATCH):
            if handed:
                await asyncio.sleep(0)
            handed = True
            yield batch
        if error is not None:
            raise error
        if ended >= readers:
            return
        items = await pipe.take()
