"""``WorkerManager``: one hardened container per worker (the seed's Popen, replaced).

The seed's names are kept: ``launch_gemini(task, dirs)``, ``launch_codex(task, cwd)``,
``launch_claude(task, dirs)``, ``stop_worker(name)``, ``get_worker_status(name)``. Each launch asks
the agent's adapter for the command (``command_for``), lays out what the command needs on the host
(its read-only config files; its state folders, kept between attempts inside the task's clone so a
resumed CLI finds its session), has ``sandbox.safety.build_spec`` check and harden everything, starts
the container and records ``worker_started``. The returned ``WorkerHandle`` streams the lines, waits
for the exit (recording ``worker_exited`` once) and stops, pauses or removes the container.

Signals: a library installs no handlers. The CLI's SIGINT/SIGTERM handler calls ``stop_all(grace_s)``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.agents import CommandSpec, get_adapter
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, OrchestratorError, UsageError
from orchestrator.log import get_logger
from orchestrator.models.common import AgentName, utcnow
from orchestrator.models.events import AgentEvent, EventData, EventDraft, WorkerExited, WorkerStarted
from orchestrator.models.plan import DirSpec, SubTask
from orchestrator.models.state import AgentState, SessionState, apply
from orchestrator.paths import SessionPaths, validate_task_id
from orchestrator.runtime.protocol import ATTEMPT_LABEL, SESSION_LABEL, WORKER_LABEL, Runtime
from orchestrator.runtime.spec import ContainerSpec, ExitInfo, LogLine
from sandbox.profiles import HOME, TMP, WORKDIR
from sandbox.safety import (
    MountRequest,
    SandboxRoots,
    TaskMode,
    WorkerRequest,
    build_spec,
    check_mounts,
    container_user,
)

log = get_logger(__name__)
STATE_DIR = ".git/orchestrator-state"  # inside the task's clone: the one place a worker may write


class EventSink(Protocol):
    """Where worker events go: the session's ``EventWriter``, or ``MemoryEvents`` in tests."""

    state: SessionState

    def append(self, draft: EventDraft) -> AgentEvent: ...


class MemoryEvents:
    """An in-memory ``EventSink``: numbers the events and folds them at once."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.state = SessionState(session_id=session_id)
        self.events: list[AgentEvent] = []

    def append(self, draft: EventDraft) -> AgentEvent:
        event = AgentEvent(
            seq=len(self.events) + 1, ts=utcnow(), session_id=self.session_id, worker=draft.worker,
            task_id=draft.task_id, type=draft.type, data=draft.data,
        )  # fmt: skip
        self.events.append(event)
        apply(self.state, event)
        return event


@dataclass(frozen=True, slots=True)
class SessionContext:
    """The session a manager launches for: its repository, folders and network."""

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


def command_for(
    agent: AgentName, prompt: str, rung: int, settings: Settings, *, resume_id: str | None = None,
    extra_ro_dirs: Sequence[str] = (),
) -> CommandSpec:  # fmt: skip
    """The CLI command of one run: the agent adapter's ``build_command`` (the one place to swap it)."""
    return get_adapter(agent).build_command(
        prompt, rung, settings=settings.agent(agent.value), resume_id=resume_id, extra_ro_dirs=extra_ro_dirs
    )


def image_for(agent: AgentName, settings: Settings) -> str:
    """The agent's image: the configured override, else the content-addressed tag."""
    override = settings.agent(agent.value).image
    if override:
        return override
    from orchestrator.images import image_ref  # only when needed: it hashes the image inputs

    return image_ref(settings, agent.value)


def session_network(settings: Settings, session_id: str) -> tuple[str, bool]:
    """(network name, internal) of a session: ``none``, or one network per session."""
    if settings.network == "none":
        return "none", True
    return f"orch-{session_id}", settings.network == "allowlist"


