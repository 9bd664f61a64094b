"""Structured logging and the one redaction function used by logs and the event store.

``Redactor`` replaces every registered secret value and common key shapes (``sk-ant-...``,
``sk-...``, ``AIza...``, bearer tokens) with ``[REDACTED]``. The process-wide instance ``REDACTOR``
is filled at start from the settings; ``configure_logging`` installs it as a structlog processor.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

from orchestrator.textscan import Needles

MASK = "[REDACTED]"
KEY_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}"
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{16,}"
    r"|AIza[0-9A-Za-z_\-]{30,}"
    r"|(?i:bearer\s+)[A-Za-z0-9._\-]{16,}"
)
_MIN_SECRET = 6
_KEY_HEADS = ("sk-", "aiza", "bearer")  # what every match of KEY_SHAPES starts with, in any case


class Redactor:
    """Replaces known secret values and key-shaped strings. Thread-safe to register into."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] = KEY_SHAPES
        self._heads = Needles(_KEY_HEADS)
        self.register(*secrets)

    def register(self, *secrets: str) -> None:
        """Add secret values; values shorter than 6 characters are ignored (too many false hits).

        A value is also found as JSON writes it inside a string (a quote, a backslash or a control
        character escaped): the event log is redacted as JSON text.
        """
        with self._lock:
            kept = [s for s in secrets if s and len(s) >= _MIN_SECRET]
            new = {*kept, *(_in_json(s) for s in kept)} - self._secrets
            if not new:
                return
            self._secrets = self._secrets | new
            known = "|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True))
            self._pattern = re.compile(f"{known}|{KEY_SHAPES.pattern}")
            self._heads = Needles(
                _KEY_HEADS, exact=self._secrets
            )  # replaced whole: `finds` reads it unlocked

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text)

    def finds(self, text: str) -> bool:
        """Whether ``text`` may hold anything this redactor replaces; never False when it does.

        One pass for the texts every match starts with (a registered secret, ``sk-``, ``AIza``,
        ``bearer`` in any case: ``textscan.Needles``), the regular expression only when one is there:
        a flood of output lines is checked at C speed.
        """
        return self._heads.found_in(text) and self._pattern.search(text) is not None

    def finds_utf8(self, data: bytes) -> bool:
        """``finds`` of the text whose UTF-8 is ``data`` (a batch about to be written)."""
        return (
            self._heads.found_in_utf8(data)
            and self._pattern.search(data.decode("utf-8", "surrogatepass")) is not None
        )

    def value(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj


def _in_json(secret: str) -> str:
    """``secret`` as it appears inside a JSON string (escaped as orjson and pydantic escape it)."""
    return orjson.dumps(secret).decode()[1:-1]


REDACTOR = Redactor()


def redact(text: str) -> str:
    """Redact ``text`` with the process-wide redactor."""
    return REDACTOR(text)


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: REDACTOR.value(v) for k, v in event_dict.items()}


def _stderr_logger(*_: Any) -> Any:
    """A logger on the *current* ``sys.stderr`` (it may be replaced after configuration)."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once: redaction, ISO time, JSON when stderr is not a terminal."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
