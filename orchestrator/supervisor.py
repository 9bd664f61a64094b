"""The worker supervisor: runs one job (a planner, a worker or a reviewer) through its attempts.

For each attempt it builds the CLI's command (the agent adapter), turns it into a hardened
container spec (``SpecBuilder``, from the sandbox rules), starts the container, and reads its
output: every line is stored as an ``output`` event and normalised into the adapter's payloads,
each of which is shown to the recovery engine. An action is **recorded (and fsynced) first**, then
carried out: the container is stopped (killed when stalled), the old container is removed only
after its last line is stored, the delay is waited, and the next attempt starts — a new container,
on the new rung / memory, resuming the CLI's own session when it printed an id. A worker stopped
by a person is never restarted. The task's wall-clock limit is the supervisor's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from orchestrator.agents import get_adapter
from orchestrator.agents.base import AgentAdapter, CommandSpec, StreamParser
from orchestrator.config import Settings
from orchestrator.errors import ContainerNotFound, OrchestratorError, RuntimeFailure
from orchestrator.log import get_logger
from orchestrator.models import AgentEvent, AgentState, EventData, RecoveryAction
from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.models.events import ExitReason
from orchestrator.recovery import ExitInfo as RecoveryExit
from orchestrator.recovery import PermissionRecoveryEngine, WorkerView
from orchestrator.runtime import ATTEMPT_LABEL, SESSION_LABEL, WORKER_LABEL, Runtime, runs
from orchestrator.runtime.spec import ContainerSpec, ExitInfo, LineRun
from orchestrator.store import EventWriter

log = get_logger(__name__)
CONTINUE_PROMPT = (
    "Continue the task where you left off. The permissions may have changed: retry any step that was "
    "refused. Finish the task."
)


@dataclass(frozen=True)
class Job:
    """What to run: one agent CLI on one prompt, in one folder."""

    worker: str
    agent: AgentName
    prompt: str
    workdir: Path
    task_id: str | None = None
    writable: bool = False
    extra_ro: tuple[Path, ...] = ()
    schema: Mapping[str, Any] | None = None
    timeout_s: float | None = None


@dataclass
class Outcome:
    """How a job ended."""

    ok: bool
    text: str = ""
    structured: dict[str, Any] | None = None
    cli_session_id: str | None = None
    attempts: int = 0
    error: str | None = None
    stopped: bool = False


class SpecBuilder(Protocol):
    """Turns a job's command into the hardened container spec of one attempt (the sandbox rules)."""

    def __call__(
        self, job: Job, command: CommandSpec, attempt: int, memory_bytes: int | None
    ) -> ContainerSpec: ...


Observer = Callable[[AgentEvent, str], Awaitable[None]]


def ro_target(index: int) -> str:
    """Where the ``index``-th extra read-only folder of a job is mounted in the container."""
    return f"/ro/{index}"


@dataclass
class _Run:
    """What one attempt has seen so far."""

    container_id: str
    parser: StreamParser
    result: ev.AgentResult | None = None
    action: RecoveryAction | None = None
    exit_reason: ExitReason | None = None
    lines: int = 0
    command: CommandSpec | None = None
    # lines per stream already stored by an earlier orchestrator process (a resumed session); each
    # stream keeps its own order, the interleaving of the two does not repeat
    skip: dict[str, int] = field(default_factory=dict)
    held: bool = False  # the observer holds the worker (a risky action under review)
    watched: datetime = field(default_factory=lambda: datetime.now(UTC))
    # the recovery rules' view of the worker while one batch is handled (its payloads share it)
    view: WorkerView | None = None