@dataclass(eq=False)
class WorkerHandle:
    """One running (or finished) container of a worker."""

    name: str
    agent: AgentName | None
    task_id: str | None
    container_id: str
    attempt: int
    rung: int
    spec: ContainerSpec | None
    manager: WorkerManager
    exit: ExitInfo | None = None
    _waiter: asyncio.Task[ExitInfo] | None = field(default=None, repr=False)

    def lines(self, since_ns: int | None = None) -> AsyncIterator[LogLine]:
        """The container's lines after ``since_ns`` (a ``LogLine.time_ns``), until it stops."""
        return self.manager.runtime.stream(self.container_id, since_ns)

    async def wait(self, timeout_s: float | None = None) -> ExitInfo:
        """The exit, recorded once as ``worker_exited``; ``TimeoutError`` if still running."""
        if self._waiter is None:
            self._waiter = asyncio.create_task(self.manager._record_exit(self), name=f"wait-{self.name}")
        return await asyncio.wait_for(asyncio.shield(self._waiter), timeout_s)

    async def stop(self, grace_s: float | None = None) -> ExitInfo:
        """SIGTERM, SIGKILL after the grace; returns the recorded exit."""
        grace = self.manager.settings.grace_period_s if grace_s is None else grace_s
        await self.manager.runtime.stop(self.container_id, grace)
        return await self.wait()

    async def pause(self) -> None:
        await self.manager.runtime.pause(self.container_id)

    async def unpause(self) -> None:
        await self.manager.runtime.unpause(self.container_id)

    async def remove(self) -> None:
        """Remove the container (after its lines are read)."""
        await self.manager.runtime.remove(self.container_id)


