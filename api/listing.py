"""The session list: a summary per session folder, newest first, with filter and cursor paging.

A summary is the fold of the session's log (snapshot + tail), cached per session and keyed by the
log's size and mtime, so a list of many idle sessions costs one ``stat`` each. Every method here
blocks on files: call it through ``asyncio.to_thread``.

The cursor is a position, not a handle: ``<created_at>~<id>`` of the last session of a page
(keyset paging). Any string of that shape is a valid position, so paging never fails on a session
that was deleted meanwhile; anything else is refused.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path

from api.schemas import SessionPage, SessionSummary
from orchestrator.errors import SessionNotFound, UsageError
from orchestrator.log import get_logger
from orchestrator.models.state import SessionState, SessionStatus
from orchestrator.paths import SESSION_ID_RE, SessionPaths
from orchestrator.store import EventReader

log = get_logger(__name__)
PROMPT_CUT = 200
_EPOCH = "0000"  # sorts before every ISO timestamp: sessions without a start come last
CURSOR_PATTERN = r"^[0-9A-Za-z:.+-]{1,40}~[0-9A-Za-z_-]{8,64}$"
CURSOR_RE = re.compile(CURSOR_PATTERN)


def cut(text: str, limit: int = PROMPT_CUT) -> str:
    """``text`` shortened to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(session_id: str, state: SessionState) -> SessionSummary:
    return SessionSummary(
        id=session_id, prompt=cut(state.prompt), status=state.status, created_at=state.created_at,
        finished_at=state.finished_at, workers=len(state.workers), cost_usd=round(state.totals.cost_usd, 6),
        input_tokens=state.totals.input_tokens, output_tokens=state.totals.output_tokens,
        last_seq=state.last_seq,
    )  # fmt: skip


def encode_cursor(summary: SessionSummary) -> str:
    return f"{_sort_stamp(summary)}~{summary.id}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(stamp, id)`` of a cursor; ``UsageError`` when it does not have the cursor's shape."""
    if not CURSOR_RE.fullmatch(cursor):
        raise UsageError(f"cursor {cut(cursor, 40)!r} is not a position <created_at>~<session id>; "
                         "pass the next_cursor of a page, or start without ?cursor=")  # fmt: skip
    stamp, _, session_id = cursor.partition("~")
    return stamp, session_id


def _sort_stamp(summary: SessionSummary) -> str:
    return summary.created_at.isoformat() if isinstance(summary.created_at, datetime) else _EPOCH


class SessionIndex:
    """Summaries of the sessions of one workspace, cached by the state of each log file."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], SessionSummary]] = {}

    def summary(self, paths: SessionPaths) -> SessionSummary:
        """The summary of one session; ``SessionNotFound`` when it has no log."""
        try:
            stat = paths.events.stat()
        except FileNotFoundError:
            raise SessionNotFound(
                f"no session {paths.session_id!r} in {self.workspace}; GET /api/sessions lists them"
            ) from None
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(paths.session_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        summary = summarize(paths.session_id, EventReader(paths).state())
        with self._lock:
            self._cache[paths.session_id] = (key, summary)
        return summary

    def _session_ids(self) -> list[str]:
        try:
            return [p.name for p in self.workspace.iterdir() if SESSION_ID_RE.fullmatch(p.name)]
        except FileNotFoundError:
            return []

    def page(self, status: SessionStatus | None, limit: int, cursor: str | None) -> SessionPage:
        """Sessions newest first (by ``created_at``, then id), filtered by status, after ``cursor``."""
        after = decode_cursor(cursor) if cursor else None
        found: list[SessionSummary] = []
        for session_id in self._session_ids():
            try:
                summary = self.summary(SessionPaths.of(self.workspace, session_id))
            except SessionNotFound:
                continue  # a folder without a log: being created, or not a session
            if status is None or summary.status == status:
                found.append(summary)
        found.sort(key=lambda s: (_sort_stamp(s), s.id), reverse=True)
        if after is not None:
            found = [s for s in found if (_sort_stamp(s), s.id) < after]
        page = found[:limit]
        more = len(found) > limit
        return SessionPage(sessions=page, next_cursor=encode_cursor(page[-1]) if more and page else None)
