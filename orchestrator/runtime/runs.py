"""Runs of lines (``LineRun``): consecutive lines of one stream that share one time.

A runtime that reads a container's output a chunk at a time (Docker's attach) makes one run of each
stream's lines of a chunk: the consumer stores and parses a run at once, and no tuple is made per
line. Every runtime hands runs out through ``stream_runs``: the lines of ``stream_batches``, in the
same order, as runs (``runs_of``); ``lines_of`` makes lines of runs again, exactly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from itertools import repeat

from orchestrator.runtime.spec import LineRun, LogLine, StreamName


def runs_of(lines: Iterable[LogLine]) -> list[LineRun]:
    """``lines`` as runs: a new run wherever the stream or the time changes."""
    runs: list[LineRun] = []
    texts: list[str] = []
    current: tuple[str, int] | None = None
    for stream, text, time_ns in lines:
        if (stream, time_ns) != current:
            texts = []
            runs.append(LineRun(stream, texts, time_ns))
            current = (stream, time_ns)
        texts.append(text)
    return runs


def lines_of(runs: Iterable[LineRun]) -> list[LogLine]:
    """The lines of ``runs``, in order, each with its run's stream and time."""
    lines: list[LogLine] = []
    for stream, texts, time_ns in runs:
        lines += map(_new_tuple, repeat(LogLine), zip(repeat(stream), texts, repeat(time_ns)))
    return lines


def by_stream(runs: Iterable[LineRun]) -> list[tuple[StreamName, list[str]]]:
    """The texts of each stretch of consecutive runs of one stream, their times dropped.

    A stored log stamps every line apart (one run per line); a consumer that stores or parses a
    stream's lines together, whatever their times, takes them from here.
    """
    stretches: list[tuple[StreamName, list[str]]] = []
    for stream, texts, _ in runs:
        if stretches and stretches[-1][0] == stream:
            stretches[-1][1].extend(texts)
        else:
            stretches.append((stream, list(texts)))
    return stretches


def size(runs: Iterable[LineRun]) -> int:
    """How many lines ``runs`` hold."""
    return sum(len(run.texts) for run in runs)


def cut(runs: list[LineRun], most: int) -> Iterator[list[LineRun]]:
    """``runs`` in batches of at most ``most`` lines (a longer run is split), never empty, in order."""
    batch: list[LineRun] = []
    room = most
    for run in runs:
        texts, start = run.texts, 0
        while len(texts) - start > room:
            if room:
                batch.append(LineRun(run.stream, texts[start : start + room], run.time_ns))
                start += room
            yield batch
            batch, room = [], most
        if start < len(texts):
            batch.append(run if start == 0 else LineRun(run.stream, texts[start:], run.time_ns))
            room -= len(texts) - start
    if batch:
        yield batch


async def as_runs(batches: AsyncIterator[list[LogLine]]) -> AsyncGenerator[list[LineRun], None]:
    """``stream_runs`` of a runtime that reads line by line: each batch of lines as its runs."""
    try:
        async for batch in batches:
            if batch:
                yield runs_of(batch)
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


_new_tuple = tuple.__new__
