"""The event store: ``events.jsonl`` of one session, append-only, the single source of truth.

- ``EventWriter`` (one per session, guarded by an ``flock`` on ``lock``) alone assigns gap-free
  ``seq``s. ``append`` buffers; ``flush``/``commit`` write the batch with one ``write``, ``fsync`` it,
  and only then fold it into the live state and wake readers. A failed write (disk full) truncates
  the partial batch away, keeps it buffered and raises ``StoreFull``: the log stays readable.
- A torn last line (a crash mid-write) is ignored by readers and truncated when a writer reopens.
  A corrupt line elsewhere is skipped with a warning, never an exception.
- Every ``snapshot_every`` events the state is written to ``snapshot.json`` with the byte offset it
  covers, so that rebuilding a long session folds only the tail.
- ``EventReader`` (``orchestrator.store_reader``, importable from here too) reads from any ``seq``
  and follows the file as it grows; the writer keeps its last durable events in memory
  (``EventWriter.recent``) for the followers in its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring
from typing import Literal, Self, cast

import orjson

from orchestrator.errors import SessionLocked, SessionNotFound, StoreError, StoreFull
from orchestrator.log import REDACTOR, Redactor, get_logger
from orchestrator.models import AgentEvent, EventDraft, SessionState, apply, apply_output, utcnow
from orchestrator.models.events import EventData, EventType, type_of
from orchestrator.paths import SessionPaths
from orchestrator.recent_events import Page, Recent, RecentEvents, Stored
from orchestrator.store_reader import (
    SNAPSHOT_VERSION,
    EventReader,
    Snapshot,
    atomic_write,
    iter_lines,
    parse_line,
)

__all__ = [
    "RECENT_BYTES", "RECENT_EVENTS", "SNAPSHOT_VERSION", "EventReader", "EventWriter", "Snapshot", "Stored",
    "atomic_write", "iter_lines", "parse_line",
]  # fmt: skip

log = get_logger(__name__)
_CHUNK = 1 << 20  # bytes read at a time when looking for the last newline
RECENT_EVENTS = 16384  # durable events a writer keeps for its in-process followers ...
RECENT_BYTES = 16 << 20  # ... and about as many bytes of their JSON at most (a flood's 1/4 s)


@dataclass(slots=True)
class _OutputFold:
    """What folding one ``output_lines`` event needs (``apply_output``), kept instead of the event."""

    worker: str
    task_id: str | None
    stream: str
    ts: datetime


# What folds a buffered event into the state: the event, or a run of output lines (how, seq, lines)
_Fold = AgentEvent | tuple[_OutputFold, int, int]


@dataclass
class _Batch:
    """Buffered events as columns: JSON lines, types, the objects of events appended as objects."""

    texts: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    built: dict[int, AgentEvent] = field(default_factory=dict)  # index in texts -> event
    folds: list[_Fold] = field(default_factory=list)  # in seq order

    def then(self, later: _Batch) -> _Batch:
        """This batch followed by ``later``."""
        shift = len(self.texts)
        return _Batch(
            self.texts + later.texts,
            self.types + later.types,
            {**self.built, **{index + shift: event for index, event in later.built.items()}},
            self.folds + later.folds,
        )


class EventWriter:
    """The one writer of a session's log. Use ``EventWriter.open(paths)`` as a context manager."""

    def __init__(self, paths: SessionPaths, fd: int, lock_fd: int, state: SessionState, offset: int,
                 redactor: Redactor, snapshot_every: int, recent_events: int = RECENT_EVENTS) -> None:  # fmt: skip
        self.paths = paths
        self.state = state
        self._fd = fd
        self._lock_fd = lock_fd
        self._offset = offset
        self._redact = redactor
        self._snapshot_every = snapshot_every
        self._snapshot_seq = state.last_seq
        self._next_seq = state.last_seq + 1
        self._pending = _Batch()
        self._guard = threading.Lock()
        self._json_ids: dict[tuple[str, str | None], str] = {}
        self._write_lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self._has_pending = threading.Event()
        self._recent = RecentEvents(state.last_seq, recent_events, RECENT_BYTES)
        self.closed = False

    @classmethod
    def open(cls, paths: SessionPaths, redactor: Redactor = REDACTOR, snapshot_every: int = 10_000,
             create: bool = True, recent_events: int = RECENT_EVENTS) -> Self:  # fmt: skip
        """Lock the session, repair a torn tail, rebuild the state; ``SessionLocked`` if taken.

        ``recent_events``: how many durable events to keep in memory for in-process followers.
        """
        if not create and not paths.events.exists():
            raise SessionNotFound(f"no session {paths.session_id!r} in {paths.workspace}")
        paths.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock_fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(lock_fd)
            raise SessionLocked(
                f"session {paths.session_id} is being run by pid {holder}; stop that process or wait for it"
            ) from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, str(os.getpid()).encode(), 0)
        try:
            fd = os.open(paths.events, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            _repair_tail(fd)
            state, _ = EventReader(paths).rebuild()
            offset = os.fstat(fd).st_size  # corrupt lines after the last good event stay; append after
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(paths, fd, lock_fd, state, offset, redactor, snapshot_every, recent_events)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def last_seq(self) -> int:
        """The seq of the last durable event."""
        return self.state.last_seq

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(last_seq)`` after every durable batch; returns the unsubscribe function.

        Callbacks run in the flushing thread, and two flushes (the flusher's and a ``commit``) may
        call them at the same time: they must be thread-safe and quick.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def recent(self, after: int) -> Recent | None:
        """The durable events with ``seq > after`` from memory, or None if some are no longer there.

        Empty when there is none yet. The events are lines the writer stored (an event appended as
        an object comes with that object, shared by every caller: they are frozen); ``Stored.end``
        is where a line ends in the log.
        """
        return self._recent.since(after)

    def json_of(self, event: AgentEvent) -> str:
        """The event's JSON as stored: taken from memory for an event of ``recent``, else dumped."""
        text = self._recent.text_of(event)
        return text if text is not None else event.model_dump_json()

    def append(self, draft: EventDraft) -> AgentEvent:
        """Buffer an event (redacted, with the next seq). Durable and visible after ``flush``."""
        return self._add(draft.worker, draft.task_id, draft.type, draft.data)

    def _add(self, worker: str, task_id: str | None, kind: EventType, data: EventData) -> AgentEvent:
        with self._guard:
            seq, now = self._next_seq, utcnow()
            event = AgentEvent.model_construct(
                seq=seq, ts=now, session_id=self.paths.session_id, worker=worker, task_id=task_id,
                type=kind, data=data,
            )  # fmt: skip
            line = self._head(seq, now, worker, task_id, kind) + f"{data.model_dump_json()}}}"
            clean = self._redact(line) if self._redact.finds(line) else line
            if clean != line:
                event = AgentEvent.model_validate_json(clean)
            pending = self._pending
            pending.built[len(pending.texts)] = event
            pending.texts.append(clean)
            pending.types.append(event.type)
            pending.folds.append(event)
            self._next_seq += 1
            self._wake_flusher()
            return event

    def append_output(
        self, worker: str, task_id: str | None, stream: Literal["stdout", "stderr"], lines: list[str]
    ) -> int:
        """Buffer one ``output_lines`` event of ``lines`` (one stream, in order); returns its seq.

        The same event as ``append`` of an ``OutputLines``, built straight as JSON: a worker printing
        a flood of lines must not cost a model object per run. Every line is redacted, when its batch
        is flushed (one search of the batch for anything to redact, before any reader sees it). No
        event (and the last seq) when ``lines`` is empty.
        """
        if not lines:
            return self._next_seq - 1
        body = _json_list(lines)
        with self._guard:
            seq, now = self._next_seq, utcnow()
            pending = self._pending
            head = self._head(seq, now, worker, task_id, "output_lines")
            pending.texts.append(f'{head}{{"stream":"{stream}","lines":{body}}}}}')
            pending.types.append("output_lines")
            pending.folds.append((_OutputFold(worker, task_id, stream, now), seq, len(lines)))
            self._next_seq = seq + 1
            self._wake_flusher()
            return seq

    def _redact_output(self, batch: _Batch) -> str:
        """Redact the lines of the batch's ``output_lines`` events that hold a secret; the batch joined.

        (``append`` redacted its events already.) A rare path: the lines are read back from the JSON.
        """
        redact, texts = self._redact, batch.texts
        for index, kind in enumerate(batch.types):
            if kind == "output_lines" and index not in batch.built and redact.finds(texts[index]):
                body = orjson.loads(texts[index])
                body["data"]["lines"] = [redact(line) for line in body["data"]["lines"]]
                texts[index] = orjson.dumps(body).decode()
        return "\n".join([*texts, ""])

    def _head(self, seq: int, now: datetime, worker: str, task_id: str | None, kind: str) -> str:
        """An event's JSON up to its ``data`` value, exactly as ``AgentEvent.model_dump_json`` writes it."""
        ids = self._json_ids.get((worker, task_id))
        if ids is None:
            ids = f'{_dumps(self.paths.session_id)},"worker":{_dumps(worker)},"task_id":' + (
                "null" if task_id is None else _dumps(task_id)
            )
            self._json_ids[(worker, task_id)] = ids
        return f'{{"seq":{seq},"ts":"{_ts(now)}","session_id":{ids},"type":"{kind}","data":'

    def _wake_flusher(self) -> None:
        if not self._has_pending.is_set():  # set() takes a lock and notifies: once per batch
            self._has_pending.set()

    def emit(self, worker: str, data: object, task_id: str | None = None) -> AgentEvent:
        """``append(EventDraft.of(worker, data, task_id))``, without the draft (``TypeError`` if
        ``data`` is not an event payload)."""
        return self._add(worker, task_id, type_of(data), cast(EventData, data))

    @property
    def pending(self) -> int:
        return len(self._pending.texts)

    def flush(self) -> int:
        """Write, fsync and publish everything buffered; returns the last durable seq."""
        with self._write_lock:
            with self._guard:
                batch, self._pending = self._pending, _Batch()
                first = self._next_seq - len(batch.texts)
                self._has_pending.clear()
            if not batch.texts:
                return self.last_seq
            joined = "\n".join([*batch.texts, ""])  # each line ends in a newline (no copy to add the last)
            data = joined.encode()
            if self._redact.finds_utf8(data):
                joined = self._redact_output(batch)
                data = joined.encode()
            start = self._offset
            try:
                self._write(data)
            except BaseException:
                with self._guard:
                    self._pending = batch.then(self._pending)
                    self._has_pending.set()
                raise
            # the offset after each line: characters are bytes unless a line has non-ASCII text
            sizes = (
                map(len, batch.texts) if len(data) == len(joined) else (len(t.encode()) for t in batch.texts)
            )
            ends = list(itertools.accumulate(map(_PLUS_ONE, sizes), initial=start))[1:]
            state = self.state
            for fold in batch.folds:
                if isinstance(fold, AgentEvent):
                    apply(state, fold)
                else:
                    how, seq, lines = fold
                    apply_output(state, how.worker, how.task_id, how.stream, seq, how.ts, lines)
            self._recent.add(Page(first, batch.types, ends, data, start, batch.built))
            if self.last_seq - self._snapshot_seq >= self._snapshot_every:
                self.snapshot()
        for listener in list(self._listeners):
            listener(self.last_seq)
        return self.last_seq

    async def commit(self) -> int:
        """``flush`` off the event loop."""
        return await asyncio.to_thread(self.flush)

    async def run_flusher(self, interval_s: float = 0.005) -> None:
        """Flush batches until cancelled: group commit for high event rates.

        A batch is flushed as soon as it has an event, but at most once per ``interval_s``: an event
        after a quiet spell is durable at once, and under load the events of ``interval_s`` (and
        of the fsync before) share one fsync. No event waits longer than ``interval_s`` plus one
        fsync for its batch to start.
        """
        loop = asyncio.get_running_loop()
        last = float("-inf")
        while True:
            await asyncio.to_thread(self._has_pending.wait, 0.5)
            if self._has_pending.is_set():
                wait = last + interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                last = loop.time()
                await self.commit()

    def _write(self, data: bytes) -> None:
        start = self._offset
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(
                    f"disk full appending to {self.paths.events}: free space in the workspace; "
                    "nothing was lost, the events stay buffered"
                ) from exc
            raise StoreError(f"cannot append to {self.paths.events}: {exc}") from exc
        self._offset = start + len(data)

    def snapshot(self) -> None:
        """Write the state and the byte offset it covers to ``snapshot.json`` (atomically)."""
        try:
            atomic_write(self.paths.snapshot, Snapshot(self.last_seq, self._offset, self.state).dump())
            self._snapshot_seq = self.last_seq
        except StoreError as exc:  # a snapshot is a cache: losing one costs time, not data
            log.warning("store.snapshot_failed", error=str(exc))

    def close(self) -> None:
        """Flush what is buffered, snapshot, release the lock. Idempotent."""
        if self.closed:
            return
        try:
            with contextlib.suppress(StoreError):
                self.flush()
            if self.last_seq != self._snapshot_seq:
                self.snapshot()
        finally:
            self.closed = True
            os.close(self._fd)
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)


_dumps = encode_basestring  # a str as a JSON string (non-ASCII kept), in C


def _json_list(texts: list[str]) -> str:
    """``texts`` as a JSON array, as the models write it (non-ASCII kept); orjson, ~20x the json module."""
    try:
        return orjson.dumps(texts).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, which orjson refuses: the json module keeps it
        return "[" + ",".join(map(_dumps, texts)) + "]"


_PLUS_ONE = (1).__add__  # a line's size with its newline


def _ts(moment: datetime) -> str:
    """A UTC time as the models serialise it (``UtcDatetime``)."""
    return moment.isoformat().replace("+00:00", "Z")


def _repair_tail(fd: int) -> None:
    """Truncate a torn last line (bytes after the last newline)."""
    size = os.fstat(fd).st_size
    pos = size
    while pos > 0:
        step = min(_CHUNK, pos)
        chunk = os.pread(fd, step, pos - step)
        nl = chunk.rfind(b"\n")
        if nl != -1:
            end = pos - step + nl + 1
            if end != size:
                log.warning("store.torn_tail_repaired", dropped_bytes=size - end)
                os.ftruncate(fd, end)
            return
        pos -= step
    if size:
        log.warning("store.torn_tail_repaired", dropped_bytes=size)
        os.ftruncate(fd, 0)
