"""The ``Runtime`` role: what the orchestrator asks of whatever runs its containers.

Two implementations keep the same contract (``tests/contract/``): ``DockerRuntime`` and the
in-memory ``FakeRuntime``. Every method is async; none blocks the event loop.

Contract, in short:
- ``start(spec)`` creates and starts the container and returns its id. Output is stored by the
  runtime from the first byte, so a ``stream`` opened at any time later loses no line.
- ``stream(id, since_ns)`` yields the container's lines (stdout and stderr kept apart, each in its
  own order; lines longer than the runtime's frames rejoined; a last line without a newline is
  flushed at exit) whose time is strictly after ``since_ns``, and ends when the container stops.
- ``stream_batches(id, since_ns)`` yields the same lines in the same order, grouped as they arrived:
  lists of at most ``BATCH`` (2048) lines, never empty; the event loop runs between two batches, so a burst
  does not starve it. Prefer it where lines come fast (one await per batch, not per line).
- ``stream_runs(id, since_ns)`` yields the batches of ``stream_batches`` as runs (``LineRun``:
  consecutive lines of one stream that share one time), in order, never empty: a flood read a
  chunk at a time costs no tuple per line (``runs.lines_of`` gives the lines back, exactly).
- Docker reads the first ``stream``/``stream_batches``/``stream_runs`` of a container it started, without
  ``since_ns``, from an attach opened at ``start``: every line comes whole (up to 1 MiB; a longer
  one comes in 1 MiB pieces) and its time is when the runtime received it, a little later than the
  engine's own stamp that any other stream of the container (its stored log) gives. So a
  ``since_ns`` taken from such a stream is exact against that same stream only; to continue
  another reader's work, count lines per stream rather than pass its times. While that stream
  is read, a consumer that does not keep up holds up the container's output (backpressure).
- ``wait(id, timeout_s)`` returns the ``ExitInfo`` once the container has stopped; it raises the
  builtin ``TimeoutError`` if it has not stopped within ``timeout_s`` (the container keeps running).
- ``stop(id, grace_s)`` sends SIGTERM, then SIGKILL after ``grace_s``, and returns once stopped;
  ``kill(id)`` sends SIGKILL. Both are no-ops on a container that has already stopped.
- ``remove(id)`` removes a container, running or not; removing a missing container is a no-op.
- ``find(labels)`` lists the containers (running or not) carrying all of ``labels``.
- ``connect_network`` attaches a container to a second network (the egress proxy sits on two).
- ``supports_pause`` says whether ``pause``/``unpause`` can work at all: True for Docker and the
  fake; False for ``KubernetesRuntime`` (a pod cannot be frozen), whose ``pause`` raises
  ``RuntimeFailure``. A caller that would pause a worker stops it instead where it is False.
- An unknown id raises ``ContainerNotFound``; an engine that does not answer ``DockerUnavailable``;
  a missing image ``ImageMissing``; any other refusal ``RuntimeFailure``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from orchestrator.runtime.spec import ContainerInfo, ContainerSpec, ExitInfo, LineRun, LogLine

MANAGED_LABEL = "orchestrator.managed"
SESSION_LABEL = "orchestrator.session"
WORKER_LABEL = "orchestrator.worker"
ATTEMPT_LABEL = "orchestrator.attempt"


@runtime_checkable
class Runtime(Protocol):
    """Runs hardened containers; see the module docstring for the contract."""

    @property
    def supports_pause(self) -> bool:
        """Whether ``pause`` can freeze a container here (a class attribute in implementations)."""

    async def ping(self) -> None:
        """Return if the engine answers, else raise ``DockerUnavailable``."""

    async def start(self, spec: ContainerSpec) -> str:
        """Create and start a container; return its id."""

    async def find(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (any state) that carry every one of ``labels``, oldest first."""

    async def inspect(self, container_id: str) -> ContainerInfo:
        """The current state of one container."""

    def stream(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[LogLine]:
        """The container's output lines after ``since_ns``, until it stops."""

    def stream_batches(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[list[LogLine]]:
        """The lines of ``stream``, in the same order, in non-empty batches of at most ``BATCH`` as they arrived."""

    def stream_runs(self, container_id: str, since_ns: int | None = None) -> AsyncIterator[list[LineRun]]:
        """The batches of ``stream_batches`` as runs of one stream and one time, in the same order."""

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitInfo:
        """How the container ended; ``TimeoutError`` if it is still running after ``timeout_s``."""

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container."""

    async def unpause(self, container_id: str) -> None:
        """Thaw a paused container."""

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns when the container has stopped."""

    async def kill(self, container_id: str) -> None:
        """SIGKILL now."""

    async def remove(self, container_id: str) -> None:
        """Remove the container (forcefully if running); a missing container is fine."""

    async def ensure_network(
        self,
        name: str,
        *,
        internal: bool = True,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> str:
        """Create the network if missing (idempotent); return its id.

        ``options`` are driver options of a new network, e.g. ``com.docker.network.bridge.name``.
        """

    async def connect_network(self, container_id: str, network: str, *, aliases: Sequence[str] = ()) -> None:
        """Attach a container to one more network, where ``aliases`` also resolve to it (idempotent)."""

    async def remove_network(self, name: str) -> None:
        """Remove the network; a missing network is fine."""

    async def close(self) -> None:
        """Release the runtime's own resources (not the containers)."""
