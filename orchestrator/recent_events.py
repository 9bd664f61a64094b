"""The last durable events of a session's writer, kept in memory for its in-process followers.

Live followers (SSE readers, the dashboard) take new events from here instead of each re-reading and
re-parsing ``events.jsonl``. An entry keeps the JSON line exactly as stored and the byte offset after
it; the ``AgentEvent`` object is built from the line only when a follower asks for it (the writer's
per-line output path never builds one).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass

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


class RecentEvents:
    """At most ``max_events`` durable events and about ``max_bytes`` characters of their JSON."""

    def __init__(self, last_seq: int, max_events: int, max_bytes: int) -> None:
        self._items: deque[Stored] = deque()
        self._last = last_seq
        self._bytes = 0
        self._max_events, self._max_bytes = max_events, max_bytes
        self._lock = threading.Lock()

    def add(self, items: list[Stored]) -> None:
        """Append durable events (in seq order, right after the last one) and forget the oldest."""
        if not items:
            return
        with self._lock:
            self._items.extend(items)
            self._bytes += sum(len(item.text) for item in items)
            self._last = items[-1].seq
            while self._items and (len(self._items) > self._max_events or self._bytes > self._max_bytes):
                self._bytes -= len(self._items.popleft().text)

    def since(self, after: int) -> list[Stored] | None:
        """Events with ``seq > after``; ``[]`` if none yet; None if some are no longer kept."""
        with self._lock:
            if after >= self._last:
                return []
            if not self._items or after < self._items[0].seq - 1:
                return None
            return list(itertools.islice(self._items, after - self._items[0].seq + 1, None))

    def text_of(self, event: AgentEvent) -> str | None:
        """The stored line of ``event`` if it is one of the kept events (by identity), else None."""
        with self._lock:
            index = event.seq - self._items[0].seq if self._items else -1
            if 0 <= index < len(self._items):
                found = self._items[index]
                if found.built is event:
                    return found.text
        return None
