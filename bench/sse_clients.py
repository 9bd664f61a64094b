"""SSE readers in their own process: ``python -m bench.sse_clients URL N`` (the dashboards).

Opens ``N`` streams of ``URL`` at once (HTTP/1.1 on a plain asyncio connection, the chunked body
decoded here: a client library's per-chunk work would be measured with the server), prints ``READY``
once every response has started,
reads each stream to its end (the server ends it after ``session_finished``, or at an ``event: end``)
and prints one JSON line: per stream the count of events, the first and last id, whether the ids
were gap-free, the events per type, and the latencies (ms) of events whose line carries
``t=<CLOCK_MONOTONIC seconds>`` (CLOCK_MONOTONIC is one clock for every process of the machine).
Messages are read a chunk at a time, split into lines once, so that a reader keeps up with a flood
and costs the machine's CPU as little as can be (it shares the machine with what it measures).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

STAMP = re.compile(rb"\bt=(\d+\.\d+)")  # in a data line
STAMP_WITHIN = 1024  # bytes of a data line a stamp is looked for in (B3's events are small)
RECV = 256 * 1024
END_TYPES = (b"session_finished", b"end")
PER_PROCESS = 25  # readers per process: one process parsing 100 streams would measure itself


@dataclass
class Reader:
    """What one stream delivered."""

    count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    gaps: int = 0
    types: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    last_at: dict[str, float] = field(default_factory=dict)  # type -> time its last event arrived

    def take(self, text: bytes, now: float) -> bool:
        """Whole SSE messages (CRLF or LF line ends); True when one ends the stream.

        Read a chunk at a time, split into its lines once (a message's data is one line however
        long): a flood of events must not make the reader the bottleneck, or the CPU hog, of what it
        measures.
        """
        kinds: Counter[bytes] = Counter()
        ids: list[bytes] = []
        data = 0
        ending = False
        for line in text.split(b"\n"):
            if line.startswith(b"data:"):
                data += 1
                if line.find(b"t=", 0, STAMP_WITHIN) >= 0 and (found := STAMP.search(line, 0, STAMP_WITHIN)):
                    self.latencies_ms.append((now - float(found.group(1))) * 1000)
            elif line.startswith(b"event:"):
                kind = _value(line, 6)
                kinds[kind] += 1
                ending = ending or kind in END_TYPES
            elif line.startswith(b"id:"):
                ids.append(_value(line, 3))
            elif ending and line in (b"", b"\r"):
                break  # nothing after the message that ends the stream counts
        pings = kinds.pop(b"ping", 0)
        self.count += max(data - pings, 0)
        for kind, n in kinds.items():
            name = kind.decode(errors="replace")
            self.types[name] += n
            self.last_at[name] = now
        if ids:
            try:
                seqs = list(map(int, ids))
            except ValueError:
                seqs = [int(i) if i.isdigit() else -1 for i in ids]
            first = self.last_id + 1 if self.last_id is not None else seqs[0]
            if seqs != list(range(first, first + len(seqs))):  # an id that is not the next seq is a gap
                expected = first
                for seq in seqs:
                    self.gaps += seq != expected
                    expected = seq + 1 if seq >= 0 else expected
            good = [seq for seq in seqs if seq >= 0]
            if good:
                self.first_id = good[0] if self.first_id is None else self.first_id
                self.last_id = good[-1]
        return ending

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "first_id": self.first_id, "last_id": self.last_id, "gaps": self.gaps,
                "types": dict(self.types), "latencies_ms": self.latencies_ms, "last_at": self.last_at}  # fmt: skip


class ChunkedBody:
    """HTTP/1.1's chunked transfer coding -> the body's bytes, from pieces cut anywhere.

    ``done`` once the last (empty) chunk came; a size that is not hexadecimal raises ``ValueError``.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._left = 0  # bytes of the current chunk's data still to come
        self._crlf = 0  # bytes of the CRLF after a chunk's data still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        pending, out = self._pending + data if self._pending else data, []
        at, size = 0, len(pending)
        while at < size and not self.done:
            if self._left:
                end = min(at + self._left, size)
                out.append(pending[at:end])
                self._left -= end - at
                at = end
                self._crlf = 0 if self._left else 2
            elif self._crlf:
                skip = min(self._crlf, size - at)
                self._crlf -= skip
                at += skip
            else:
                line_end = pending.find(b"\r\n", at)
                if line_end < 0:
                    break
                self._left = int(pending[at:line_end].split(b";", 1)[0], 16)
                self.done = self._left == 0
                at = line_end + 2
        self._pending = pending[at:]
        return b"".join(out)


