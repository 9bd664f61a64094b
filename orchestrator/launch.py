"""From a job's CLI command to the hardened container spec of one attempt (through ``sandbox.safety``).

Per worker the launcher keeps a folder ``workspace/<session>/homes/<worker>/``:
- ``files/``: the read-only config files the CLI reads (``CommandSpec.files``), each bind-mounted
  read-only at its own path under ``/etc``;
- ``state/<n>/``: the CLI's own state (``CommandSpec.state_dirs``: its session log, which
  ``--resume`` reads), mounted read-write and kept between the attempts of the worker — a copy of
  the agent's login folder starts it when the agent logs in that way. Never shared between workers.
The task's folder is ``/workspace`` (read-write only for a write task's own clone).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agents.base import CommandSpec
from orchestrator.config import Settings
from orchestrator.paths import SessionPaths
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.supervisor import Job, ro_target
from sandbox.mounts import MountRequest, SandboxRoots
from sandbox.safety import WorkerRequest, build_spec, container_user


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
        home = self.paths.home(job.worker)
        mounts = [MountRequest(str(job.workdir), "rw" if job.writable else "ro", "/workspace")]
        mounts += [MountRequest(str(p), "ro", ro_target(i)) for i, p in enumerate(job.extra_ro)]
        for target, content in command.files.items():
            host = home / "files" / hashlib.sha256(target.encode()).hexdigest()[:16] / Path(target).name
            _write(host, content)
            mounts.append(MountRequest(str(host), "ro", target))
        for index, target in enumerate(command.state_dirs):
            host = home / "state" / str(index)
            self._prepare_state(host, job, command, target)
            mounts.append(MountRequest(str(host), "rw", target))
        roots = SandboxRoots(
            repo=self.repo, workspace=self.paths.root, worktree=job.workdir if job.writable else None,
            extra=tuple(self.settings.allowed_roots), state=(home / "state",),
        )  # fmt: skip
        request = WorkerRequest(
            image=self.image(job.agent.value), argv=command.argv, session_id=self.paths.session_id,
            worker=job.worker, attempt=attempt, task="write" if job.writable else "read-only",
            mounts=mounts, roots=roots, user=self.owner, limits=self.settings.limits, network=self.network,
            env={**command.env, **self.env, **self.agent_env.get(job.agent.value, {})}, secrets=dict(command.secrets), task_id=job.task_id,
            agent=job.agent.value, memory_bytes=memory_bytes, workdir=command.workdir,
        )  # fmt: skip
        return build_spec(request)

    def transcript_files(self, job: Job, command: CommandSpec) -> list[Path]:
        """Host paths of the CLI's session logs (``transcript_glob`` inside one of its state dirs)."""
        pattern = command.transcript_glob or ""
        for index, target in enumerate(command.state_dirs):
            prefix = target.rstrip("/") + "/"
            if pattern.startswith(prefix):
                return sorted(
                    (self.paths.home(job.worker) / "state" / str(index)).glob(pattern[len(prefix) :])
                )
        return []

    def image(self, agent: str) -> str:
        override = self.settings.agent(agent).image
        return override or self.images[agent]

    def _prepare_state(self, host: Path, job: Job, command: CommandSpec, target: str) -> None:
        if host.exists():
            return
        login = self.settings.agent(job.agent.value).login_dir
        if login is not None and command.login_dir == target and login.is_dir():
            shutil.copytree(login, host, symlinks=False)
        else:
            host.mkdir(parents=True)
        if os.geteuid() == 0:
            uid, gid = self.owner
            for path in [host, *host.rglob("*")]:
                os.lchown(path, uid, gid)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
        path.chmod(0o644)
