"""Shared, defensive reading of CLI output: untyped JSON in, plain values and payloads out.

Nothing here raises on bad input. Getters return a neutral value for a missing or mistyped field;
``classify`` maps an error text to the payload of its failure class by what the text says;
``parse_batch`` hands a parser only the lines of a batch that can matter to it (``LoudLines``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from orchestrator.agents.base import Stream
from orchestrator.log import get_logger
from orchestrator.models.events import AgentResult, ApiError, AuthFailed, EventData, RateLimited, Usage
from orchestrator.textscan import Needles

_log = get_logger(__name__)

MAX_LINE = 8 * 1024 * 1024  # longer lines are not parsed (kept raw by the caller)
SUMMARY_CHARS = 2000
INPUT_CHARS = 4000
MAX_DOCUMENT = 4 * 1024 * 1024

JsonObject = dict[str, Any]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(line: str) -> str:
    """``line`` without ANSI colour codes and surrounding whitespace."""
    return (_ANSI.sub("", line) if "\x1b" in line else line).strip()  # most lines have no colour


def usage_of(input_tokens: int, output_tokens: int, cached: int, cost_usd: float | None) -> list[EventData]:
    """``[Usage]``, or ``[]`` when the run used nothing (an error result reports zeros)."""
    if not (input_tokens or output_tokens or cached or cost_usd):
        return []
    return [
        Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cost_usd=cost_usd,
        )
    ]


def load_object(line: str) -> JsonObject | None:
    """The JSON object on ``line``, or None for anything else (text, arrays, broken JSON)."""
    text = line.strip()
    if not text.startswith("{") or len(text) > MAX_LINE:
        return None
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def text(obj: Any, key: str) -> str:
    """``obj[key]`` if it is a string, else ''."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


