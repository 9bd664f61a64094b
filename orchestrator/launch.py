"""From a job's CLI command to the hardened container spec of one attempt (through ``sandbox.layout``).

A job's folder is mounted at ``/workspace`` (read-write only for a write task's own clone), its
extra read-only folders at ``/ro/<n>``. ``sandbox.layout.worker_spec`` adds the rest, the same for
every launcher: the CLI's config files and state folders in the worker's own folder
``workspace/<session>/homes/<worker>/`` (``sandbox.worker_home``: ``files/`` read-only,
``state/<n>/`` read-write and kept between the attempts of the worker, started from a copy of the
agent's login folder when it logs in that way), then ``sandbox.safety.build_spec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agents.base import CommandSpec
from orchestrator.config import Settings
from orchestrator.paths import SessionPaths
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.supervisor import Job, ro_target
from sandbox.layout import SessionContext, TaskLayout, worker_spec
from sandbox.mounts import MountRequest, SandboxRoots
from sandbox.safety import container_user
from sandbox.worker_home import WorkerHome


@dataclass
class Launcher:
    """Builds the ``ContainerSpec`` of each attempt of a session's jobs."""

    settings: Settings
    paths: SessionPaths
    repo: Path
    images: Mapping[str, str]
    network: str = "none"
    env: Mapping[str, str] = field(default_factory=dict)
    agent_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per agent (its proxy)
    owner: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.owner = container_user(self.repo, self.settings)

    def spec_for(
        self, job: Job, command: CommandSpec, attempt: int, memory_bytes: int | None
    ) -> ContainerSpec:
        """The spec of attempt ``attempt`` of ``job`` running ``command`` (see the module docstring)."""
        mounts = [MountRequest(str(job.workdir), "rw" if job.writable else "ro", "/workspace")]
        mounts += [MountRequest(str(p), "ro", ro_target(i)) for i, p in enumerate(job.extra_ro)]
        roots = SandboxRoots(
            repo=self.repo, workspace=self.paths.root, worktree=job.workdir if job.writable else None,
            extra=tuple(self.settings.allowed_roots),
        )  # fmt: skip
        layout = TaskLayout(job.task_id, "write" if job.writable else "read-only", roots, tuple(mounts))
        return worker_spec(
            command, layout, session=SessionContext(self.paths, self.repo, self.network),
            settings=self.settings, worker=job.worker, attempt=attempt, image=self.image(job.agent.value),
            user=self.owner, memory_bytes=memory_bytes,
            env={**self.env, **self.agent_env.get(job.agent.value, {})},
        )  # fmt: skip

    def transcript_files(self, job: Job, command: CommandSpec) -> list[Path]:
        """Host paths of the CLI's session logs (``transcript_glob`` inside one of its state dirs)."""
        return WorkerHome(self.paths, job.worker).transcripts(command)

    def image(self, agent: str) -> str:
        override = self.settings.agent(agent).image
        return override or self.images[agent]
