"""``WorkerManager``: one hardened container per worker (the seed's Popen, replaced).

The seed's names are kept: ``launch_gemini(task, dirs)``, ``launch_codex(task, cwd)``,
``launch_claude(task, dirs)``, ``stop_worker(name)``, ``get_worker_status(name)``. Each launch asks
the agent's adapter for the command (``command_for``) and ``sandbox.layout`` for the task's mounts,
then goes the way every launcher goes (``sandbox.layout.worker_spec``): the command's config files
and state folders in the worker's own ``homes/<worker>/`` (the state kept between its attempts, so a
resumed CLI finds its session), checked and hardened by ``sandbox.safety.build_spec``. It starts the
container and records ``worker_started``. The returned ``WorkerHandle`` streams the lines, waits
for the exit (recording ``worker_exited`` once) and stops, pauses or removes the container.

Signals: a library installs no handlers. The CLI's SIGINT/SIGTERM handler calls ``stop_all(grace_s)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.agents import CommandSpec, get_adapter
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.log import get_logger
from orchestrator.models.common import AgentName, utcnow
from orchestrator.models.events import AgentEvent, EventData, EventDraft, WorkerExited, WorkerStarted
from orchestrator.models.plan import DirSpec, SubTask
from orchestrator.models.state import AgentState, SessionState, apply
from orchestrator.paths import validate_task_id
from orchestrator.runtime.protocol import ATTEMPT_LABEL, SESSION_LABEL, WORKER_LABEL, Runtime
from orchestrator.runtime.spec import ContainerSpec, ExitInfo, LogLine
from sandbox.layout import SessionContext, task_layout, worker_spec
from sandbox.mounts import TaskMode
from sandbox.safety import container_user

__all__ = [
    "EventSink",
    "MemoryEvents",
    "SessionContext",
    "WorkerHandle",
    "WorkerManager",
    "command_for",
    "image_for",
    "session_network",
]

log = get_logger(__name__)


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
        command: CommandSpec | None = None,
    ) -> WorkerHandle:  # fmt: skip
        """Start one container for ``task``; ``UnsafeMount``/``UsageError`` if the sandbox refuses it.

        ``dirs`` are absolute host paths (read-only) or ``DirSpec``s relative to the task's
        worktree (write tasks) or the repository (analysis). A task writes when a ``DirSpec`` is
        ``rw`` or ``write_dir`` is given; it then writes only in its worktree
        (``<workspace>/<session>/worktrees/<task>``), mounted at ``/workspace``. ``command``
        replaces the adapter's command (``orchestrate sandbox check`` runs its probe this way).
        """
        agent = _agent(agent)
        task_id = validate_task_id(task_id or (task.id if isinstance(task, SubTask) else self._next_adhoc()))
        name = f"{agent.value}-{task_id}"
        specs = [d for d in dirs if isinstance(d, DirSpec)]
        if isinstance(task, SubTask):
            specs += [d for d in task.dirs if d not in specs]
        mode: TaskMode = (
            "write" if write_dir is not None or any(d.mode == "rw" for d in specs) else "read-only"
        )
        layout = task_layout(self.session, self.settings, task_id, mode, dirs=specs,
                             paths=[d for d in dirs if isinstance(d, str)], write_dir=write_dir)  # fmt: skip
        extra = layout.extra_dirs()
        attempt = await self._next_attempt(name)
        chosen = (
            rung
            if rung is not None
            else (0 if mode == "read-only" else self.settings.recovery.writer_start_rung)
        )
        if command is None:
            command = command_for(agent, prompt or _prompt_of(task), chosen, self.settings,
                                  resume_id=resume_id, extra_ro_dirs=extra)  # fmt: skip
        spec = worker_spec(command, layout, session=self.session, settings=self.settings, worker=name,
                           attempt=attempt, image=image_for(agent, self.settings),
                           user=container_user(self.session.repo, self.settings), memory_bytes=memory_bytes)  # fmt: skip
        container_id = await self.runtime.start(spec)
        handle = WorkerHandle(name, agent, task_id, container_id, attempt, chosen, spec, self)
        self.handles[name] = handle
        self._record(name, task_id, WorkerStarted(
            agent=agent, image=spec.image, container_id=container_id, argv=list(spec.argv), attempt=attempt,
            flags=list(command.flags), rung=chosen,
        ))  # fmt: skip
        log.info("worker_started", worker=name, container=container_id[:12], attempt=attempt, rung=chosen)
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
