"""The ``Runtime`` role: what the orchestrator asks of whatever runs its containers.

Two implementations keep the same contract (``tests/contract/``): ``DockerRuntime`` and the
in-memory ``FakeRuntime``. Every method is async; none blocks the event loop.

Contract, in short:
- ``start(spec)`` creates and starts the container and returns its id. Output is stored by the
  runtime from the first byte, so a ``stream`` opened at any time later loses no line.
- ``stream(id, since_ns)`` yields the container's lines (stdout and stderr kept apart, each in its
  own order; lines longer than the runtime's frames rejoined; a last line without a newline is
  flushed at exit) whose time is strictly after ``since_ns``, and ends when the container stops.
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

from orchestrator.runtime.spec import ContainerInfo, ContainerSpec, ExitInfo, LogLine

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
