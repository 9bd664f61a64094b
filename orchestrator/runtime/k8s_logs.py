"""Following a pod's output through ``read_namespaced_pod_log(follow=True, timestamps=True)``.

Each line of a follow is ``<RFC3339Nano> <text>``. A follow can end while the container still runs
(the kubelet rotates its log file, a proxy drops the connection: kubernetes/kubernetes#115701,
kubernetes-client/python#1546); ``follow`` then re-opens it and skips what it already gave, by
timestamp and by how many lines it gave at the last timestamp, so no line is lost or repeated. A
last line without a newline is given only once the container has ended (until then it may be half
of a line the kubelet is still writing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final

import aiohttp
from kubernetes.aio import client as k8s

from orchestrator.log import get_logger
from orchestrator.runtime.k8s_api import vendor_errors
from orchestrator.runtime.k8s_manifests import CONTAINER
from orchestrator.runtime.lines import TimestampError, parse_timestamp_ns
from orchestrator.runtime.spec import LogLine, StreamName

log = get_logger(__name__)
FOLLOW_TIMEOUT_S: Final = 7 * 24 * 3600.0  # the client's default (300 s total) would cut longer follows
_QUEUE: Final = 8192  # lines buffered per pod when following stdout and stderr apart


class Cursor:
    """Where a follow is: after a re-connect, lines up to here are duplicates."""

    def __init__(self, since_ns: int | None) -> None:
        self.last_ns = since_ns if since_ns is not None else -1
        self.at_last: int | None = None  # lines given at ``last_ns``; None: skip every one of them
        self._skip = 0

    def rewind(self) -> None:
        """A new follow starts again from the container's first line."""
        self._skip = self.at_last or 0

    def fresh(self, line: LogLine) -> bool:
        """Whether ``line`` was not given yet (and note it as given)."""
        if line.time_ns < self.last_ns:
            return False
        if line.time_ns == self.last_ns:
            if self.at_last is None:
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            self.at_last += 1
            return True
        self.last_ns, self.at_last, self._skip = line.time_ns, 1, 0
        return True


def parse_line(raw: bytes, stream: StreamName, previous_ns: int) -> LogLine:
    """One ``<RFC3339Nano> <text>`` line; a line without a time keeps the previous line's time."""
    stamp, _, payload = raw.partition(b" ")
    try:
        time_ns = parse_timestamp_ns(stamp)
    except TimestampError:
        log.warning("log_line_without_timestamp", stream=stream, head=raw[:40].decode("utf-8", "replace"))
        return LogLine(stream, raw.decode("utf-8", "replace"), max(previous_ns, 0))
    return LogLine(stream, payload.decode("utf-8", "replace"), time_ns)


# Whether the pod has ended (True), still runs (False), or is gone (None).
Ended = Callable[[], Awaitable[bool | None]]


async def follow(
    core: k8s.CoreV1Api,
    namespace: str,
    pod: str,
    *,
    ended: Ended,
    stream: StreamName = "stdout",
    kube_stream: str | None = None,
    since_ns: int | None = None,
    retry_s: float = 0.5,
) -> AsyncGenerator[LogLine, None]:
    """The lines of one stream of ``pod`` after ``since_ns``, until the container ends.

    ``kube_stream`` (``Stdout``/``Stderr``) selects one stream on a server that splits them; None
    reads the merged output, all of it named ``stream``.
    """
    cursor = Cursor(since_ns)
    action = f"follow the output of pod {pod}"
    while True:
        cursor.rewind()
        pending = bytearray()
        with vendor_errors(action):
            response = await core.read_namespaced_pod_log_without_preload_content(
                pod, namespace, container=CONTAINER, follow=True, timestamps=True, stream=kube_stream,
                _request_timeout=FOLLOW_TIMEOUT_S,
            )  # fmt: skip
        try:
            if response.status >= 400:
                with vendor_errors(action):
                    text = await response.text()
                    raise k8s.ApiException(status=response.status, reason=response.reason, body=text)
            async for chunk in response.content.iter_any():
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = parse_line(bytes(pending[:end]), stream, cursor.last_ns)
                    del pending[: end + 1]
                    if cursor.fresh(line):
                        yield line
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("log_follow_dropped", pod=pod, stream=stream, error=f"{type(err).__name__}: {err}")
            pending.clear()
        finally:
            response.close()
        state = await ended()
        if state is None:
            return  # deleted (stopped): its follow ended with its container
        if state:
            if pending:
                line = parse_line(bytes(pending), stream, cursor.last_ns)
                if cursor.fresh(line):
                    yield line
            return
        await asyncio.sleep(retry_s)  # the follow ended early: open it again


async def follow_both(
    core: k8s.CoreV1Api, namespace: str, pod: str, *, ended: Ended, since_ns: int | None, retry_s: float
) -> AsyncGenerator[LogLine, None]:
    """stdout and stderr followed apart (a server with ``PodLogsQuerySplitStreams``), each in order."""
    queue: asyncio.Queue[LogLine | Exception | None] = asyncio.Queue(maxsize=_QUEUE)

    async def pump(stream: StreamName, kube_stream: str) -> None:
        try:
            lines = follow(core, namespace, pod, ended=ended, stream=stream, kube_stream=kube_stream,
                           since_ns=since_ns, retry_s=retry_s)  # fmt: skip
            async for line in lines:
                await queue.put(line)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(err)
        await queue.put(None)

    tasks = [asyncio.create_task(pump("stdout", "Stdout")), asyncio.create_task(pump("stderr", "Stderr"))]
    try:
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
