"""A container's stored log, read through docker-py's ``logs(follow=True, timestamps=True)``.

``Follower`` is one thread reading one stream (stdout or stderr) of one container and handing its
lines to a ``Pipe``. The daemon stores every line from the container's first byte (``DockerRuntime``
sets the ``local`` log driver), and each frame it sends starts with its RFC 3339 time, so a follow can
start after any moment (``since``, whole seconds; the consumer filters exactly) and a fresh process can
continue a stream where a previous one stopped. The daemon cuts lines longer than 16 KiB into
messages; ``LineAssembler`` joins them again.

A follow can end early, and then the follower reads again after the last frame it saw: see
``Follower``. Only ``runtime.docker`` and its ``docker_*`` modules import ``docker``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker

from orchestrator.runtime.docker_errors import vendor_errors
from orchestrator.runtime.lines import LineAssembler
from orchestrator.runtime.pipe import End, Pipe
from orchestrator.runtime.runs import runs_of
from orchestrator.runtime.spec import NS_PER_S, ContainerInfo, StreamName

_FRAGMENT = 16 * 1024  # the daemon cuts longer lines into messages of this size


class Follower:
    """One thread reading one stream (stdout or stderr) of one container.

    A follow stream can end a moment before the daemon stores the container's last output (a
    final line without a newline, flushed at exit, is sometimes missed), or early if the engine
    drops the connection. So when it ends, the follower reads again from the last frame it saw,
    skipping the frames it already has, until the container has stopped and a final read is done.

    ``client`` gives the runtime's docker-py client and ``inspect`` the container's state; both
    block and are called from the follower's thread.
    """

    def __init__(
        self,
        client: Callable[[], docker.DockerClient],
        inspect: Callable[[str], ContainerInfo],
        container_id: str,
        stream: StreamName,
        since_s: int,
    ) -> None:
        self._client = client
        self._inspect = inspect
        self._id = container_id
        self._stream: StreamName = stream
        self._since_s = since_s
        self._lock = threading.Lock()
        self._cancelled = False
        self._logs: Any = None
        self._assembler = LineAssembler(stream, fragment_size=_FRAGMENT)
        self._last_ns = 0
        self._seen_at_last = 0  # frames already fed whose time is _last_ns (split lines share it)

    def start(self, pipe: Pipe) -> None:
        thread = threading.Thread(
            target=self._run, args=(pipe,), name=f"logs-{self._id[:12]}-{self._stream}", daemon=True
        )
        thread.start()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            logs = self._logs
        if logs is not None:
            with contextlib.suppress(Exception):  # closing an already closed socket is fine
                logs.close()

    def _run(self, pipe: Pipe) -> None:
        try:
            follow = True
            while True:
                if not self._read(pipe, follow=follow):
                    return
                if not follow:
                    break
                follow = self._inspect(self._id).running
                if follow:
                    time.sleep(0.1)  # the connection dropped while running: reconnect, gently
            last = self._assembler.flush()
            if last:
                pipe.put(runs_of(last))
        except Exception as err:  # noqa: BLE001 - a thread's error is handed to the consumer, which raises it
            pipe.put(err)
        finally:
            pipe.put(End())

    def _read(self, pipe: Pipe, *, follow: bool) -> bool:
        """Feed every new frame to the pipe; False once cancelled or the consumer has gone."""
        since = self._last_ns // NS_PER_S if self._last_ns else self._since_s
        with vendor_errors(f"read the {self._stream} of container {self._id[:12]}", self._id):
            logs = self._client().api.logs(
                self._id, stdout=self._stream == "stdout", stderr=self._stream == "stderr",
                stream=True, follow=follow, timestamps=True, since=since or None,
            )  # fmt: skip
        with self._lock:
            self._logs = logs
            if self._cancelled:
                logs.close()
                return False
        try:
            if not self._feed(logs, pipe):
                return False
        finally:
            logs.close()  # also after a natural end: the response holds a socket
        with self._lock:
            return not self._cancelled

    def _feed(self, logs: Iterator[bytes], pipe: Pipe) -> bool:
        skip = self._seen_at_last
        for frame in logs:
            time_ns, payload = self._assembler.split(frame)
            if time_ns < self._last_ns:
                continue
            if time_ns == self._last_ns:
                if skip:
                    skip -= 1
                    continue
                self._seen_at_last += 1
            else:
                self._last_ns, self._seen_at_last = time_ns, 1
            lines = self._assembler.feed(time_ns, payload)
            if lines and not pipe.put(runs_of(lines)):
                return False
        return True