def integer(obj: Any, key: str) -> int | None:
    """``obj[key]`` as an int (integral floats too), else None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def count(obj: Any, key: str) -> int:
    """A non-negative token count at ``obj[key]`` (0 when missing or bad)."""
    value = integer(obj, key)
    return value if value is not None and value > 0 else 0


def number(obj: Any, key: str) -> float | None:
    """``obj[key]`` as a finite float, else None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def mapping(obj: Any, key: str) -> JsonObject:
    """``obj[key]`` if it is an object, else {}."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def items(obj: Any, key: str) -> list[Any]:
    """``obj[key]`` if it is a list, else []."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def clip(value: str, limit: int = SUMMARY_CHARS) -> str:
    """``value`` cut to ``limit`` characters, saying how much was cut."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…[{len(value) - limit} more chars]"


def clip_input(value: Any, depth: int = 0) -> Any:
    """A tool input with long strings clipped (file contents), nesting capped at 8 levels."""
    if isinstance(value, str):
        return clip(value, INPUT_CHARS)
    if depth >= 8:
        return "…"
    if isinstance(value, dict):
        return {str(k): clip_input(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clip_input(v, depth + 1) for v in value]
    return value


_RETRY_AFTER = re.compile(
    r"(?:try again in|retry in|retry after|retrydelay\"?\s*:\s*\")\s*(\d+(?:\.\d+)?)\s*(ms|s\b|sec|second)?",
    re.IGNORECASE,
)
_STATUS = re.compile(r"(?:status:?\s+|\(|API Error:\s+|\"code\":\s*|status code\s+)([45]\d\d)\b")


def retry_after(message: str) -> float | None:
    """Seconds from 'try again in 3s' / 'retry in 3s' / 'retryDelay":"3s"' in ``message``."""
    found = _RETRY_AFTER.search(message)
    if not found:
        return None
    seconds = float(found.group(1))
    return seconds / 1000 if (found.group(2) or "").lower() == "ms" else seconds


def http_status(message: str) -> int | None:
    """An HTTP status a CLI quotes in ``message`` ('status: 429', '(429)', '"code":401', ...)."""
    found = _STATUS.search(message)
    return int(found.group(1)) if found else None


_CONTEXT = ("prompt is too long", "prompt_too_long", "context window", "context_length_exceeded",
            "input token count", "maximum context length")  # fmt: skip
_AUTH = ("invalid api key", "api key not valid", "incorrect api key", "invalid x-api-key", "unauthorized",
         "unauthenticated", "authentication_error", "authentication_failed", "not logged in",
         "missing environment variable", "no codex credentials", "invalid auth method",
         "please set an auth method", "credit balance is too low", "api_key_invalid")  # fmt: skip
_RATE = ("rate limit", "rate_limit", "too many requests", "quota", "resource_exhausted",
         "resource has been exhausted", "usage limit", "hit your limit", "you've hit your",
         "you\u2019ve hit your", "credit limit")  # fmt: skip
_CUT = ("mid-response", "stream disconnected before completion", "without a finish reason",
        "api error: terminated", "other side closed", "stream closed before")  # fmt: skip
_OVERLOADED = ("overloaded", "at capacity", "unavailable", "not ready yet")
_SERVER = ("internal server error", "internal error", "server_error", "high demand", "server had an error")
_NETWORK = ("can't reach the api", "fetch failed", "connection failed", "connection refused",
            "waiting for network", "failed to lookup address", "enotfound", "econnrefused")  # fmt: skip


def classify(message: str, status: int | None = None) -> EventData | None:
    """The failure class of an API error text, by what it says; None when it names none.

    Order matters: a context overflow and an auth failure are told first (both 400-ish and final),
    then rate limits (which also mention quota and billing), then cut streams, overload, server errors,
    the network, and last the bare HTTP status.
    """
    low = message.lower()
    status = status if status is not None else http_status(message)
    detail = clip(message)
    if any(k in low for k in _CONTEXT) or "ran out of room" in low:
        return ApiError(kind="context_overflow", status=status, detail=detail)
    if any(k in low for k in _AUTH) or status in (401, 403):
        return AuthFailed(detail=detail)
    if any(k in low for k in _RATE) or status == 429:
        return RateLimited(retry_after_s=retry_after(message), detail=detail)
    if any(k in low for k in _CUT):
        return ApiError(kind="stream_cut", status=status, detail=detail)
    if any(k in low for k in _OVERLOADED) or status in (503, 529):
        return ApiError(kind="overloaded", status=status, detail=detail)
    if any(k in low for k in _SERVER) or (status is not None and status >= 500):
        return ApiError(kind="server_error", status=status, detail=detail)
    if any(k in low for k in _NETWORK) or status is not None:
        return ApiError(kind="other", status=status, detail=detail)
    return None


class Sightings:
    """Tells a new sighting of a fact from the same fact seen again on another stream.

    A CLI may report one denial on stdout and on stderr; the two arrive in any order. A sighting is
    new when its stream has now seen the key more often than every other stream, so N real
    repetitions on one stream still count N times.
    """

    def __init__(self) -> None:
        self._seen: dict[str, Counter[str]] = {}

    def new(self, stream: str, key: str) -> bool:
        counts = self._seen.setdefault(key, Counter())
        counts[stream] += 1
        return all(counts[stream] > n for s, n in counts.items() if s != stream)


class JsonDocument:
    """Collects a pretty-printed JSON document that spans lines ('{' alone ... '}' alone)."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0

    @property
    def open(self) -> bool:
        return bool(self._lines)

    def feed(self, line: str) -> JsonObject | bool | None:
        """``True`` while collecting, the object when complete, ``False`` when not part of a document."""
        stripped = line.rstrip()
        if not self._lines:
            if stripped != "{":
                return False
            self._lines, self._size = ["{"], 1
            return True
        self._lines.append(stripped)
        self._size += len(stripped)
        if self._size > MAX_DOCUMENT:
            self._lines = []
            return False
        if stripped != "}":
            return True
        document, self._lines = "\n".join(self._lines), []
        try:
            found = orjson.loads(document)
        except orjson.JSONDecodeError:
            return None
        return found if isinstance(found, dict) else None


class RunLedger:
    """What one run has concluded so far, so that each conclusion is reported once.

    A CLI often states its give-up twice (Codex: an ``error`` then ``turn.failed``; Claude: a
    synthetic message then the ``result``): the first failure class reported wins. ``retry_cause``
    remembers why the CLI last retried by itself, for a run that ends before it gives up.
    """

    def __init__(self) -> None:
        self.failure: EventData | None = None
        self.result = False
        self.retry_cause: EventData | None = None

    def fail(self, payload: EventData | None) -> list[EventData]:
        """``[payload]`` if it is the run's first failure class, else ``[]``."""
        if payload is None or self.failure is not None:
            return []
        self.failure = payload
        return [payload]

    def unfinished(self, agent: str, exit_code: int | None) -> list[EventData]:
        """For a run that printed no final result: the last retry cause and a failed result."""
        if self.result:
            return []
        self.result = True
        out = self.fail(self.retry_cause)
        ended = "was stopped" if exit_code is None else f"exited {exit_code}"
        return [
            *out,
            AgentResult(ok=False, subtype="no_result", text=f"{agent} {ended} without a final result"),
        ]


