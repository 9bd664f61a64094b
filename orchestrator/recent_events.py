"""The last durable events of a session's writer, kept in memory for its in-process followers.

Live followers (SSE readers, the dashboard) take new events from here instead of each re-reading and
re-parsing ``events.jsonl``. The writer hands over what each flush made durable as a ``Page``: the
bytes it wrote (JSON lines exactly as stored) and its events as columns (types, the byte offset after
each line), so that a flood of output lines costs no object per line and its SSE messages are the
stored bytes, copied once. A follower gets ``Stored`` events from a page when it
asks for them one by one (``Recent`` is a sequence of them, made on demand), and the SSE messages of a
whole run of events at once (``Recent.sse``). The ``AgentEvent`` of a line is built only when a
follower asks for it (the writer's output path never builds one).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from orchestrator.models import AgentEvent


@dataclass(slots=True, eq=False)
class Stored:
    """A durable event: its ``seq`` and ``type``, its line in the log (``text``), the offset after it."""

    seq: int
    type: str
    text: str
    end: int = 0
    built: AgentEvent | None = None

    @property
    def event(self) -> AgentEvent:
        """The event, parsed from ``text`` once on first use (then shared: events are frozen)."""
        if self.built is None:
            self.built = AgentEvent.model_validate_json(self.text)
        return self.built


@dataclass(slots=True, eq=False)
class Page:
    """The events one flush made durable, seqs ``first`` onwards: ``data``, the bytes written at
    offset ``base`` of the log (a line per event, each ending in a newline), and columns.

    ``ends`` holds the offset after each line; ``built`` the event objects the writer had (events
    appended as objects), by index; the events before index ``start`` are forgotten.
    """

    first: int
    types: list[str]
    ends: list[int]
    data: bytes
    base: int
    built: dict[int, AgentEvent] = field(default_factory=dict)
    start: int = 0

    def __len__(self) -> int:
        return len(self.types)

    @property
    def kept(self) -> int:
        return len(self.types) - self.start

    @property
    def last(self) -> int:
        return self.first + len(self.types) - 1

    @property
    def size(self) -> int:
        """Bytes of the lines from ``start`` on."""
        return self.ends[-1] - self.begin(self.start)

    def begin(self, index: int) -> int:
        """The offset where line ``index`` starts."""
        return self.ends[index - 1] if index else self.base

    def line(self, index: int) -> bytes:
        """Line ``index`` as stored, without its newline."""
        return self.data[self.begin(index) - self.base : self.ends[index] - 1 - self.base]

    def text(self, index: int) -> str:
        return self.line(index).decode()

    def stored(self, index: int) -> Stored:
        return Stored(
            self.first + index, self.types[index], self.text(index), self.ends[index], self.built.get(index)
        )


_END = b"\r\n\r\n"


class Recent(Sequence[Stored]):
    """Consecutive durable events from the writer's memory: pages, from ``start`` in the first one.

    A sequence of ``Stored`` (each made when asked for); ``end`` is the offset after the last line,
    ``sse()`` the SSE messages of them all, written at once.
    """

    __slots__ = ("_len", "_pages", "_start", "_stop")

    def __init__(self, pages: Sequence[Page], start: int = 0, stop: int | None = None) -> None:
        self._pages = pages
        self._start = start  # index in the first page
        self._stop = (len(pages[-1]) if stop is None else stop) if pages else 0  # in the last page
        self._len = sum(len(p) for p in pages[:-1]) + self._stop - start if pages else 0

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @overload
    def __getitem__(self, index: int) -> Stored: ...
    @overload
    def __getitem__(self, index: slice) -> Recent: ...
    def __getitem__(self, index: int | slice) -> Stored | Recent:
        if isinstance(index, slice):
            first, stop, step = index.indices(self._len)
            if step != 1:
                raise ValueError("a Recent slice takes no step")
            return self._cut(first, max(stop, first))
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        _, page, at = self._locate(index)
        return page.stored(at)

    def __iter__(self) -> Iterator[Stored]:
        for page, low, high in self._spans():
            for at in range(low, high):
                yield page.stored(at)

    @property
    def first_seq(self) -> int:
        return self._pages[0].first + self._start

    @property
    def last_seq(self) -> int:
        return self._pages[-1].first + self._stop - 1

    @property
    def end(self) -> int:
        """The offset after the last line (0 when empty)."""
        return self._pages[-1].ends[self._stop - 1] if self._len else 0

    def types(self) -> list[str]:
        found: list[str] = []
        for page, low, high in self._spans():
            found += page.types[low:high]
        return found

    def sse(self) -> bytes:
        """The SSE messages of these events (``id``, ``event``, ``data`` as stored), as ``api.sse`` writes them.

        Made of the stored bytes (copied once, into the result), never of a text per event.
        """
        parts: list[bytes | memoryview] = []
        for page, low, high in self._spans():
            view, at = memoryview(page.data), page.begin(low) - page.base
            for seq, kind, end in zip(
                range(page.first + low, page.first + high),
                page.types[low:high],
                page.ends[low:high],
                strict=True,
            ):
                stop = end - page.base
                parts += (b"id: %d\r\nevent: %s\r\ndata: " % (seq, kind.encode()), view[at : stop - 1], _END)
                at = stop
        return b"".join(parts)

    def _spans(self) -> Iterator[tuple[Page, int, int]]:
        """Each page with the range of its indexes that belongs to this sequence."""
        last = len(self._pages) - 1
        for number, page in enumerate(self._pages):
            yield page, self._start if number == 0 else 0, self._stop if number == last else len(page)

    def _locate(self, index: int) -> tuple[int, Page, int]:
        """The number of the page that holds event ``index``, the page and the event's index in it."""
        at = index + self._start
        for number, page in enumerate(self._pages):
            if at < len(page):
                return number, page, at
            at -= len(page)
        raise IndexError(index)

    def _cut(self, first: int, stop: int) -> Recent:
        if first >= stop:
            return Recent([])
        a, _, start_at = self._locate(first)
        b, _, stop_at = self._locate(stop - 1)
        return Recent(self._pages[a : b + 1], start_at, stop_at + 1)


