"""Helpers for the tests that run the production container spec on real Docker.

``Sandbox`` lays out a session on disk (a repository owned by root, as in CI, and a task worktree
handed to the container's uid), builds specs through ``sandbox.safety.build_spec`` (the one
production path) and runs them with ``DockerRuntime``. Every container carries the session's label
and ``cleanup`` removes them all, whatever the test did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import LimitSettings, Settings
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.runtime import SESSION_LABEL, ContainerSpec, ExitInfo, LogLine
from orchestrator.runtime.docker import DockerRuntime
from sandbox.safety import MountRequest, SandboxRoots, WorkerRequest, build_spec, container_user


@dataclass
class Run:
    """What a container printed and how it ended."""

    exit: ExitInfo
    lines: list[LogLine]

    @property
    def out(self) -> list[str]:
        return [line.text for line in self.lines if line.stream == "stdout"]

    @property
    def err(self) -> list[str]:
        return [line.text for line in self.lines if line.stream == "stderr"]

    def facts(self) -> dict[str, str]:
        """``key=value`` lines of stdout as a dict."""
        return dict(line.split("=", 1) for line in self.out if "=" in line)


@dataclass
class Sandbox:
    """A session on disk plus a Docker runtime; see the module docstring."""

    root: Path
    image: str
    runtime: DockerRuntime = field(default_factory=DockerRuntime)
    session_id: str = field(default_factory=new_session_id)
    limits: LimitSettings = field(default_factory=lambda: LimitSettings(memory="256m", pids=64))

    def __post_init__(self) -> None:
        self.settings = Settings(_env_file=None, workspace=self.root / "workspace")  # type: ignore[call-arg]
        self.paths = SessionPaths.of(self.settings.workspace, self.session_id)
        self.repo = self.root / "repo"
        (self.repo / "docs").mkdir(parents=True)
        (self.repo / "docs" / "guide.md").write_text("read me\n")
        self.worktree = self.paths.worktree("t1")
        self.worktree.mkdir(parents=True)
        self.user = container_user(self.repo, self.settings)
        if os.geteuid() == 0:
            os.chown(self.worktree, *self.user)

    def roots(self) -> SandboxRoots:
        return SandboxRoots(repo=self.repo, workspace=self.paths.root, worktree=self.worktree)

    def spec(self, script: str, *, task: str = "write", network: str = "none", attempt: int = 1,
             mounts: Sequence[MountRequest] | None = None, limits: LimitSettings | None = None) -> ContainerSpec:  # fmt: skip
        """The production spec of a worker whose command is ``sh -c script``."""
        default = [MountRequest(str(self.worktree), "rw"), MountRequest(str(self.repo / "docs"), "ro")]
        if task == "read-only":
            default = [MountRequest(str(self.worktree)), MountRequest(str(self.repo / "docs"))]
        return build_spec(WorkerRequest(
            image=self.image, argv=["sh", "-c", script], session_id=self.session_id, worker="probe-t1",
            attempt=attempt, task=task, mounts=default if mounts is None else mounts,  # type: ignore[arg-type]
            roots=self.roots(), user=self.user, limits=limits or self.limits, network=network,
        ))  # fmt: skip

    async def run(self, script: str, *, timeout_s: float = 60, **changes: object) -> Run:
        """Start the spec, read every line, wait for the exit."""
        container_id = await self.runtime.start(self.spec(script, **changes))  # type: ignore[arg-type]
        lines = [line async for line in self.runtime.stream(container_id)]
        return Run(await self.runtime.wait(container_id, timeout_s=timeout_s), lines)

    async def cleanup(self) -> None:
        for info in await self.runtime.find({SESSION_LABEL: self.session_id}):
            await self.runtime.remove(info.id)
        await self.runtime.close()
