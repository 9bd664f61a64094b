"""Where containers run: the ``Runtime`` role, its types, ``DockerRuntime`` and ``FakeRuntime``.

``DockerRuntime`` is imported lazily (``from orchestrator.runtime import DockerRuntime`` works) so
that code and tests that only need the fake never import docker-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.runtime.fake import FakeContainer, FakeLine, FakeProcess, FakeRuntime
from orchestrator.runtime.protocol import (
    ATTEMPT_LABEL,
    MANAGED_LABEL,
    SESSION_LABEL,
    WORKER_LABEL,
    Runtime,
)
from orchestrator.runtime.spec import (
    ContainerInfo,
    ContainerSpec,
    ExitInfo,
    LineRun,
    LogLine,
    MountSpec,
    TmpfsSpec,
    classify_exit,
    parse_size,
)

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.runtime.docker import DockerRuntime

__all__ = [
    "ATTEMPT_LABEL",
    "MANAGED_LABEL",
    "SESSION_LABEL",
    "WORKER_LABEL",
    "ContainerInfo",
    "ContainerSpec",
    "DockerRuntime",
    "ExitInfo",
    "FakeContainer",
    "FakeLine",
    "FakeProcess",
    "FakeRuntime",
    "LineRun",
    "LogLine",
    "MountSpec",
    "Runtime",
    "TmpfsSpec",
    "classify_exit",
    "make_runtime",
    "parse_size",
]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":  # lazy: docker-py is slow to import and the fake does not need it
        from orchestrator.runtime.docker import DockerRuntime

        return DockerRuntime
    raise AttributeError(f"module 'orchestrator.runtime' has no attribute {name!r}")


def make_runtime(settings: Settings) -> Runtime:
    """The runtime ``settings.runtime`` names (``ORCH_RUNTIME``): ``docker`` (default) or ``kubernetes``.

    Imported lazily: only the chosen runtime's vendor client is loaded.
    """
    if settings.runtime == "kubernetes":
        from orchestrator.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from orchestrator.runtime.docker import DockerRuntime

    return DockerRuntime()