class RecentEvents:
    """At most ``max_events`` durable events and about ``max_bytes`` bytes of their JSON, in pages."""

    def __init__(self, last_seq: int, max_events: int, max_bytes: int) -> None:
        self._pages: deque[Page] = deque()
        self._last = last_seq
        self._events = 0
        self._bytes = 0
        self._max_events, self._max_bytes = max_events, max_bytes
        self._lock = threading.Lock()

    def add(self, page: Page) -> None:
        """Append a durable page (its first seq right after the last one) and forget the oldest events."""
        if not len(page):
            return
        with self._lock:
            self._pages.append(page)
            self._events += page.kept
            self._bytes += page.size
            self._last = page.last
            while self._events > self._max_events or (self._bytes > self._max_bytes and self._events > 1):
                oldest = self._pages[0]
                excess = max(self._events - self._max_events, 1)
                if excess >= oldest.kept:
                    self._pages.popleft()
                    self._events -= oldest.kept
                    self._bytes -= oldest.size
                    continue
                cut = oldest.start + excess  # forget the first ``excess`` kept events of the oldest page
                dropped = oldest.begin(cut) - oldest.begin(oldest.start)
                oldest.start = cut
                self._events -= excess
                self._bytes -= dropped

    def since(self, after: int) -> Recent | None:
        """Events with ``seq > after``; empty if none yet; None if some are no longer kept."""
        with self._lock:
            if after >= self._last:
                return Recent([])
            if not self._pages or after < self._pages[0].first + self._pages[0].start - 1:
                return None
            pages = list(self._pages)
        for number, page in enumerate(pages):
            if after < page.last:
                return Recent(pages[number:], max(after + 1 - page.first, page.start))
        return Recent([])  # not reached: after < self._last

    def text_of(self, event: AgentEvent) -> str | None:
        """The stored line of ``event`` if it is one of the kept events (by identity), else None."""
        with self._lock:
            for page in reversed(self._pages):
                if page.first + page.start <= event.seq <= page.last:
                    index = event.seq - page.first
                    return page.text(index) if page.built.get(index) is event else None
        return None
