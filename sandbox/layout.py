"""From a task and its CLI command to the hardened ``ContainerSpec``: what is mounted where.

- ``SessionContext``: the session's repository, folders and network.
- ``task_layout(...)``: the task's mounts. A writer gets its worktree (its clone, under
  ``<workspace>/<session>/worktrees/<task>``) read-write at ``/workspace`` with its read-only dirs
  laid over it; a reader gets its dirs (or the whole repository) read-only.
- ``worker_spec(command, layout, ...)``: adds the command's config files and CLI state folders
  (``sandbox.worker_home``: the worker's own folder under the session's ``homes/``, kept between
  its attempts, never in the clone) and lets ``sandbox.safety.build_spec`` check and harden it all.

Every launcher goes through ``worker_spec``: ``orchestrator.launch.Launcher`` (the sessions'
supervised jobs) and ``WorkerManager`` (``orchestrate sandbox check``). One path from a command
to a container.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.agents import CommandSpec
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.models.plan import DirSpec
from orchestrator.paths import SessionPaths
from orchestrator.runtime.spec import ContainerSpec
from sandbox.mounts import MountRequest, SandboxRoots, TaskMode, check_mounts
from sandbox.profiles import HOME, TMP, WORKDIR
from sandbox.safety import WorkerRequest, build_spec
from sandbox.worker_home import WorkerHome


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
    """The roots and the requested mounts of one task (``task_id`` None: a job of no task)."""

    task_id: str | None
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
    attempt: int, image: str, user: tuple[int, int], memory_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ContainerSpec:  # fmt: skip
    """The hardened spec of attempt ``attempt`` of ``worker`` running ``command`` in ``layout``.

    Writes the command's config files and makes its state folders in the worker's home (see
    ``sandbox.worker_home``): besides a writer's clone, the only host folders the container may
    write. ``env`` is laid over the command's own (the agent's proxy). ``user`` is the container's
    uid/gid (``sandbox.safety.container_user``). ``UnsafeMount``/``ConfigError`` if refused.
    """
    for path in command.writable_dirs:
        if not (_under(path, TMP) or _under(path, HOME)):
            raise ConfigError(f"{command.agent} needs {path} writable, outside {TMP} and {HOME}")
    home = WorkerHome(session.paths, worker)
    login = settings.agent(command.agent.value).login_dir
    mounts = [*layout.mounts, *home.mounts(command, login=login, user=user)]
    return build_spec(WorkerRequest(
        image=image, argv=command.argv, session_id=session.paths.session_id, worker=worker, attempt=attempt,
        task=layout.mode, mounts=mounts, roots=replace(layout.roots, state=(home.state,)), user=user,
        limits=settings.limits, network=session.network, env={**command.env, **(env or {})},
        secrets=dict(command.secrets), task_id=layout.task_id, agent=command.agent.value,
        memory_bytes=memory_bytes, workdir=command.workdir,
    ))  # fmt: skip


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