async def read(url: str, reader: Reader, started: asyncio.Event) -> None:
    """Read one stream to its end; messages are split on the blank line, in bytes (no text decoding)."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    stream, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port or 80, limit=RECV), 30.0
    )
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = await stream.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split(b" ")
        if len(status) < 2 or status[1] != b"200":
            raise RuntimeError(f"GET {url} answered {head[:300]!r} {(await stream.read(300))!r}")
        started.set()
        body = ChunkedBody() if b"transfer-encoding: chunked" in head.lower() else None
        buffer = b""
        while chunk := await stream.read(RECV):
            now = time.monotonic()
            buffer += body.feed(chunk) if body is not None else chunk
            cut = max(buffer.rfind(b"\n\n"), buffer.rfind(b"\n\r\n"))  # the end of the last whole message
            if cut < 0:
                continue
            whole, buffer = buffer[: cut + 1], buffer[cut + 1 :]
            if reader.take(whole, now) or (body is not None and body.done):
                return
    finally:
        writer.close()


async def main(url: str, n: int) -> list[dict[str, Any]]:
    readers = [Reader() for _ in range(n)]
    started = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(read(url, r, s)) for r, s in zip(readers, started, strict=True)]
    waiting: asyncio.Future[Any] = asyncio.gather(*(s.wait() for s in started))
    pending: set[asyncio.Future[Any]] = {waiting, *tasks}
    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        waiting.cancel()
        for task in done:
            task.result()  # a stream failed before every reader started: say why
    print("READY", flush=True)
    begun = time.process_time()
    await asyncio.gather(*tasks)
    cpu_s = time.process_time() - begun  # what reading cost this process (it shares the machine)
    return [{**r.summary(), "process_cpu_s": round(cpu_s, 3)} for r in readers]


def _value(line: bytes, skip: int) -> bytes:
    """A field's value: after its name and colon, one optional space, without a CR at the end."""
    value = line[skip:].rstrip(b"\r")
    return value[1:] if value.startswith(b" ") else value


class Clients:
    """The parent's handle on the reader processes (``await Clients.spawn(url, n)``)."""

    def __init__(self) -> None:
        self._processes: list[asyncio.subprocess.Process] = []

    @classmethod
    async def spawn(
        cls, url: str, n: int, per_process: int = PER_PROCESS, ready_timeout_s: float = 60.0
    ) -> Clients:
        """Start ``n`` readers of ``url`` (at most ``per_process`` per process); returns once all are connected."""
        clients = cls()
        try:
            for first in range(0, n, per_process):
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.sse_clients", url, str(min(per_process, n - first)),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                clients._processes.append(process)
            for process in clients._processes:
                assert process.stdout is not None
                try:
                    line = await asyncio.wait_for(process.stdout.readline(), ready_timeout_s)
                except TimeoutError:
                    raise RuntimeError(
                        f"SSE readers of {url} did not connect within {ready_timeout_s:g} s"
                    ) from None
                if line.strip() != b"READY":
                    raise RuntimeError(
                        f"SSE readers of {url} failed to start: {line!r} {await _stderr(process)}"
                    )
        except BaseException:
            await clients.kill()
            raise
        return clients

    async def results(self, timeout_s: float = 600.0) -> list[dict[str, Any]]:
        """Every reader's summary, once every stream has ended."""
        found: list[dict[str, Any]] = []
        try:
            for process in self._processes:
                assert process.stdout is not None
                out = await asyncio.wait_for(process.stdout.read(), timeout_s)
                await process.wait()
                if process.returncode != 0 or not out.strip():
                    raise RuntimeError(f"the SSE readers failed: {await _stderr(process)}")
                found += orjson.loads(out.strip().splitlines()[-1])
        except TimeoutError:
            raise RuntimeError(f"the SSE readers did not finish within {timeout_s:g} s") from None
        finally:
            await self.kill()
        return found

    async def kill(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _stderr(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.kill()
    await process.wait()
    assert process.stderr is not None
    return (await process.stderr.read()).decode(errors="replace")[-2000:]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sse_clients")
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    args = parser.parse_args()
    summaries = asyncio.run(main(args.url, args.n))
    sys.stdout.write(orjson.dumps(summaries).decode() + "\n")
