"""Reading a session's log: ``EventReader`` (from any seq, as a state, following growth) and the
pieces the writer shares with it (``iter_lines``, ``parse_line``, ``Snapshot``, ``atomic_write``).

``EventReader`` works from any process. It follows the file as it grows: woken by an in-process
writer when there is one, by polling otherwise; an in-process writer also keeps its last durable
events (``EventWriter.recent``), so live followers take new events from memory instead of each
re-reading and re-parsing the log, and a follower that falls further behind reads the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from pydantic import ValidationError

from orchestrator.errors import SessionNotFound, StoreError, StoreFull
from orchestrator.log import get_logger
from orchestrator.models import PAYLOADS, AgentEvent, SessionState, apply
from orchestrator.paths import SessionPaths
from orchestrator.recent_events import Stored

if TYPE_CHECKING:
    from orchestrator.store import EventWriter

log = get_logger(__name__)
SNAPSHOT_VERSION = 1
_CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file, fsync and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreFull(f"disk full writing {path}: free space in the workspace and retry") from exc
        raise StoreError(f"cannot write {path}: {exc}") from exc
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def parse_line(raw: bytes) -> AgentEvent | None:
    """One stored line -> an event, or None if it is not a valid event (logged, never raised)."""
    try:
        return AgentEvent.model_validate_json(raw)
    except ValidationError as exc:
        log.warning(
            "store.corrupt_line", error=str(exc).splitlines()[0], line=raw[:120].decode(errors="replace")
        )
        return None


def iter_lines(path: Path, offset: int = 0) -> Iterator[tuple[bytes, int]]:
    """Yield ``(line, end_offset)`` for each complete line from ``offset``; a torn tail is not yielded."""
    with path.open("rb") as handle:
        handle.seek(offset)
        pos, rest = offset, b""
        while chunk := handle.read(_CHUNK):
            buf = rest + chunk
            start = 0
            while (nl := buf.find(b"\n", start)) != -1:
                line = buf[start:nl]
                start = nl + 1
                if line.strip():
                    yield line, pos + start
            pos += start
            rest = buf[start:]


@dataclass
class Snapshot:
    seq: int
    offset: int
    state: SessionState

    def dump(self) -> bytes:
        body = {"version": SNAPSHOT_VERSION, "seq": self.seq, "offset": self.offset,
                "state": self.state.model_dump(mode="json")}  # fmt: skip
        return orjson.dumps(body)

    @classmethod
    def load(cls, path: Path) -> Snapshot | None:
        """The snapshot at ``path``, or None when absent, unreadable or from another version."""
        try:
            body = orjson.loads(path.read_bytes())
            if body.get("version") != SNAPSHOT_VERSION:
                return None
            return cls(int(body["seq"]), int(body["offset"]), SessionState.model_validate(body["state"]))
        except (OSError, ValueError, KeyError, TypeError, ValidationError):
            return None


class EventReader:
    """Reads a session's log from any process: from a seq, as a whole state, or following growth."""

    def __init__(self, paths: SessionPaths) -> None:
        self.paths = paths

    def exists(self) -> bool:
        return self.paths.events.exists()

    def _require(self) -> None:
        if not self.paths.events.exists():
            raise SessionNotFound(f"no session {self.paths.session_id!r} in {self.paths.workspace}")

    def read(self, after: int = 0) -> Iterator[AgentEvent]:
        """Every stored event with ``seq > after``, in order."""
        self._require()
        offset = 0
        snap = Snapshot.load(self.paths.snapshot)
        if snap is not None and snap.seq <= after and snap.offset <= self.paths.events.stat().st_size:
            offset = snap.offset
        for line, _ in iter_lines(self.paths.events, offset):
            event = parse_line(line)
            if event is not None and event.seq > after:
                yield event

    def read_with_offsets(self, offset: int = 0) -> Iterator[tuple[AgentEvent, int]]:
        self._require()
        for line, end in iter_lines(self.paths.events, offset):
            event = parse_line(line)
            if event is not None:
                yield event, end

    def rebuild(self) -> tuple[SessionState, int]:
        """The session's state from the snapshot plus the tail, and the byte offset it covers."""
        self._require()
        snap = Snapshot.load(self.paths.snapshot)
        state, offset = SessionState(), 0
        if snap is not None and snap.offset <= self.paths.events.stat().st_size:
            state, offset = snap.state, snap.offset
        start = offset
        for event, end in self.read_with_offsets(offset):
            if offset == start and snap is not None and event.seq != state.last_seq + 1:
                # the snapshot does not fit this log (a restored backup?): fold from scratch
                full = SessionState()
                for event_, end_ in self.read_with_offsets(0):
                    apply(full, event_)
                    offset = end_
                return full, offset
            if event.seq > state.last_seq:
                apply(state, event)
            offset = end
        return state, offset

    def state(self) -> SessionState:
        return self.rebuild()[0]

    async def follow(
        self, after: int = 0, writer: EventWriter | None = None, poll_s: float = 0.2
    ) -> AsyncIterator[AgentEvent]:
        """Yield every event with ``seq > after``, then new ones as they are stored, forever.

        Woken by ``writer`` when it lives in this process, else by polling every ``poll_s``; with a
        writer, new events come from its memory (``EventWriter.recent``) while they are there.
        The caller ends the iteration (e.g. after ``session_finished``).
        """
        async for stored in self.follow_stored(after, writer, poll_s):
            event = _validated(stored)
            if event is not None:
                yield event

    async def follow_stored(
        self, after: int = 0, writer: EventWriter | None = None, poll_s: float = 0.2
    ) -> AsyncIterator[Stored]:
        """``follow``, as stored lines with their seq and type: for readers that pass lines on (SSE).

        No event object is built: from the writer's memory a line is the writer's own, and from
        the file a line is checked to be a JSON object with an integer ``seq`` and a known ``type``
        (``Stored.event`` validates the rest when asked).
        """
        async for batch in self.follow_batches(after, writer, poll_s):
            for stored in batch:
                yield stored

    async def follow_batches(
        self, after: int = 0, writer: EventWriter | None = None, poll_s: float = 0.2
    ) -> AsyncIterator[Sequence[Stored]]:
        """``follow_stored`` in the batches it reads them in (never empty, in seq order).

        A batch from the writer's memory is a ``Recent`` (its SSE messages come at once: ``sse()``).
        """
        self._require()
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def _notify(_: int) -> None:
            loop.call_soon_threadsafe(wake.set)

        unsubscribe = writer.subscribe(_notify) if writer is not None else None
        offset, last = 0, after
        try:
            while True:
                wake.clear()
                recent = writer.recent(last) if writer is not None else None
                batch: Sequence[Stored]
                if recent is None:
                    batch, offset = await asyncio.to_thread(self._read_from, offset, last)
                else:
                    batch = recent
                    offset = batch[-1].end if batch else offset
                if batch:
                    last = batch[-1].seq
                    yield batch
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=poll_s)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def _read_from(self, offset: int, after: int) -> tuple[list[Stored], int]:
        found: list[Stored] = []
        for line, end in iter_lines(self.paths.events, offset):
            offset = end
            stored = _stored(line, end)
            if stored is not None and stored.seq > after:
                found.append(stored)
            if len(found) >= 2000:
                break
        return found, offset


def _stored(raw: bytes, end: int) -> Stored | None:
    """A line of the log as ``Stored`` if it has an integer seq and a known type; else None (logged)."""
    try:
        body = orjson.loads(raw)
        seq, kind = body["seq"], body["type"]
        if type(seq) is int and seq >= 1 and kind in PAYLOADS:
            return Stored(seq, kind, raw.decode(), end)
    except (orjson.JSONDecodeError, TypeError, KeyError, UnicodeDecodeError):
        pass
    log.warning("store.corrupt_line", line=raw[:120].decode(errors="replace"))
    return None


def _validated(stored: Stored) -> AgentEvent | None:
    try:
        return stored.event
    except ValidationError as exc:
        log.warning("store.corrupt_line", error=str(exc).splitlines()[0], line=stored.text[:120])
        return None
