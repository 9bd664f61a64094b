"""The request log: one JSON entry per HTTP request, kept in memory, echoed, and optionally written.

Every entry has ``seq``, ``time`` (UTC ISO 8601), ``method``, ``path``, ``family``, ``answer`` (what
was sent: a turn kind such as ``tool:write`` or ``error:429``, or ``side``, ``probe``, ``no_turn``,
``not_found``, ``bad_body``), ``status``, ``script``/``turn``/``attempt`` when a scenario turn was
used, and ``body_sha256``/``body_bytes``. ``--log FILE`` also gets the request headers (credentials
masked) and the full body. Nothing here interprets a body; tool results are recorded as seen.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"})
_MAX_ENTRIES = 10_000


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def masked(headers: dict[str, str]) -> dict[str, str]:
    """Headers with credential values replaced; names are kept so a test can see they were sent."""
    return {k: ("<masked>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


class RequestLog:
    """Thread-safe list of entries; ``echo`` gets one JSON line each, ``path`` the full records."""

    def __init__(self, path: Path | None = None, echo: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._seq = 0
        self._echo = echo
        self._file = path.open("a", encoding="utf-8") if path is not None else None

    def add(self, entry: dict[str, Any], headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """Record one request; returns the entry with ``seq``, ``time`` and the body digest added."""
        with self._lock:
            self._seq += 1
            record = {
                "seq": self._seq,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                **entry,
                "body_sha256": digest(body),
                "body_bytes": len(body),
            }
            self._entries.append(record)
            del self._entries[:-_MAX_ENTRIES]
            if self._echo is not None:
                self._echo.write(json.dumps({"event": "modelserver.request", **record}) + "\n")
                self._echo.flush()
            if self._file is not None:
                full = {**record, "headers": masked(headers), "body": _decoded(body)}
                self._file.write(json.dumps(full) + "\n")
                self._file.flush()
            return record

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def note(self, event: str, **fields: Any) -> None:
        """A structured line on the echo stream (startup, shutdown, handler failures)."""
        if self._echo is not None:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            with self._lock:
                self._echo.write(json.dumps({"event": event, "time": stamp, **fields}, default=str) + "\n")
                self._echo.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")