@dataclass
class Supervisor:
    """Runs jobs with recovery; one per session. ``stop_worker`` is a person's stop."""

    runtime: Runtime
    writer: EventWriter
    settings: Settings
    engine: PermissionRecoveryEngine
    build_spec: SpecBuilder
    observer: Observer | None = None
    transcripts: Callable[[Job, CommandSpec], list[Path]] | None = None
    stall_check_s: float = 5.0
    _stopped: set[str] = field(default_factory=set)
    _containers: dict[str, str] = field(default_factory=dict)
    _past: dict[str, list[RecoveryAction]] = field(default_factory=dict)
    _transcript_offsets: dict[str, dict[str, int]] = field(default_factory=dict)

    def remember(self, worker: str, actions: list[RecoveryAction]) -> None:
        """Seed the actions already recorded for ``worker`` (a resumed session)."""
        self._past[worker] = list(actions)

    @property
    def running(self) -> dict[str, str]:
        """Worker name -> id of its running container."""
        return dict(self._containers)

    async def stop_worker(self, worker: str, grace_s: float | None = None) -> None:
        """Stop ``worker`` for good: it is not restarted."""
        self._stopped.add(worker)
        container = self._containers.get(worker)
        if container:
            await self._stop(container, grace_s)

    async def stop_all(self, grace_s: float | None = None) -> None:
        """Stop every running container of this supervisor (a session stop or a signal)."""
        self._stopped.update(self._containers)
        await asyncio.gather(*(self._stop(c, grace_s) for c in list(self._containers.values())))

    async def run(
        self,
        job: Job,
        *,
        rung: int | None = None,
        resume_id: str | None = None,
        attach: str | None = None,
        resume_prompt: str | None = None,
    ) -> Outcome:
        """Run ``job`` until it succeeds, gives up, or is stopped.

        With ``resume_id`` the CLI's own session is resumed; its first prompt is ``resume_prompt``
        (a fix round's findings) or, without one, ``CONTINUE_PROMPT``. Later attempts continue.

        A resumed session passes ``attach``: the container of the worker's current attempt, still
        running or exited while no orchestrator watched it; its lines are read on from the last
        stored one. A recorded action whose container never started is carried out first.
        """
        adapter = get_adapter(job.agent.value)
        rung = self.engine.start_rung(job.agent, is_writer=job.writable) if rung is None else rung
        state = self._state(job)
        attempt, memory = state.attempt + 1, None
        first_here = job.worker not in self._past  # this process has not run the worker before
        past = self._past.setdefault(job.worker, [])
        pending = next((a for a in past if a.kind != "give_up" and a.attempt > state.attempt), None)
        if attach is not None:
            attempt, rung = state.attempt, state.rung
        elif pending is not None:
            attempt, memory = pending.attempt, pending.memory_bytes
            rung = pending.rung if pending.rung is not None else max(rung, state.rung)
            resume_id = state.cli_session_id if pending.kind != "restart" else None
        prompt = (resume_prompt or CONTINUE_PROMPT) if resume_id else job.prompt
        deadline = asyncio.get_running_loop().time() + (job.timeout_s or self.settings.task_timeout_s)
        if attach is None and first_here and state.container_id is not None:
            await self._remove_leftover(state.container_id)
        while True:
            if job.worker in self._stopped:
                return Outcome(False, attempts=attempt - 1, error="stopped by a person", stopped=True)
            command = self._command(adapter, job, prompt, rung, resume_id)
            spec: ContainerSpec | None = None
            if attach is not None:
                container, skip, attach = (
                    attach,
                    {"stdout": state.stdout_lines, "stderr": state.stderr_lines},
                    None,
                )
                self._containers[job.worker] = container
            else:
                spec = self.build_spec(job, command, attempt, memory)
                container, skip = await self._start(job, spec), {}
            run = _Run(container, adapter.parser(), command=command, skip=skip)
            try:
                if spec is not None:  # a new container (not one re-attached after a restart)
                    self._emit(job, ev.WorkerStarted(
                        agent=job.agent, image=spec.image, container_id=container, argv=list(spec.argv),
                        attempt=attempt, flags=command.flags, rung=rung,
                    ))  # fmt: skip
                await self._watch(job, run, past, memory, deadline, commit=spec is not None)
                exit_info = await self.runtime.wait(container)
            except asyncio.CancelledError:
                # the session is ending (a STOP, a signal): this worker's container goes with it
                await asyncio.shield(self._stop(container, None))
                raise
            except Exception:
                if job.worker in self._stopped:  # stopped for good while its observer decided (a STOP)
                    await asyncio.shield(self._discard(job, container))
                raise
            finally:
                self._containers.pop(job.worker, None)
            reason: ExitReason = run.exit_reason or exit_info.reason
            self._emit(job, ev.WorkerExited(exit_code=exit_info.exit_code, reason=reason))
            if run.action is None:
                run.action = await self._conclude(job, run, exit_info, reason, past, memory)
            else:
                self._transcript(job, run)  # decided already: its session-log lines must not count again
            await self.writer.commit()
            with contextlib.suppress(ContainerNotFound):
                await self.runtime.remove(container)
            action = run.action
            if action is None:
                return self._outcome(job, run, exit_info, attempt)
            if action.kind == "give_up" or job.worker in self._stopped:
                stopped = job.worker in self._stopped
                error = "stopped by a person" if stopped else action.message or action.cause
                return Outcome(False, attempts=attempt, error=error, stopped=stopped)
            await asyncio.sleep(action.delay_s)
            rung = action.rung if action.rung is not None else rung
            memory = action.memory_bytes or memory
            attempt = action.attempt
            resume_id = self._state(job).cli_session_id if action.kind != "restart" else None
            prompt = CONTINUE_PROMPT if resume_id else job.prompt

    def _command(
        self, adapter: AgentAdapter, job: Job, prompt: str, rung: int, resume_id: str | None
    ) -> CommandSpec:
        agent_settings = self.settings.agent(job.agent.value)
        if job.schema is not None and resume_id is None:
            return adapter.build_structured_command(prompt, job.schema, settings=agent_settings)
        return adapter.build_command(
            prompt, rung, settings=agent_settings, resume_id=resume_id,
            extra_ro_dirs=[ro_target(i) for i, _ in enumerate(job.extra_ro)],
        )  # fmt: skip

    async def _watch(
        self, job: Job, run: _Run, past: list[RecoveryAction], memory: int | None, deadline: float,
        *, commit: bool = False,
    ) -> None:  # fmt: skip
        """Read the container's lines until it ends, or until an action stops it.

        With ``commit``, what is buffered (the ``worker_started`` event) is made durable while the
        reader opens the stream: the runtime keeps a fresh container's live output for its first
        reader only for a while, so opening it does not wait for the fsync; its lines are handled
        once the start is durable and folded into the state the recovery rules read.
        """
        loop = asyncio.get_running_loop()
        committed = asyncio.ensure_future(self.writer.commit()) if commit else None
        reader = asyncio.ensure_future(self._read(job, run, past, memory, committed))
        run.watched = datetime.now(UTC)
        try:
            while not reader.done():
                timeout = min(self.stall_check_s, max(deadline - loop.time(), 0.0))
                done, _ = await asyncio.wait({reader}, timeout=timeout)
                if done:
                    break
                if loop.time() >= deadline:
                    run.exit_reason = "timeout"
                    await self.runtime.kill(run.container_id)
                    continue
                if run.held:  # frozen for a review of a risky action: silence is expected
                    continue
                view = self._view(job, past, memory)
                # silence is counted in this container: the last line of an earlier one does not count
                quiet = max(view.last_output_at or run.watched, run.watched)
                view = view.model_copy(update={"last_output_at": quiet})
                action = self.engine.check_stall(view, datetime.now(UTC))
                if action is not None and run.action is None:
                    await self._record(job, run, action, past)
                    run.exit_reason = "stalled"
                    await self.runtime.kill(run.container_id)
            reader.result()
            if committed is not None:
                await committed  # a silent container: its start is durable before its exit
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if committed is not None and not committed.done():
                with contextlib.suppress(Exception):  # the reader's failure is what propagates
                    await committed

    async def _read(
        self, job: Job, run: _Run, past: list[RecoveryAction], memory: int | None,
        committed: Awaitable[int] | None = None,
    ) -> None:  # fmt: skip
        """Store every line (``output_lines`` events) and act on what the adapter makes of it.

        Lines come in the runs the runtime read them in (``stream_runs``). Each stretch of one
        stream's lines in a batch is parsed at once (``parse_lines``) and stored as one event, then
        the payloads made of its lines follow in order: a line is always stored before the events
        made from it.
        """
        async for read in self.runtime.stream_runs(run.container_id):
            if committed is not None:
                await committed
                committed = None
            run.view = None  # the state may have moved on since the last batch
            for stream, texts in runs.by_stream(self._skip(run, read) if run.skip else read):
                run.lines += len(texts)
                made = run.parser.parse_lines(stream, texts)
                self.writer.append_output(job.worker, job.task_id, stream, texts)
                for _, payloads in made:
                    for payload in payloads:
                        await self._payload(job, run, payload, past, memory)

    @staticmethod
    def _skip(run: _Run, batch: list[LineRun]) -> list[LineRun]:
        """The lines of ``batch`` not stored yet: those stored before the orchestrator restarted only
        rebuild the parser's context."""
        fresh: list[LineRun] = []
        for stream, texts, time_ns in batch:
            skipped = min(run.skip.get(stream, 0), len(texts))
            if skipped:
                run.skip[stream] -= skipped
                run.lines += skipped
                run.parser.parse_lines(stream, texts[:skipped])
            if skipped < len(texts):
                fresh.append(LineRun(stream, texts[skipped:], time_ns))
        if not any(run.skip.values()):
            run.skip = {}
        return fresh

    async def _payload(
        self, job: Job, run: _Run, payload: EventData, past: list[RecoveryAction], memory: int | None
    ) -> None:
        """One payload the adapter made of a line: stored, shown to the observer, judged for recovery."""
        event = self._emit(job, payload)
        if isinstance(payload, ev.AgentResult):
            run.result = payload
        if self.observer is not None:
            run.held, run.view = True, None  # a review may take a while: the state moves on
            try:
                await self.observer(event, run.container_id)
            finally:
                run.held = False
                run.watched = datetime.now(UTC)
        if run.action is None:
            if run.view is None:
                run.view = self._view(job, past, memory)
            action = self.engine.monitor_stream(payload, run.view)
            if action is not None:
                await self._record(job, run, action, past)
                run.exit_reason = "stopped"
                await self._stop(run.container_id, None)

    async def _conclude(
        self,
        job: Job,
        run: _Run,
        exit_info: ExitInfo,
        reason: ExitReason,
        past: list[RecoveryAction],
        memory: int | None,
    ) -> RecoveryAction | None:
        """After a natural end: the CLI's own session log, the adapter's last word, then the exit rules."""
        for payload in [*self._transcript(job, run), *run.parser.finish(exit_info.exit_code)]:
            self._emit(job, payload)
            if isinstance(payload, ev.AgentResult):
                run.result = payload
            action = self.engine.monitor_stream(payload, self._view(job, past, memory))
            if action is not None:
                await self._record(job, run, action, past)
                return action
        info = RecoveryExit(
            exit_code=exit_info.exit_code, reason=reason,
            result_ok=None if run.result is None else run.result.ok,
            turn_incomplete=run.lines == 0, evidence=exit_info.error or f"exit {exit_info.exit_code} ({reason})",
        )  # fmt: skip
        action = self.engine.on_exit(self._view(job, past, memory), info)
        if action is not None:
            await self._record(job, run, action, past)
        return action

    def _transcript(self, job: Job, run: _Run) -> list[EventData]:
        """New lines of the CLI's session log (Codex shows its sandbox denials only there)."""
        if self.transcripts is None or run.command is None or not run.command.transcript_glob:
            return []
        payloads: list[EventData] = []
        seen = self._transcript_offsets.setdefault(job.worker, {})
        for path in self.transcripts(job, run.command):
            with contextlib.suppress(OSError), path.open("rb") as handle:
                handle.seek(seen.get(str(path), 0))
                data = handle.read()
                complete = data[: data.rfind(b"\n") + 1]
                seen[str(path)] = seen.get(str(path), 0) + len(complete)
                for raw in complete.decode(errors="replace").splitlines():
                    payloads.extend(run.parser.parse_transcript_line(raw))
        return payloads

    async def _record(self, job: Job, run: _Run, action: RecoveryAction, past: list[RecoveryAction]) -> None:
        """Store the decision durably before anything acts on it."""
        run.action = action
        past.append(action)
        self._emit(job, ev.Recovery(action=action))
        await self.writer.commit()
        log.info("recovery", worker=job.worker, kind=action.kind, cause=action.cause, attempt=action.attempt)

    def _outcome(self, job: Job, run: _Run, exit_info: ExitInfo, attempt: int) -> Outcome:
        state = self._state(job)
        result = run.result
        ok = exit_info.exit_code == 0 and (result is None or result.ok) and job.worker not in self._stopped
        error = None if ok else (f"exit {exit_info.exit_code}" if result is None else result.text[:500])
        return Outcome(
            ok=ok, text=result.text if result else "", structured=result.structured if result else None,
            cli_session_id=state.cli_session_id, attempts=attempt, error=error, stopped=job.worker in self._stopped,
        )  # fmt: skip

    async def _start(self, job: Job, spec: ContainerSpec) -> str:
        """Start a container; if cancelled meanwhile, the container is still stopped, never leaked.

        A container of the same worker and attempt left by a process killed before it recorded the
        start (its name is taken, none of its lines were stored) is removed first and the start retried.
        """
        starting = asyncio.ensure_future(self.runtime.start(spec))
        try:
            container = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._stop(await starting, None))
            raise
        except RuntimeFailure:
            keys = (SESSION_LABEL, WORKER_LABEL, ATTEMPT_LABEL)
            leftovers = await self.runtime.find({k: spec.labels[k] for k in keys if k in spec.labels})
            if not leftovers:
                raise
            for info in leftovers:
                await self.runtime.remove(info.id)
            return await self._start(job, spec)
        self._containers[job.worker] = container
        return container

    async def _discard(self, job: Job, container: str) -> None:
        """Record the end of a worker stopped for good and remove its container: nothing resumes it."""
        with contextlib.suppress(OrchestratorError):
            await self._stop(container, None)
            exit_info = await self.runtime.wait(container)
            self._emit(job, ev.WorkerExited(exit_code=exit_info.exit_code, reason="stopped"))
            await self.writer.commit()
            await self.runtime.remove(container)

    async def _remove_leftover(self, container: str) -> None:
        """Remove the container of an earlier attempt that is not re-attached: a process killed while
        it ran (a reviewer, an attempt whose successor never started) left it, running or exited."""
        try:
            await self._stop(container, 1.0)
            await self.runtime.remove(container)
        except ContainerNotFound:
            return  # removed already, as every attempt's container is once it has been read
        except OrchestratorError as exc:  # the new attempt matters more than the old container
            log.warning("leftover_container_kept", container=container[:12], error=str(exc))
            return
        log.info("leftover_container_removed", container=container[:12])

    async def _stop(self, container: str, grace_s: float | None) -> None:
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        with contextlib.suppress(OrchestratorError):
            await self.runtime.unpause(container)
        with contextlib.suppress(ContainerNotFound):
            await self.runtime.stop(container, grace)

    def _emit(self, job: Job, payload: EventData) -> AgentEvent:
        return self.writer.emit(job.worker, payload, job.task_id)

    def _state(self, job: Job) -> AgentState:
        return self.writer.state.workers.get(job.worker) or AgentState(name=job.worker, agent=job.agent)

    def _view(self, job: Job, past: list[RecoveryAction], memory: int | None) -> WorkerView:
        return WorkerView.from_state(
            self._state(job), agent=job.agent, is_writer=job.writable, past=past, memory_bytes=memory
        )