def safely(parse: Callable[[], list[EventData]]) -> list[EventData]:
    """``parse()``, or ``[]`` when it raises: a line the parser did not foresee is kept raw, never fatal."""
    try:
        return parse()
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"; the line stays as output
        # A parser bug, not bad input: bad input is handled on purpose and never gets here.
        _log.warning("agent_parser_failed", error=type(exc).__name__, message=str(exc)[:200])
        return []


_JSON_AFTER_NEWLINE = re.compile(r"\n[^\S\n]*\{")  # a line that starts with '{' after blanks
_JSON_FIRST = re.compile(r"[^\S\n]*\{")


class LoudLines:
    """Which lines of a batch may yield a payload or change a parser's state: the *loud* ones.

    ``markers`` are every text the parser's plain-text path looks for (``in``, ``startswith``, the
    literal head of a regex). A line is loud when it contains a marker in any case, starts with '{'
    after blanks (JSON, or a pretty-printed document opening), or holds an ESC (``plain`` drops colour
    codes, which may split a marker). This is a superset of the lines that matter; a false positive
    only costs the time of ``parse_line``. A parser whose text path looks for a new text must add it
    here, or batches would skip its lines.

    The markers are found in one pass over the batch (``textscan.Needles``), never missing a line
    that ``marker in line.lower()`` would find.
    """

    def __init__(self, *markers: str) -> None:
        if any("\n" in m or not m for m in markers):
            raise ValueError(f"a marker must be one non-empty line: {markers!r}")
        lowered = {m.lower() for m in markers} | {"\x1b"}
        # a marker that contains another is found by the shorter one
        self.needles = tuple(sorted(n for n in lowered if not any(o != n and o in n for o in lowered)))
        self._scan = Needles(self.needles)

    def indexes(self, lines: Sequence[str]) -> Sequence[int]:
        """The indexes of the loud lines of ``lines``, ascending."""
        text = "\n".join(lines)
        data = Needles.lowered(text)  # byte for byte: a newline is the same byte, and no other is
        numbers: set[int] = set()
        line = offset = 0
        hits = self._scan.starts(data)
        for start in hits:  # counted between hits: no work at all for a quiet line
            line += data.count(b"\n", offset, start)
            offset = start
            numbers.add(line)
        json = "{" in text
        if (hits or json) and line + data.count(b"\n", offset) != len(lines) - 1:
            return range(len(lines))  # a line holds a newline itself, which shifts the numbers: all loud
        if json:
            starts = [found.start() + 1 for found in _JSON_AFTER_NEWLINE.finditer(text)]
            if _JSON_FIRST.match(text):
                numbers.add(0)
            line = offset = 0
            for start in starts:
                line += text.count("\n", offset, start)
                offset = start
                numbers.add(line)
        return sorted(numbers)


def parse_batch(
    parse_line: Callable[[Stream, str], list[EventData]],
    stream: Stream,
    lines: Sequence[str],
    loud: LoudLines,
    settled: Callable[[], bool] = lambda: True,
) -> list[tuple[int, list[EventData]]]:
    """``(index, payloads)`` of each line of ``lines`` whose ``parse_line`` payloads are not empty.

    Exactly as if ``parse_line(stream, line)`` had been called on every line in order (same payloads,
    same state after), but only loud lines are read: a quiet line yields nothing and changes nothing.
    While ``settled()`` is false (a parser in the middle of a multi-line document) every line is read.
    """
    found: list[tuple[int, list[EventData]]] = []
    index = 0
    for target in (*loud.indexes(lines), len(lines)):
        while index < target and not settled():
            if payloads := parse_line(stream, lines[index]):
                found.append((index, payloads))
            index += 1
        if target < len(lines) and (payloads := parse_line(stream, lines[target])):
            found.append((target, payloads))
        index = target + 1
    return found
