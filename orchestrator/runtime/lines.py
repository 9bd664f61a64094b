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

``attach`` gives the container's bytes as written, in multiplexed frames without timestamps:
``Demuxer`` takes the frames apart per stream, ``ChunkLines`` makes lines of each stream's bytes and
``AttachLines`` runs of them (``LineRun``: a stream's lines of one read, one time).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from orchestrator.runtime.spec import NS_PER_S, LineRun, LogLine, StreamName

_FRAME_HEADER = struct.Struct(">B3xL")
_HEADER = _FRAME_HEADER.size
MAX_LINE = 1024 * 1024  # longest line ``ChunkLines`` keeps whole; longer ones come in pieces


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
        return seconds * NS_PER_S
    digits = fraction[1:]
    if fraction[:1] != b"." or not digits.isdigit() or len(digits) > 9:
        raise TimestampError(f"bad fraction in timestamp: {raw[:40]!r}")
    return seconds * NS_PER_S + int(digits.ljust(9, b"0"))


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


class Demuxer:
    """Docker's multiplexed stream (``attach``/``logs`` without a TTY) -> ``(stream, payload)`` pieces.

    Each frame is an 8-byte header ``[stream, 0, 0, 0, size as big-endian uint32]`` then ``size``
    bytes; stream 2 is stderr, anything else stdout. Bytes arrive cut anywhere; a frame is handed
    out once whole. Consecutive frames of one stream are joined into one piece.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[StreamName, bytes]]:
        buffer = self._buffer
        buffer += data
        pieces: list[tuple[StreamName, bytes]] = []
        size, position = len(buffer), 0
        with memoryview(buffer) as view:
            parts: list[memoryview] = []  # the payloads of the current run of one stream, joined once
            current: StreamName = "stdout"
            while size - position >= _HEADER:
                kind, length = _FRAME_HEADER.unpack_from(buffer, position)
                end = position + _HEADER + length
                if end > size:
                    break
                stream: StreamName = "stderr" if kind == 2 else "stdout"
                if stream != current and parts:
                    pieces.append((current, b"".join(parts)))
                    parts.clear()
                current = stream
                parts.append(view[position + _HEADER : end])
                position = end
            if parts:
                pieces.append((current, b"".join(parts)))
            for part in parts:
                part.release()
            parts.clear()
        del buffer[:position]
        return pieces


class ChunkLines:
    """One stream's bytes, cut anywhere (no frames of its own: Docker ``attach``) -> line texts.

    Lines split on the newline byte and are decoded whole (invalid UTF-8 -> U+FFFD), so a character
    cut by a chunk boundary is intact. A line longer than ``max_line`` bytes is cut into pieces of at
    most ``max_line`` bytes (at a character boundary), so an endless line costs bounded memory;
    ``flush`` gives a last line without newline.
    """

    def __init__(self, stream: StreamName, max_line: int = MAX_LINE) -> None:
        if max_line < 4:
            raise ValueError(f"max_line must hold a UTF-8 character (>= 4 bytes), got {max_line}")
        self.stream: StreamName = stream
        self.max_line = max_line
        self._rest = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes."""
        last = data.rfind(b"\n")
        if last < 0:
            self._rest += data
            return self._overflow() if len(self._rest) > self.max_line else []
        with memoryview(data) as view:  # slices without copies: the bytes are copied once, decoded once
            complete: bytes | memoryview = view[:last]
            if self._rest:
                complete = b"".join((self._rest, complete))
                self._rest.clear()
            self._rest += view[last + 1 :]
            if len(complete) <= self.max_line:  # no line can be too long: decode the chunk at once
                texts = str(complete, "utf-8", "replace").split("\n")
            else:
                texts = [
                    piece.decode("utf-8", "replace")
                    for raw in bytes(complete).split(b"\n")
                    for piece in self._pieces(raw)
                ]
            if isinstance(complete, memoryview):
                complete.release()
        if len(self._rest) > self.max_line:
            texts += self._overflow()
        return texts

    def flush(self) -> list[str]:
        """At the end of the stream: the last line if it had no newline."""
        if not self._rest:
            return []
        text = self._rest.decode("utf-8", "replace")
        self._rest.clear()
        return [text]

    def _overflow(self) -> list[str]:
        """Hand out the pending line's first pieces, keeping at most ``max_line`` bytes of it."""
        rest, texts = self._rest, []
        while len(rest) > self.max_line:
            cut = _boundary(rest, self.max_line)
            texts.append(rest[:cut].decode("utf-8", "replace"))
            del rest[:cut]
        return texts

    def _pieces(self, raw: bytes) -> list[bytes]:
        pieces = []
        while len(raw) > self.max_line:
            cut = _boundary(raw, self.max_line)
            pieces.append(raw[:cut])
            raw = raw[cut:]
        pieces.append(raw)
        return pieces


def _boundary(data: bytes | bytearray, limit: int) -> int:
    """Where to cut ``data`` at most ``limit`` bytes in, not inside a UTF-8 character if it can help."""
    cut = limit
    while cut > limit - 3 and data[cut] & 0xC0 == 0x80:  # a continuation byte: its character began before
        cut -= 1
    return cut if data[cut] & 0xC0 != 0x80 else limit


class AttachLines:
    """A whole attach stream (both streams' frames, cut anywhere) -> ``LineRun``s, counted per stream.

    Each stream's lines completed by one ``feed`` are one run, stamped with the time given.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._demuxer = Demuxer()
        self._streams = {"stdout": ChunkLines("stdout", max_line), "stderr": ChunkLines("stderr", max_line)}
        self.counts: dict[StreamName, int] = {"stdout": 0, "stderr": 0}

    def feed(self, data: bytes, time_ns: int) -> list[LineRun]:
        """The lines ``data`` completes, in the order their frames came, stamped ``time_ns``."""
        runs: list[LineRun] = []
        for stream, payload in self._demuxer.feed(data):
            texts = self._streams[stream].feed(payload)
            if texts:
                self.counts[stream] += len(texts)
                if runs and runs[-1].stream == stream:
                    runs[-1].texts.extend(texts)
                else:
                    runs.append(LineRun(stream, texts, time_ns))
        return runs

    def flush(self, time_ns: int) -> list[LineRun]:
        """At the end: each stream's last line without newline (stdout's first)."""
        runs: list[LineRun] = []
        for stream in ("stdout", "stderr"):
            texts = self._streams[stream].flush()
            if texts:
                self.counts[stream] += len(texts)
                runs.append(LineRun(stream, texts, time_ns))
        return runs
