"""``FakeRuntime``: an in-memory ``Runtime`` whose containers follow a script.

Script a container by what it prints and how it ends, not by the command it was given::

    runtime = FakeRuntime(FakeProcess(lines=["hello", FakeLine("oops", stream="stderr")], exit_code=1))
    runtime = FakeRuntime(script=lambda spec: FakeProcess(lines=[...]) if "codex" in spec.argv[0] else ...)

The fake keeps the contract of ``DockerRuntime`` (``tests/contract/`` runs the same tests on
both): output is stored, so a stream opened late or again (``since_ns``) sees every line once
(``stream_batches``: what was printed since the last batch, at most ``BATCH`` lines a batch);
``stop`` ends a process with 143 unless it ignores SIGTERM (then 137 after the grace); ``pause``
holds the output; OOM is exit 137 with ``oom_killed``. ``calls`` records every request in order,
and ``emit``/``exit`` let a test drive a ``FakeProcess(hang=True)`` step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

from orchestrator.errors import (
    ContainerNotFound,
    DockerUnavailable,
    ImageMissing,
    OrchestratorError,
    RuntimeFailure,
)
from orchestrator.runtime.batches import BATCH, unbatched
from orchestrator.runtime.runs import as_runs
from orchestrator.runtime.spec import (
    ContainerInfo,
    ContainerSpec,
    ContainerStatus,
    ExitInfo,
    LineRun,
    LogLine,
    Request,
    StreamName,
    classify_exit,
)

SIGKILL_EXIT = 137
SIGTERM_EXIT = 143


@dataclass(frozen=True, slots=True)
class FakeLine:
    """One scripted line, printed ``after_s`` seconds after the previous one."""

    text: str
    stream: StreamName = "stdout"
    after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FakeProcess:
    """What a fake container does: print ``lines``, then exit (or hang until stopped)."""

    lines: Sequence[str | FakeLine] = ()
    exit_code: int = 0
    oom_killed: bool = False
    run_s: float = 0.0
    hang: bool = False
    ignore_sigterm: bool = False
    start_error: OrchestratorError | None = None


Script = FakeProcess | Callable[[ContainerSpec], FakeProcess]


@dataclass(slots=True)
class FakeContainer:
    """The fake's record of one container; tests may read it."""

    id: str
    name: str
    spec: ContainerSpec
    process: FakeProcess
    created_at: datetime
    status: ContainerStatus = "created"
    log: list[LogLine] = field(default_factory=list)
    exit: ExitInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    requested: Request | None = None
    task: asyncio.Task[None] | None = None
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    last_ns: int = 0
    addresses: dict[str, str] = field(default_factory=dict)

    def notify(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def changed(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter

    def append(self, text: str, stream: StreamName) -> None:
        self.last_ns = max(time.time_ns(), self.last_ns + 1)
        self.log.append(LogLine(stream, text, self.last_ns))
        self.notify()

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id, name=self.name, image=self.spec.image, labels=dict(self.spec.labels),
            status=self.status, exit_code=self.exit.exit_code if self.exit else None,
            oom_killed=bool(self.exit and self.exit.oom_killed), started_at=self.started_at,
            finished_at=self.finished_at, addresses=dict(self.addresses),
        )  # fmt: skip


class FakeRuntime:
    """In-memory ``Runtime``; see the module docstring."""

    supports_pause: ClassVar[bool] = True

    def __init__(
        self,
        script: Script | None = None,
        *,
        images: set[str] | None = None,
        available: bool = True,
    ) -> None:
        self.script: Script = script if script is not None else FakeProcess()
        self.images = images
        self.available = available
        self.calls: list[tuple[str, ...]] = []
        self.containers: dict[str, FakeContainer] = {}
        self.networks: dict[str, tuple[bool, dict[str, str]]] = {"bridge": (False, {}), "none": (False, {})}
        self.network_options: dict[str, dict[str, str]] = {}
        self.aliases: dict[tuple[str, str], tuple[str, ...]] = {}
        self._ids = itertools.count(1)
        self._hosts = itertools.count(2)

    # -- test helpers ------------------------------------------------------------------------
    @property
    def specs(self) -> list[ContainerSpec]:
        """Every spec started, in order."""
        return [c.spec for c in self.containers.values()]

    def emit(self, container_id: str, text: str, stream: StreamName = "stdout") -> None:
        """Print a line from a running container now."""
        container = self._get(container_id)
        if container.status not in ("running", "paused"):
            raise RuntimeFailure(f"fake container {container_id} is {container.status}; cannot print")
        container.append(text, stream)

    def exit(self, container_id: str, exit_code: int = 0, *, oom_killed: bool = False) -> None:
        """End a running container now, as if its process exited."""
        container = self._get(container_id)
        if container.task is not None:
            container.task.cancel()
        self._finish(container, SIGKILL_EXIT if oom_killed else exit_code, oom_killed)

    # -- the Runtime contract ----------------------------------------------------------------
    async def ping(self) -> None:
        self._record("ping")

    async def start(self, spec: ContainerSpec) -> str:
        self._record("start", spec.name or "", spec.image)
        if self.images is not None and spec.image not in self.images:
            raise ImageMissing(f"image {spec.image!r} is not built; run `orchestrate images build`")
        if spec.network not in self.networks:
            raise RuntimeFailure(f"network {spec.network!r} not found; create it before starting")
        if spec.name and any(c.name == spec.name for c in self.containers.values()):
            raise RuntimeFailure(f"container name {spec.name!r} is already in use; remove that container")
        process = self.script(spec) if callable(self.script) else self.script
        if process.start_error is not None:
            raise process.start_error
        number = next(self._ids)
        container_id = f"fake{number:060d}"
        now = datetime.now(UTC)
        container = FakeContainer(container_id, spec.name or f"fake-{number}", spec, process, now)
        self.containers[container_id] = container
        if spec.network != "none":
            container.addresses[spec.network] = self._address()
        container.status, container.started_at = "running", now
        container.resumed.set()
        container.task = asyncio.create_task(self._run(container), name=f"fake-{container.name}")
        return container_id

    async def find(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        self._record("find", ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        return [
            c.info()
            for c in self.containers.values()
            if all(c.spec.labels.get(k) == v for k, v in labels.items())
        ]

    async def inspect(self, container_id: str) -> ContainerInfo:
        self._record("inspect", container_id)
        return self._get(container_id).info()

    def stream(self, container_id: str, since_ns: int | None = None) -> AsyncGenerator[LogLine, None]:
        return unbatched(self.stream_batches(container_id, since_ns))

    def stream_runs(
        self, container_id: str, since_ns: int | None = None
    ) -> AsyncGenerator[list[LineRun], None]:
        """``stream_batches`` as runs (``runs.as_runs``)."""
        return as_runs(self.stream_batches(container_id, since_ns))

    async def stream_batches(
        self, container_id: str, since_ns: int | None = None
    ) -> AsyncGenerator[list[LogLine], None]:
        """What the container printed since the last batch, at most ``BATCH`` lines a batch."""
        self._record("stream", container_id)
        container = self._get(container_id)
        index, handed = 0, False
        while True:
            ready = [line for line in container.log[index:] if since_ns is None or line.time_ns > since_ns]
            index = len(container.log)
            for start in range(0, len(ready), BATCH):
                if handed:
                    await asyncio.sleep(0)
                handed = True
                yield ready[start : start + BATCH]
            if container.done.is_set() or container.id not in self.containers:
                return
            await container.changed()

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitInfo:
        self._record("wait", container_id)
        container = self._get(container_id)
        try:
            await asyncio.wait_for(container.done.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"container {container_id} still runs after {timeout_s} s") from None
        if container.exit is None:  # done is set only by _finish, which sets exit first
            raise RuntimeFailure(f"fake container {container_id} ended without an exit record")
        return container.exit

    async def pause(self, container_id: str) -> None:
        self._record("pause", container_id)
        container = self._get(container_id)
        if container.status != "running":
            raise RuntimeFailure(f"container {container_id} is {container.status}, not running: cannot pause")
        container.status = "paused"
        container.resumed.clear()

    async def unpause(self, container_id: str) -> None:
        self._record("unpause", container_id)
        container = self._get(container_id)
        if container.status != "paused":
            raise RuntimeFailure(
                f"container {container_id} is {container.status}, not paused: cannot unpause"
            )
        container.status = "running"
        container.resumed.set()

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self._record("stop", container_id, f"{grace_s:g}")
        container = self._get(container_id)
        if container.done.is_set():
            return
        container.requested = container.requested or "stop"
        if container.status == "paused":
            container.status = "running"
            container.resumed.set()
        if not container.process.ignore_sigterm:
            self._terminate(container, SIGTERM_EXIT)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(container.done.wait(), grace_s)
        self._terminate(container, SIGKILL_EXIT)

    async def kill(self, container_id: str) -> None:
        self._record("kill", container_id)
        container = self._get(container_id)
        if container.done.is_set():
            return
        container.requested = container.requested or "kill"
        self._terminate(container, SIGKILL_EXIT)

    async def remove(self, container_id: str) -> None:
        self._record("remove", container_id)
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        if not container.done.is_set():
            container.requested = container.requested or "kill"
            self._terminate(container, SIGKILL_EXIT)
        container.notify()

    async def ensure_network(
        self,
        name: str,
        *,
        internal: bool = True,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> str:
        self._record("ensure_network", name, "internal" if internal else "open")
        found = self.networks.get(name)
        if found is not None and found[0] != internal:
            raise RuntimeFailure(
                f"network {name!r} exists with internal={found[0]}, wanted internal={internal}; remove it"
            )
        if found is None:
            self.networks[name] = (internal, dict(labels or {}))
            self.network_options[name] = dict(options or {})
        return f"net-{name}"

    async def connect_network(self, container_id: str, network: str, *, aliases: Sequence[str] = ()) -> None:
        self._record("connect_network", container_id, network)
        container = self._get(container_id)
        if network not in self.networks:
            raise RuntimeFailure(f"network {network!r} not found; create it first")
        if network not in container.addresses:
            container.addresses[network] = self._address()
            self.aliases[(container_id, network)] = tuple(aliases)

    async def remove_network(self, name: str) -> None:
        self._record("remove_network", name)
        self.networks.pop(name, None)

    async def close(self) -> None:
        self._record("close")
        for container in self.containers.values():
            if container.task is not None and not container.task.done():
                container.task.cancel()

    # -- internals ---------------------------------------------------------------------------
    def _address(self) -> str:
        number = next(self._hosts)
        return f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"

    def _record(self, method: str, *details: str) -> None:
        self.calls.append((method, *details))
        if not self.available:
            raise DockerUnavailable("the fake Docker engine is switched off (FakeRuntime(available=False))")

    def _get(self, container_id: str) -> FakeContainer:
        found = self.containers.get(container_id)
        if found is None:
            raise ContainerNotFound(f"no container {container_id!r}; it was removed or never started")
        return found

    async def _run(self, container: FakeContainer) -> None:
        process = container.process
        for item in process.lines:
            line = FakeLine(item) if isinstance(item, str) else item
            if line.after_s:
                await asyncio.sleep(line.after_s)
            await container.resumed.wait()
            container.append(line.text, line.stream)
        if process.hang:
            await asyncio.Event().wait()  # until stop, kill or exit cancels this task
        if process.run_s:
            await asyncio.sleep(process.run_s)
        await container.resumed.wait()
        exit_code = SIGKILL_EXIT if process.oom_killed else process.exit_code
        self._finish(container, exit_code, process.oom_killed)

    def _terminate(self, container: FakeContainer, exit_code: int) -> None:
        if container.task is not None:
            container.task.cancel()
        self._finish(container, exit_code, False)

    def _finish(self, container: FakeContainer, exit_code: int, oom_killed: bool) -> None:
        if container.done.is_set():
            return
        container.exit = ExitInfo(
            exit_code=exit_code, oom_killed=oom_killed,
            reason=classify_exit(exit_code, oom_killed, container.requested),
        )  # fmt: skip
        container.status = "exited"
        container.finished_at = datetime.now(UTC)
        container.resumed.set()
        container.done.set()
        container.notify()
