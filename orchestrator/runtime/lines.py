"""Frames to lines: the pure half of log streaming.

Docker stores a container's output as messages of at most 16 KiB; a longer line arrives as several
frames, and a last line without a newline arrives as a frame of its own at exit. With
``timestamps=True`` each frame starts with ``<RFC3339Nano> ``. ``LineAssembler`` rejoins frames
into lines, splitting on the newline *byte* and decoding each complete line as a whole, so a UTF-8
character cut in two by a frame boundary is decoded intact (a newline byte never occurs inside a
multi-byte character). Invalid UTF-8 becomes U+FFFD instead of an error. A line's time is the time
of the frame it began in (Docker gives every fragment of a split line that same time).

With ``fragment_size`` set (Docker: 16 KiB), a line also ends where Docker's ``local`` log driver
drops the newline after the last fragment of a split line (Engine 20.10): at a fragment shorter
than ``fragment_size`` that has no newline, and at a frame with a new time (a new message).
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.runtime.spec import LogLine, StreamName

_NS = 1_000_000_000


class TimestampError(ValueError):
    """A frame did not start with an RFC 3339 timestamp."""


class _EpochCache:
    """``YYYY-MM-DDTHH:MM:SS`` -> epoch seconds, remembering the last answer (lines share seconds)."""

    def __init__(self) -> None:
        self._key = b""
        self._value = 0

    def seconds(self, prefix: bytes) -> int:
        if prefix != self._key:
            try:
                moment = datetime.strptime(prefix.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
            except (UnicodeDecodeError, ValueError) as err:
                raise TimestampError(f"not a timestamp: {prefix!r}") from err
            self._value = int(moment.replace(tzinfo=UTC).timestamp())
            self._key = prefix
        return self._value


def parse_timestamp_ns(raw: bytes, cache: _EpochCache | None = None) -> int:
    """Nanoseconds since the epoch of ``2026-01-02T03:04:05.123456789Z`` (UTC, any fraction length)."""
    if len(raw) < 20 or not raw.endswith(b"Z"):
        raise TimestampError(f"not a UTC RFC 3339 timestamp: {raw[:40]!r}")
    seconds = (cache or _EpochCache()).seconds(raw[:19])
    fraction = raw[19:-1]
    if not fraction:
        return seconds * _NS
    digits = fraction[1:]
    if fraction[:1] != b"." or not digits.isdigit() or len(digits) > 9:
        raise TimestampError(f"bad fraction in timestamp: {raw[:40]!r}")
    return seconds * _NS + int(digits.ljust(9, b"0"))


class LineAssembler:
    """Rejoins one stream's frames into ``LogLine``s. Not thread-safe: one per stream."""

    def __init__(self, stream: StreamName, fragment_size: int | None = None) -> None:
        self.stream: StreamName = stream
        self.fragment_size = fragment_size
        self._buffer = bytearray()
        self._line_ns: int | None = None
        self._cache = _EpochCache()

    def split(self, frame: bytes) -> tuple[int, bytes]:
        """``<timestamp> <payload>`` -> (nanoseconds, payload); ``TimestampError`` if unstamped."""
        stamp, _, payload = frame.partition(b" ")
        return parse_timestamp_ns(stamp, self._cache), payload

    def feed_timestamped(self, frame: bytes) -> list[LogLine]:
        """Feed one ``<timestamp> <payload>`` frame; return the lines it completed."""
        return self.feed(*self.split(frame))

    def feed(self, time_ns: int, payload: bytes) -> list[LogLine]:
        """Feed a payload that the runtime stamped ``time_ns``; return the lines it completed."""
        lines: list[LogLine] = []
        if self.fragment_size and self._line_ns is not None and time_ns != self._line_ns:
            lines += self.flush()  # a new message: the pending line's newline was dropped
        start = 0
        while True:
            end = payload.find(b"\n", start)
            if end < 0:
                break
            line_ns = time_ns if self._line_ns is None else self._line_ns
            self._buffer += payload[start:end]
            lines.append(LogLine(self.stream, self._buffer.decode("utf-8", "replace"), line_ns))
            self._buffer.clear()
            self._line_ns = None
            start = end + 1
        if start < len(payload):
            if self._line_ns is None:
                self._line_ns = time_ns
            self._buffer += payload[start:]
            if self.fragment_size and start == 0 and len(payload) < self.fragment_size:
                lines += self.flush()  # a short fragment without newline: the last of its line
        return lines

    def flush(self) -> list[LogLine]:
        """At the end of the stream: the last line if it had no newline."""
        if self._line_ns is None:
            return []
        line = LogLine(self.stream, self._buffer.decode("utf-8", "replace"), self._line_ns)
        self._buffer.clear()
        self._line_ns = None
        return [line]
