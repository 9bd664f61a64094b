"""From a task and its CLI command to the hardened ``ContainerSpec``: what is mounted where.

- ``SessionContext``: the session's repository, folders and network.
- ``task_layout(...)``: the task's mounts. A writer gets its worktree (its clone, under
  ``<workspace>/<session>/worktrees/<task>``) read-write at ``/workspace`` with its read-only dirs
  laid over it; a reader gets its dirs (or the whole repository) read-only.
- ``worker_spec(command, layout, ...)``: writes the command's config files under the session's
  folder (mounted read-only), keeps a writer's CLI state folders inside its clone
  (``.git/orchestrator-state/<worker>``, the one place it may write, so a resumed CLI finds its
  session), then lets ``sandbox.safety.build_spec`` check and harden it all.

``WorkerManager`` uses these; so can any other launcher (a supervisor, ``orchestrate sandbox check``):
one path from a command to a container.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agents import CommandSpec
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.models.plan import DirSpec
from orchestrator.paths import SessionPaths
from orchestrator.runtime.spec import ContainerSpec
from sandbox.mounts import MountRequest, SandboxRoots, TaskMode, check_mounts
from sandbox.profiles import HOME, TMP, WORKDIR
from sandbox.safety import WorkerRequest, build_spec, container_user

STATE_DIR = ".git/orchestrator-state"


@dataclass(frozen=True, slots=True)
class SessionContext:
    """The session a worker belongs to: its repository, folders and network."""

    paths: SessionPaths
    repo: Path
    network: str = "none"
    home: Path = field(default_factory=Path.home)

    def roots(self, settings: Settings, task_id: str, mode: TaskMode) -> SandboxRoots:
        """A writer's worktree is its clone (which must exist); a reader's, only if there is one."""
        worktree = self.paths.worktree(task_id)
        return SandboxRoots(
            repo=self.repo, workspace=self.paths.root,
            worktree=worktree if mode == "write" or worktree.exists() else None,
            extra=tuple(settings.allowed_roots), home=self.home,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskLayout:
    """The roots and the requested mounts of one task."""

    task_id: str
    mode: TaskMode
    roots: SandboxRoots
    mounts: tuple[MountRequest, ...]

    def extra_dirs(self) -> list[str]:
        """Container paths of the read-only mounts outside ``/workspace`` (the CLI's extra dirs).

        Raises ``UnsafeMount`` for a refused request: a refusal comes before any command is built.
        """
        checked = check_mounts(self.mounts, self.roots, self.mode)
        return [m.target for m in checked if not _under(m.target, WORKDIR)]


def task_layout(
    session: SessionContext, settings: Settings, task_id: str, mode: TaskMode, *,
    dirs: Sequence[DirSpec] = (), paths: Sequence[str] = (), write_dir: str | None = None,
) -> TaskLayout:  # fmt: skip
    """The task's mounts: ``dirs`` relative to its base (worktree, else repository), ``paths`` absolute."""
    roots = session.roots(settings, task_id, mode)
    base = roots.worktree if roots.worktree is not None else session.repo
    mounts: list[MountRequest] = []
    if mode == "write":
        mounts.append(MountRequest(write_dir if write_dir is not None else str(base), "rw"))
    elif not dirs and not paths:
        mounts.append(MountRequest(str(base)))
    for spec in dirs:
        if spec.mode == "ro" and not (mode == "write" and spec.path == "."):
            mounts.append(MountRequest(str(base / spec.path)))
    mounts += [MountRequest(p) for p in paths if p != write_dir]
    return TaskLayout(task_id, mode, roots, tuple(mounts))


def worker_spec(
    command: CommandSpec, layout: TaskLayout, *, session: SessionContext, settings: Settings, worker: str,
    attempt: int, image: str, memory_bytes: int | None = None,
) -> ContainerSpec:  # fmt: skip
    """The hardened spec of one attempt of ``command``; ``UnsafeMount``/``ConfigError`` if refused."""
    user = container_user(session.repo, settings)
    mounts = [*layout.mounts, *_command_mounts(command, layout, session, settings, worker, attempt, user)]
    return build_spec(WorkerRequest(
        image=image, argv=command.argv, session_id=session.paths.session_id, worker=worker, attempt=attempt,
        task=layout.mode, mounts=mounts, roots=layout.roots, user=user, limits=settings.limits,
        network=session.network, env=command.env, secrets=command.secrets, task_id=layout.task_id,
        agent=command.agent.value, memory_bytes=memory_bytes, workdir=command.workdir,
    ))  # fmt: skip


def _command_mounts(command: CommandSpec, layout: TaskLayout, session: SessionContext, settings: Settings,
                    worker: str, attempt: int, user: tuple[int, int]) -> list[MountRequest]:  # fmt: skip
    """The command's config files (read-only) and, for a writer, its state folders (in its clone)."""
    for path in command.writable_dirs:
        if not (_under(path, TMP) or _under(path, HOME)):
            raise ConfigError(f"{command.agent} needs {path} writable, outside {TMP} and {HOME}")
    mounts: list[MountRequest] = []
    files_dir = session.paths.home(worker) / "files" / f"a{attempt}"
    for target, content in command.files.items():
        host = files_dir / target.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        host.chmod(0o644)
        mounts.append(MountRequest(str(host), "ro", target))
    worktree = layout.roots.worktree
    if layout.mode != "write" or worktree is None or not worktree.is_dir():
        return mounts  # an analysis task's CLI state lives in its tmpfs home and ends with it
    login = settings.agent(command.agent.value).login_dir
    for target in command.state_dirs:
        host = worktree / STATE_DIR / worker / target.strip("/").replace("/", "_")
        fresh = not host.exists()
        host.mkdir(parents=True, exist_ok=True)
        if fresh and login is not None and not command.secrets and target == command.login_dir:
            shutil.copytree(login, host, dirs_exist_ok=True)
        _hand_over(host, user)
        mounts.append(MountRequest(str(host), "rw", target))
    return mounts


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hand_over(path: Path, user: tuple[int, int]) -> None:
    """Give a folder the container's uid (when we are root), so the agent can write in it."""
    if os.geteuid() == 0:
        for item in [path, *path.rglob("*")]:
            os.chown(item, *user, follow_symlinks=False)