class WorkerManager:
    """Launches, tracks and stops the workers of one session (see the module docstring)."""

    def __init__(self, runtime: Runtime, settings: Settings, session: SessionContext,
                 events: EventSink | None = None) -> None:  # fmt: skip
        self.runtime = runtime
        self.settings = settings
        self.session = session
        self.events: EventSink = events if events is not None else MemoryEvents(session.paths.session_id)
        self.handles: dict[str, WorkerHandle] = {}
        self._attempts: dict[str, int] = {}
        self._adhoc = 0

    # -- the seed's names --------------------------------------------------------------------
    async def launch_gemini(self, task: SubTask | str, dirs: Sequence[str | DirSpec] = ()) -> WorkerHandle:
        """A Gemini worker; with only read-only dirs it is an analysis task (no write mount)."""
        return await self.launch(AgentName.GEMINI, task, dirs=dirs)

    async def launch_codex(self, task: SubTask | str, cwd: str | Path) -> WorkerHandle:
        """A Codex worker writing in ``cwd``, which must be the task's own worktree."""
        return await self.launch(AgentName.CODEX, task, dirs=[str(cwd)], write_dir=str(cwd))

    async def launch_claude(self, task: SubTask | str, dirs: Sequence[str | DirSpec] = ()) -> WorkerHandle:
        """A Claude worker: writes only if a dir asks for ``rw`` (inside the task's worktree)."""
        return await self.launch(AgentName.CLAUDE, task, dirs=dirs)

    async def stop_worker(self, name: str, grace_s: float | None = None) -> ExitInfo:
        """Stop worker ``name`` (SIGTERM, then SIGKILL after the grace) and return its exit."""
        return await self._handle(name).stop(grace_s)

    def get_worker_status(self, name: str) -> AgentState:
        """The worker's state, folded from the session's events."""
        found = self.events.state.workers.get(name)
        return found.model_copy(deep=True) if found is not None else AgentState(name=name)

    async def stop_all(self, grace_s: float | None = None) -> dict[str, ExitInfo]:
        """Stop every running worker at once (the CLI's SIGINT/SIGTERM handler calls this).

        A worker that cannot be stopped (its container is gone, the engine went away) is logged
        and left out of the answer; the others are still stopped.
        """
        running = [h for h in self.handles.values() if h.exit is None]
        results = await asyncio.gather(*(h.stop(grace_s) for h in running), return_exceptions=True)
        stopped: dict[str, ExitInfo] = {}
        for handle, result in zip(running, results, strict=True):
            if isinstance(result, ExitInfo):
                stopped[handle.name] = result
            elif isinstance(result, OrchestratorError):
                log.warning("worker_stop_failed", worker=handle.name, error=result.message)
            else:
                raise result
        return stopped

    # -- the general form --------------------------------------------------------------------
    async def launch(
        self, agent: AgentName | str, task: SubTask | str, *, dirs: Sequence[str | DirSpec] = (),
        write_dir: str | None = None, task_id: str | None = None, prompt: str | None = None,
        rung: int | None = None, resume_id: str | None = None, memory_bytes: int | None = None,
    ) -> WorkerHandle:  # fmt: skip
        """Start one container for ``task``; ``UnsafeMount``/``UsageError`` if the sandbox refuses it.

        ``dirs`` are absolute host paths (read-only) or ``DirSpec``s relative to the task's
        worktree (write tasks) or the repository (analysis). A task writes when a ``DirSpec`` is
        ``rw`` or ``write_dir`` is given; it then writes only in its worktree
        (``<workspace>/<session>/worktrees/<task>``), mounted at ``/workspace``.
        """
        agent = _agent(agent)
        task_id = validate_task_id(task_id or (task.id if isinstance(task, SubTask) else self._next_adhoc()))
        name = f"{agent.value}-{task_id}"
        specs = [d for d in dirs if isinstance(d, DirSpec)]
        mode: TaskMode = (
            "write" if write_dir is not None or any(d.mode == "rw" for d in specs) else "read-only"
        )
        if isinstance(task, SubTask):
            specs += [d for d in task.dirs if d not in specs]
            mode = "write" if task.writes or mode == "write" else mode
        roots = self.session.roots(self.settings, task_id, mode)
        mounts = self._mounts(mode, roots, specs, [d for d in dirs if isinstance(d, str)], write_dir)
        attempt = await self._next_attempt(name)
        chosen_rung = (
            rung
            if rung is not None
            else (0 if mode == "read-only" else self.settings.recovery.writer_start_rung)
        )
        extra = [m.target for m in check_mounts(mounts, roots, mode) if not _under(m.target, WORKDIR)]
        command = command_for(agent, prompt or _prompt_of(task), chosen_rung, self.settings,
                              resume_id=resume_id, extra_ro_dirs=extra)  # fmt: skip
        uid, gid = container_user(self.session.repo, self.settings)
        mounts += self._command_mounts(command, name, attempt, mode, roots, (uid, gid))
        spec = build_spec(WorkerRequest(
            image=image_for(agent, self.settings), argv=command.argv, session_id=self.session.paths.session_id,
            worker=name, attempt=attempt, task=mode, mounts=mounts, roots=roots, user=(uid, gid),
            limits=self.settings.limits, network=self.session.network, env=command.env, secrets=command.secrets,
            task_id=task_id, agent=agent.value, memory_bytes=memory_bytes, workdir=command.workdir,
        ))  # fmt: skip
        container_id = await self.runtime.start(spec)
        handle = WorkerHandle(name, agent, task_id, container_id, attempt, chosen_rung, spec, self)
        self.handles[name] = handle
        self._record(name, task_id, WorkerStarted(
            agent=agent, image=spec.image, container_id=container_id, argv=list(spec.argv), attempt=attempt,
            flags=list(command.flags), rung=chosen_rung,
        ))  # fmt: skip
        log.info(
            "worker_started", worker=name, container=container_id[:12], attempt=attempt, rung=chosen_rung
        )
        return handle

    async def reattach(self) -> list[WorkerHandle]:
        """Handles for this session's containers that still run (found by their labels)."""
        found = await self.runtime.find({SESSION_LABEL: self.session.paths.session_id})
        attached: list[WorkerHandle] = []
        for info in found:
            name = info.labels.get(WORKER_LABEL)
            if not info.running or not name:
                continue
            attempt = int(info.labels.get(ATTEMPT_LABEL, "1") or 1)
            state = self.get_worker_status(name)
            handle = WorkerHandle(name, state.agent, state.task_id, info.id, attempt, state.rung, None, self)
            self.handles[name] = handle
            attached.append(handle)
        return attached

    async def close(self) -> None:
        """Remove every container this manager started or re-attached (running ones are killed)."""
        for handle in list(self.handles.values()):
            await self.runtime.remove(handle.container_id)

    # -- internals ---------------------------------------------------------------------------
    def _handle(self, name: str) -> WorkerHandle:
        found = self.handles.get(name)
        if found is None:
            known = ", ".join(sorted(self.handles)) or "none"
            raise UsageError(f"no worker named {name!r} in this session (workers: {known})")
        return found

    def _next_adhoc(self) -> str:
        self._adhoc += 1
        return f"adhoc{self._adhoc}"

    async def _next_attempt(self, name: str) -> int:
        existing = await self.runtime.find({SESSION_LABEL: self.session.paths.session_id, WORKER_LABEL: name})
        seen = [int(i.labels.get(ATTEMPT_LABEL, "0") or 0) for i in existing]
        attempt = max([self._attempts.get(name, 0), self.get_worker_status(name).attempt, *seen]) + 1
        self._attempts[name] = attempt
        return attempt

    def _mounts(self, mode: TaskMode, roots: SandboxRoots, specs: Sequence[DirSpec], paths: Sequence[str],
                write_dir: str | None) -> list[MountRequest]:  # fmt: skip
        """A writer: its worktree rw, its read-only dirs laid over it. A reader: its dirs, or the base."""
        base = roots.worktree if roots.worktree is not None else self.session.repo
        mounts: list[MountRequest] = []
        if mode == "write":
            mounts.append(MountRequest(write_dir if write_dir is not None else str(base), "rw"))
        elif not specs and not paths:
            mounts.append(MountRequest(str(base)))
        for spec in specs:
            if spec.mode == "ro" and not (mode == "write" and spec.path == "."):
                mounts.append(MountRequest(str(base / spec.path)))
        mounts += [MountRequest(p) for p in paths if p != write_dir]
        return mounts

    def _command_mounts(self, command: CommandSpec, name: str, attempt: int, mode: TaskMode,
                        roots: SandboxRoots, user: tuple[int, int]) -> list[MountRequest]:  # fmt: skip
        """The command's config files (read-only) and, for a writer, its state folders (in its clone)."""
        for path in command.writable_dirs:
            if not (_under(path, TMP) or _under(path, HOME)):
                raise ConfigError(f"{command.agent} needs {path} writable, outside {TMP} and {HOME}")
        mounts: list[MountRequest] = []
        files_dir = self.session.paths.home(name) / "files" / f"a{attempt}"
        for target, content in command.files.items():
            host = files_dir / target.lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(content)
            host.chmod(0o644)
            mounts.append(MountRequest(str(host), "ro", target))
        if mode != "write" or roots.worktree is None:
            return mounts  # an analysis task's CLI state lives in its tmpfs home and ends with it
        login = self.settings.agent(command.agent.value).login_dir
        for target in command.state_dirs:
            host = roots.worktree / STATE_DIR / name / target.strip("/").replace("/", "_")
            fresh = not host.exists()
            host.mkdir(parents=True, exist_ok=True)
            if fresh and login is not None and not command.secrets and target == command.login_dir:
                shutil.copytree(login, host, dirs_exist_ok=True)
            _hand_over(host, user)
            mounts.append(MountRequest(str(host), "rw", target))
        return mounts

    def _record(self, worker: str, task_id: str | None, data: EventData) -> None:
        self.events.append(EventDraft.of(worker, data, task_id))

    async def _record_exit(self, handle: WorkerHandle) -> ExitInfo:
        info = await self.runtime.wait(handle.container_id)
        handle.exit = info
        self._record(handle.name, handle.task_id, WorkerExited(exit_code=info.exit_code, reason=info.reason))
        log.info("worker_exited", worker=handle.name, exit_code=info.exit_code, reason=info.reason)
        return info


def _agent(name: AgentName | str) -> AgentName:
    try:
        return AgentName(name)
    except ValueError:
        known = ", ".join(a.value for a in AgentName)
        raise UsageError(f"unknown agent {name!r}: the agents are {known}") from None


def _prompt_of(task: SubTask | str) -> str:
    if isinstance(task, str):
        return task
    criteria = "".join(f"\n- {item}" for item in task.acceptance)
    return f"{task.title}\n\n{task.description}" + (f"\n\nDone when:{criteria}" if criteria else "")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hand_over(path: Path, user: tuple[int, int]) -> None:
    """Give a folder the container's uid (when we are root), so the agent can write in it."""
    if os.geteuid() == 0:
        for item in [path, *path.rglob("*")]:
            os.chown(item, *user, follow_symlinks=False)
