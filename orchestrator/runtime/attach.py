"""Docker ``attach``, opened between ``create`` and ``start``: a container's output as it is written.

``open_attach`` speaks HTTP/1.1 on a raw socket (``unix://`` or plain ``tcp://``) and asks for the
connection to be upgraded (``Connection: Upgrade``, ``Upgrade: tcp``), as docker-py's
``attach_socket`` does; the engine then sends the container's stdout and stderr as multiplexed
frames until the container's output ends, at its exit. ``Attached`` reads that socket in a thread
of its own, 64 KiB at a time, and makes lines (``lines.AttachLines``): a line is whole however long
(attach has no 16 KiB messages) up to ``lines.MAX_LINE`` (1 MiB), beyond which it comes in pieces
of that size; its time is when its last bytes were received (``time.time_ns()``, never decreasing
within a container).

An ``Attached`` is *unclaimed* until the first stream of its container takes it (``claim``). Until
then it keeps the raw bytes it reads with their times (compact, and no work for a stream that may
never come), at most ``UNCLAIMED_BYTES`` (8 MiB) and for at most ``UNCLAIMED_S`` (10 s): past either
it is *dropped* (socket closed, bytes discarded) and the stream reads the engine's stored log from
the start instead, so nothing is lost and a container nobody reads is never held up by a full
attach socket. ``claim`` makes lines of the kept bytes; from then on the thread hands lines to the
consumer's ``Pipe``. A slow consumer makes the thread wait, and the engine then holds up the
container's writes: backpressure on the container's stdout, which is intended.

When the connection ends by itself, the thread asks the engine (``runs_on``) whether the container
still runs. It normally has exited (its last line without newline is then flushed and the stream
ends); if it runs on (the connection broke), a claimed stream gets ``End(resume=counts)`` and goes
on from the stored log, and an unclaimed one is dropped. An error from the engine goes to the
consumer, which raises it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum
from urllib.parse import urlsplit

from orchestrator.runtime.lines import AttachLines
from orchestrator.runtime.pipe import End, Item, Pipe

RECV = 64 * 1024
UNCLAIMED_S = 10.0
UNCLAIMED_BYTES = 8 * 1024 * 1024
_POLL_S = 0.5  # an unclaimed reader of a silent container looks at its deadline this often
_HEAD_LIMIT = 64 * 1024


class AttachRefused(Exception):
    """The engine did not upgrade the connection to an attach stream."""


def open_attach(
    url: str, api_version: str, container_id: str, timeout_s: float
) -> tuple[socket.socket, bytes]:
    """An attach connection to ``container_id``'s stdout and stderr on the engine at ``url``.

    Returns the socket and any stream bytes that came with the response head. Raises ``OSError``
    if the engine cannot be reached, ``AttachRefused`` if it answers anything but 101 Switching
    Protocols (or ``url`` is neither ``unix://`` nor plain ``tcp://``/``http://``).
    """
    target = f"/v{api_version}/containers/{container_id}/attach?stream=1&stdout=1&stderr=1"
    scheme, _, rest = url.partition("://")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = rest
        host = "docker"
    elif scheme in ("tcp", "http"):
        parts = urlsplit(f"http://{rest}")
        sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
        address = (parts.hostname or "localhost", parts.port or 2375)
        host = parts.netloc
    else:
        raise AttachRefused(f"attach over {scheme}:// is not spoken here")
    try:
        sock.settimeout(timeout_s)
        sock.connect(address)
        request = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: orchestrator\r\n"
            "Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        answer = bytearray()
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(RECV)
            if not chunk or len(answer) > _HEAD_LIMIT:
                raise AttachRefused(f"the engine closed the attach request ({bytes(answer[:200])!r})")
            answer += chunk
        head, _, body = bytes(answer).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or status[1] != b"101":
            raise AttachRefused(f"the engine answered {head[:100]!r}, not 101 Switching Protocols")
    except BaseException:
        sock.close()
        raise
    return sock, body


class _State(Enum):
    UNCLAIMED = "unclaimed"
    CLAIMED = "claimed"
    DROPPED = "dropped"  # closed by us: the consumer left, the runtime closed, or nobody claimed it


class Attached:
    """One container's attach connection and its reader thread; see the module docstring.

    ``runs_on(clean)``: asked once the connection has ended (``clean``: the engine closed it, as
    at an exit); whether the container still runs. It may raise; the consumer gets the error.
    """

    def __init__(
        self,
        container_id: str,
        sock: socket.socket,
        head: bytes,
        runs_on: Callable[[bool], bool],
        *,
        unclaimed_s: float = UNCLAIMED_S,
        unclaimed_bytes: int = UNCLAIMED_BYTES,
    ) -> None:
        self.container_id = container_id
        self._sock = sock
        self._head = head
        self._runs_on = runs_on
        self._deadline = time.monotonic() + unclaimed_s
        self._max_bytes = unclaimed_bytes
        self._lock = threading.Lock()  # the state, the kept bytes, the socket
        self._state = _State.UNCLAIMED
        self._kept: list[tuple[int, bytes]] = []
        self._kept_bytes = 0
        self._exited_at: int | None = None  # unclaimed, read to the end of a container that exited
        self._pipe: Pipe | None = None
        self._open = True  # the socket; closed by the thread only, under the lock
        self._closing = False  # the runtime closes: end the stream without asking the engine
        self._parse = threading.Lock()  # the lines; taken after ``_lock``, never the other way
        self._lines = AttachLines()
        self._thread = threading.Thread(
            target=self._run, name=f"logs-{container_id[:12]}-attach", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def finished(self) -> bool:
        """The reader thread has ended."""
        return not self._thread.is_alive()

    @property
    def unclaimed(self) -> bool:
        """Still waiting for its first stream (and not past its deadline)."""
        with self._lock:
            return self._state is _State.UNCLAIMED and time.monotonic() <= self._deadline

    @property
    def kept(self) -> int:
        """Bytes read and kept for the first stream (0 once claimed or dropped)."""
        with self._lock:
            return self._kept_bytes if self._state is _State.UNCLAIMED else 0

    def claim(self, pipe: Pipe) -> list[Item] | None:
        """Take the stream: the lines read so far (and ``End`` if that was all); ``pipe`` gets the rest.

        None if it was dropped or is past its deadline (then read the stored log instead). Makes
        lines of up to ``UNCLAIMED_BYTES``: call it off the event loop.
        """
        with self._lock:
            if self._state is not _State.UNCLAIMED or time.monotonic() > self._deadline:
                self._drop()
                return None
            self._state, self._pipe = _State.CLAIMED, pipe
            kept, self._kept, exited_at = self._kept, [], self._exited_at
            self._parse.acquire()  # before the thread can make lines of newer bytes
        try:
            lines = [line for time_ns, data in kept for line in self._lines.feed(data, time_ns)]
            if exited_at is not None:
                lines += self._lines.flush(exited_at)
        finally:
            self._parse.release()
        items: list[Item] = [lines] if lines else []
        return [*items, End()] if exited_at is not None else items

    def drop(self) -> None:
        """Unclaimed: close it and discard its bytes (the stored log will serve). Claimed: nothing."""
        with self._lock:
            if self._state is _State.UNCLAIMED:
                self._drop()

    def leave(self) -> None:
        """The claiming consumer has gone: close the connection; the thread ends quietly."""
        with self._lock:
            self._state = _State.DROPPED
            self._shut()

    def interrupt(self) -> None:
        """Cut the connection (the container was removed); the thread then asks the engine."""
        with self._lock:
            self._shut()

    def close(self) -> None:
        """The runtime closes: an unclaimed reader is dropped, a claimed stream ends."""
        with self._lock:
            self._closing = True
            if self._state is _State.UNCLAIMED:
                self._drop()
            self._shut()

    # -- the reader thread -------------------------------------------------------------------
    def _drop(self) -> None:  # under the lock
        self._state = _State.DROPPED
        self._kept.clear()
        self._kept_bytes = 0
        self._shut()

    def _shut(self) -> None:  # under the lock; wakes a blocked recv (close would not)
        if self._open:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _claimed_pipe(self) -> Pipe | None:
        with self._lock:
            return self._pipe if self._state is _State.CLAIMED else None

    def _take(self, data: bytes, time_ns: int) -> bool:
        """Keep ``data`` (unclaimed) or hand its lines on (claimed); False once the thread should stop."""
        with self._lock:
            if self._state is _State.UNCLAIMED:
                self._kept.append((time_ns, data))
                self._kept_bytes += len(data)
                if self._kept_bytes > self._max_bytes or time.monotonic() > self._deadline:
                    self._drop()
                    return False
                return True
        pipe = self._claimed_pipe()
        if pipe is None:
            return False
        with self._parse:
            lines = self._lines.feed(data, time_ns)
        return not lines or pipe.put(lines)

    def _end(self, item: Item) -> None:
        """The last item of a stream that did not end cleanly: to a claimed consumer; unclaimed, drop."""
        self.drop()  # the stream that comes reads the stored log and asks the engine itself
        pipe = self._claimed_pipe()
        if pipe is not None:
            pipe.put(item)

    def _run(self) -> None:
        try:
            self._read()
        finally:
            with self._lock:
                self._open = False
                self._sock.close()

    def _read(self) -> None:
        self._sock.settimeout(_POLL_S)
        data, time_ns, clean = self._head, 0, False
        while True:
            if data:
                time_ns = max(time.time_ns(), time_ns)
                if not self._take(data, time_ns):
                    return
            try:
                data = self._sock.recv(RECV)
            except TimeoutError:
                if self._stopping():
                    return
                data = b""
                continue
            except OSError:
                break  # reset: the connection broke
            if not data:
                clean = True
                break
        if self._stopping():
            return
        try:
            runs_on = self._runs_on(clean)
        except Exception as err:  # noqa: BLE001 - the engine's answer goes to the consumer, which raises it
            self._end(err)
            return
        if runs_on:
            with self._parse:
                counts = dict(self._lines.counts)
            self._end(End(resume=counts))  # its partial lines are left to the stored log
            return
        self._exited(max(time.time_ns(), time_ns))

    def _exited(self, time_ns: int) -> None:
        """Read to the end of a container that exited: flush the last lines, then ``End``."""
        with self._lock:
            if self._state is _State.UNCLAIMED:
                self._exited_at = time_ns  # ``claim`` flushes
                return
        pipe = self._claimed_pipe()
        if pipe is None:
            return
        with self._parse:
            last = self._lines.flush(time_ns)
        if not last or pipe.put(last):
            pipe.put(End())

    def _stopping(self) -> bool:
        """Dropped, left, closing or unclaimed too long: the thread ends (a closing runtime's stream gets its end)."""
        with self._lock:
            if self._state is _State.UNCLAIMED and time.monotonic() > self._deadline:
                self._drop()
            state, closing = self._state, self._closing
            pipe = self._pipe if state is _State.CLAIMED else None
        if state is _State.DROPPED:
            return True
        if closing and pipe is not None:
            pipe.put(End())
        return closing
