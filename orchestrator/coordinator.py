"""The coordinator: the imperative shell of a session (FLOW.md). Seed name: ``Orchestrator``.

``run(prompt)`` plans (``_decompose_task``), schedules the tasks (``_loop``: a task starts when its
dependencies succeeded, at most ``max_parallel`` at once, in an ``asyncio.TaskGroup``), runs each in
its own container and git clone through the ``Supervisor`` (recovery included), has the work
reviewed, merges approved branches into ``orch/<session>`` and writes the report. Every decision is
an event before it acts; the event log is the only state, so ``resume`` continues from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from orchestrator import planner
from orchestrator.config import Settings
from orchestrator.decisions import take_decisions
from orchestrator.egress import Emitter
from orchestrator.errors import (
    OrchestratorError,
    PlanInvalid,
    SessionFinished,
    SessionPausedExit,
    StateConflict,
    UsageError,
)
from orchestrator.gitwork import SessionRepo, git
from orchestrator.launch import Launcher
from orchestrator.log import REDACTOR, get_logger
from orchestrator.models import (
    AgentEvent,
    AgentName,
    DecisionAction,
    EventData,
    OrchestratorDecision,
    RecoveryAction,
    SubTask,
    TaskBreakdown,
    utcnow,
)
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.recovery import PermissionRecoveryEngine, RecoveryPolicy
from orchestrator.report import Report, build_report, render_markdown
from orchestrator.review_engine import ReviewOrchestrator, ReviewPolicy
from orchestrator.review_prompt import build_fix_prompt
from orchestrator.reviews import ReviewRunner
from orchestrator.runtime import ATTEMPT_LABEL, SESSION_LABEL, WORKER_LABEL, Runtime
from orchestrator.store import EventReader, EventWriter, atomic_write
from orchestrator.supervisor import Job, Outcome, Supervisor

log = get_logger(__name__)
OnPause = Literal["exit", "stop", "continue", "wait"]
ALL_AGENTS: tuple[AgentName, ...] = (AgentName.CLAUDE, AgentName.CODEX, AgentName.GEMINI)
RESULT_CHARS = 4000


@dataclass
class Interrupt:
    """Set by a signal handler before it cancels the session's task: which signal it was."""

    signal: str | None = None


class _StopSession(Exception):
    """A STOP decision or a person's stop ends the session."""


@dataclass
class SessionOptions:
    """What a person asked for, beyond the prompt (recorded in ``session_created``)."""

    repo: Path
    agents: tuple[AgentName, ...] = ALL_AGENTS
    max_parallel: int | None = None
    allow_dirty: bool = False
    on_pause: OnPause = "exit"
    review: bool = True
    model_server: str | None = None  # a scripted model server's scenario (credential-free runs)

    @classmethod
    def from_dict(cls, repo: Path, raw: dict[str, Any]) -> SessionOptions:
        """The options recorded in ``session_created`` (a resumed session keeps them)."""
        agents = raw.get("agents") or [a.value for a in ALL_AGENTS]
        on_pause = raw.get("on_pause", "exit")
        return cls(
            repo=repo,
            agents=tuple(AgentName(a) for a in agents),
            max_parallel=raw.get("max_parallel"),
            allow_dirty=True,
            on_pause=on_pause if on_pause in ("exit", "stop", "continue", "wait") else "exit",
            review=bool(raw.get("review", True)),
            model_server=raw.get("model_server") if isinstance(raw.get("model_server"), str) else None,
        )

    def as_dict(self) -> dict[str, object]:
        return {"agents": [a.value for a in self.agents], "max_parallel": self.max_parallel,
                "allow_dirty": self.allow_dirty, "on_pause": self.on_pause, "review": self.review,
                "model_server": self.model_server}  # fmt: skip


@dataclass
class Orchestrator:
    """One session, from prompt to report."""

    settings: Settings
    runtime: Runtime
    session_id: str = field(default_factory=new_session_id)
    launcher: Launcher | None = None
    interrupt: Interrupt = field(default_factory=Interrupt)
    _writer: EventWriter | None = None
    _repo: SessionRepo | None = None
    _supervisor: Supervisor | None = None
    _reviews: ReviewRunner | None = None
    _options: SessionOptions | None = None
    _decisions: asyncio.Queue[ev.HumanDecision] = field(default_factory=asyncio.Queue)
    _pause_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _results: dict[str, str] = field(default_factory=dict)
    _stopping: str | None = None
    _jobs: dict[str, Job] = field(default_factory=dict)
    notices: list[EventData] = field(default_factory=list)  # recorded at session start
    watchers: list[Callable[[Emitter], Awaitable[None]]] = field(default_factory=list)  # run alongside
    created: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def paths(self) -> SessionPaths:
        return SessionPaths.of(self.settings.workspace, self.session_id)

    @property
    def writer(self) -> EventWriter:
        if self._writer is None:
            raise OrchestratorError("the session is not open")
        return self._writer

    # -- entry points ------------------------------------------------------------------------------

    async def run(self, prompt: str, options: SessionOptions | None = None) -> Report:
        """Run a new session for ``prompt``; returns the report (its ``exit_code`` is the CLI's)."""
        options = options or SessionOptions(repo=Path.cwd())
        if not prompt.strip():
            raise UsageError("the prompt is empty: say what the agents should do")
        repo = await asyncio.to_thread(
            SessionRepo.prepare, options.repo, self.session_id, self.paths.root, options.allow_dirty
        )
        self._repo, self._options = repo, options
        self._writer = EventWriter.open(self.paths, snapshot_every=self.settings.snapshot_every)
        atomic_write(self.paths.session_json, orjson.dumps({
            "id": self.session_id, "prompt": prompt, "repo": str(options.repo.resolve()),
            "options": options.as_dict(), "created_at": utcnow().isoformat(),
        }, option=orjson.OPT_INDENT_2))  # fmt: skip
        self.writer.emit(
            "orchestrator", ev.SessionCreated(prompt=prompt, repo=str(repo.repo), options=options.as_dict())
        )
        await self.writer.commit()
        self.created.set()
        return await self._drive()

    async def resume(self, writer: EventWriter | None = None) -> Report:
        """Continue an interrupted or paused session from its log.

        ``writer``: the session's log already opened (locked) by the caller, which must hold the lock
        before it touches anything of the session (a second ``resume`` is refused before any effect).
        """
        self._writer = writer or EventWriter.open(
            self.paths, snapshot_every=self.settings.snapshot_every, create=False
        )
        state = self.writer.state
        if state.finished:
            self.writer.close()
            raise SessionFinished(
                f"session {self.session_id} has finished ({state.status}); it cannot be resumed"
            )
        self._options = SessionOptions.from_dict(Path(state.repo), dict(state.options))
        if state.status == "paused":
            choice = self._decision_after_pause()
            if choice is None:
                self.writer.close()
                raise SessionPausedExit(
                    f"session {self.session_id} is paused ({state.pause_reason}); decide first: "
                    f"orchestrate decide {self.session_id} continue|stop"
                )
            if choice.action == "stop":
                return await self._drive(
                    resumed=True, stop=f"stopped by {choice.by}: {choice.note or state.pause_reason}"
                )
        self._repo = await asyncio.to_thread(
            SessionRepo.prepare, Path(state.repo), self.session_id, self.paths.root, True
        )
        self.writer.emit("orchestrator", ev.SessionResumed(by="resume"))
        await self.writer.commit()
        self.created.set()
        return await self._drive(resumed=True)

    def _decision_after_pause(self) -> ev.HumanDecision | None:
        """The person's decision recorded after the session's last pause, if any."""
        found: ev.HumanDecision | None = None
        for event in EventReader(self.paths).read():
            if isinstance(event.data, ev.SessionPaused):
                found = None
            elif isinstance(event.data, ev.HumanDecision) and event.worker == "orchestrator":
                found = event.data
        return found

    async def decide(self, action: str, note: str = "", by: str = "person") -> None:
        """A person's decision on the paused session (in-process callers: the API); durable on return."""
        if action not in ("continue", "stop"):
            raise UsageError(f"decision {action!r} is not one of: continue, stop")
        if self.writer.state.status != "paused":
            raise StateConflict(f"session {self.session_id} is {self.writer.state.status}, not paused")
        decision = ev.HumanDecision.model_validate({"action": action, "note": note, "by": by})
        self.writer.emit("orchestrator", decision)
        await self.writer.commit()
        self._decisions.put_nowait(decision)

    async def stop(self, note: str = "stop requested") -> None:
        """Stop every worker; no task starts after this; the session finishes as stopped."""
        self._stopping = note
        if self._writer is not None and self.writer.state.status == "paused":
            await self.decide("stop", note)
            return
        if self._writer is not None:
            self.writer.emit("orchestrator", ev.HumanDecision(action="stop", note=note, by="person"))
            await self.writer.commit()
        if self._supervisor is not None:
            await self._supervisor.stop_all(self.settings.grace_period_s)

    async def stop_worker(self, worker: str) -> None:
        """Stop one worker for good (it is not restarted)."""
        if self._supervisor is not None:
            self.writer.emit(worker, ev.HumanDecision(action="stop", note="worker stopped", by="person"))
            await self._supervisor.stop_worker(worker)

    # -- the session -------------------------------------------------------------------------------

    async def _drive(self, resumed: bool = False, stop: str | None = None) -> Report:
        flusher = asyncio.ensure_future(self.writer.run_flusher(self.settings.flush_interval_s))
        watchers = [asyncio.ensure_future(watch(self.writer)) for watch in self.watchers]
        for notice in self.notices:
            self.writer.emit("orchestrator", notice)
        try:
            self._setup()
            if resumed:
                self._remember_recoveries()
            try:
                if stop is not None:
                    raise _StopSession(stop)
                plan = self.writer.state.plan if resumed and self.writer.state.plan else None
                if plan is None:
                    plan = await self._decompose_task(self.writer.state.prompt)
                await self._loop(plan)
                await self._finish()
            except _StopSession as stopping:
                await self._finish(stopped=str(stopping))
            except PlanInvalid as err:
                self.writer.emit("orchestrator", ev.Error(message=str(err)))
                await self._finish(failed=str(err))
            except SessionPausedExit:
                await self.writer.commit()
                raise
            except asyncio.CancelledError:
                how = self.interrupt.signal or "cancelled"
                self.writer.emit("orchestrator", ev.SessionInterrupted(
                    signal=how, detail=f"workers stopped; resume with: orchestrate resume {self.session_id}"
                ))  # fmt: skip
                raise
            except OrchestratorError as err:  # the engine went away, a git or disk failure: resumable
                self.writer.emit("orchestrator", ev.Error(message=err.message))
                self.writer.emit("orchestrator", ev.SessionInterrupted(signal="error", detail=err.message))
                raise
            return build_report(EventReader(self.paths).read())
        finally:
            for helper in (*watchers, flusher):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError, OrchestratorError):
                    await helper
            if self._supervisor is not None:
                await asyncio.shield(self._supervisor.stop_all(self.settings.grace_period_s))
            self.writer.close()

    def _setup(self) -> None:
        REDACTOR.register(*self.settings.secret_values())
        if self.launcher is None:
            raise OrchestratorError(
                "the orchestrator needs a Launcher (see orchestrator.sessions.SessionHost)"
            )
        launcher = self.launcher
        engine = PermissionRecoveryEngine(RecoveryPolicy.from_settings(self.settings))
        self._supervisor = Supervisor(
            self.runtime,
            self.writer,
            self.settings,
            engine,
            launcher.spec_for,
            transcripts=launcher.transcript_files,
            observer=self._observe,
        )
        review_policy = ReviewPolicy.from_settings(self.settings.review)
        self._reviews = ReviewRunner(
            self._supervisor, ReviewOrchestrator(review_policy), self.settings.review.timeout_s
        )

    async def _observe(self, event: AgentEvent, container: str) -> None:
        """A worker's tool call matching a risky pattern freezes its container until a decision.

        CONTINUE and WARN thaw it, PAUSE keeps it frozen until a person decides, STOP ends the
        session. A runtime that cannot pause (Kubernetes) stops the worker instead.
        """
        data, plan = event.data, self.writer.state.plan
        if not isinstance(data, ev.ToolCall) or event.task_id is None or plan is None:
            return
        if self._reviews is None or self._supervisor is None or self._options is None:
            return
        pattern = self._reviews.policy.is_risky(data)
        job = self._jobs.get(event.worker)
        if pattern is None or job is None:
            return
        what = f"risky action ({pattern}) by {event.worker}: {data.tool} {orjson.dumps(data.input).decode()[:500]}"
        if not getattr(self.runtime, "supports_pause", True):
            self.writer.emit(
                event.worker, ev.Error(message=f"{what}; this runtime cannot pause, the worker is stopped")
            )
            await self._supervisor.stop_worker(event.worker)
            return
        try:
            await self.runtime.pause(container)
        except OrchestratorError as err:  # it ended first: the review still decides what happens next
            self.writer.emit(
                event.worker, ev.Error(message=f"{what}; could not freeze the worker: {err.message}")
            )
        try:
            task = plan.task(event.task_id)
            reviewers = self._reviews.policy.reviewers_for(task.agent, self._options.agents)
            if not reviewers:
                await self._pause(f"{what}; no other agent can review it")
                return
            request = self._reviews.policy.create_review_request({
                "id": self._reviews.next_id(task.id), "session_id": self.session_id, "task_id": task.id,
                "author": event.worker, "reviewers": reviewers, "trigger": "risky_action",
                "task": task.description, "acceptance": task.acceptance,
                "diff": f"The agent is about to run this tool call:\n{data.tool} {orjson.dumps(data.input).decode()}",
                "summary": what,
            })  # fmt: skip
            decision = await self._reviews.review(request, job.workdir)
            await self._act_on(decision, what)
        finally:
            with contextlib.suppress(OrchestratorError):
                await self.runtime.unpause(container)

    def _remember_recoveries(self) -> None:
        """Give the supervisor the recovery actions already recorded (budgets survive a restart)."""
        assert self._supervisor is not None
        past: dict[str, list[RecoveryAction]] = {}
        for event in EventReader(self.paths).read():
            if isinstance(event.data, ev.Recovery):
                past.setdefault(event.worker, []).append(event.data.action)
        for worker, actions in past.items():
            self._supervisor.remember(worker, actions)

    async def _current_container(self, worker: str) -> str | None:
        """The container of ``worker``'s current attempt, if it still exists; older ones are removed."""
        state = self.writer.state.workers.get(worker)
        if state is None or state.attempt == 0:
            return None
        found = await self.runtime.find({SESSION_LABEL: self.session_id, WORKER_LABEL: worker})
        current = None
        for info in found:
            if info.labels.get(ATTEMPT_LABEL) == str(state.attempt) and state.status in (
                "running",
                "starting",
            ):
                current = info.id
            else:
                with contextlib.suppress(OrchestratorError):
                    await self.runtime.remove(info.id)
        return current

    async def _decompose_task(self, prompt: str) -> TaskBreakdown:
        """Ask the planner (Claude Code, repository read-only) for a TaskBreakdown; one retry."""
        assert self._supervisor is not None and self._repo is not None and self._options is not None
        repo = self._repo.repo
        files = (await asyncio.to_thread(git, repo, "ls-files")).stdout.splitlines()
        agents = [a.value for a in self._options.agents]
        ask = planner.build_plan_prompt(prompt, agents, files)
        error: planner.PlanAnswerError | None = None
        for _ in range(2):
            job = Job(worker="planner", agent=AgentName.CLAUDE, prompt=ask, workdir=self._repo.repo,
                      schema=planner.plan_schema())  # fmt: skip
            outcome = await self._supervisor.run(job, rung=0)
            if not outcome.ok and not outcome.text and not outcome.structured:
                raise PlanInvalid(f"the planner failed: {outcome.error}")
            result = planner.parse_plan(outcome.text, outcome.structured)
            if isinstance(result, TaskBreakdown):
                unknown = sorted({t.agent.value for t in result.tasks} - set(agents))
                if not unknown:
                    self.writer.emit("orchestrator", ev.PlanReady(breakdown=result))
                    await self.writer.commit()
                    return result
                result = planner.PlanAnswerError(
                    message=f"agents not allowed in this session: {', '.join(unknown)}"
                )
            error = result
            self.writer.emit(
                "planner", ev.Error(message=f"invalid plan: {error.message}", detail=error.excerpt)
            )
            await self.writer.commit()
            ask = (
                planner.build_plan_prompt(prompt, agents, files)
                + "\n\n"
                + planner.build_plan_retry_prompt(error)
            )
        raise PlanInvalid(f"the planner's answer was invalid twice: {error.message if error else 'unknown'}")

    async def _loop(self, plan: TaskBreakdown) -> None:
        """Run the tasks in dependency order, at most ``max_parallel`` at once."""
        assert self._options is not None
        limit = asyncio.Semaphore(self._options.max_parallel or self.settings.max_parallel)
        done = {t.id: asyncio.Event() for t in plan.tasks}
        try:
            async with asyncio.TaskGroup() as group:
                for task in plan.tasks:
                    group.create_task(self._task(task, limit, done))
        except ExceptionGroup as group_error:
            raise _most_important(group_error) from None

    async def _task(self, task: SubTask, limit: asyncio.Semaphore, done: dict[str, asyncio.Event]) -> None:
        try:
            status = self.writer.state.tasks.get(task.id)
            if status in ("succeeded", "failed", "skipped", "stopped"):
                return
            for dep in task.depends_on:
                await done[dep].wait()
            if self._stopping:
                raise _StopSession(f"stopped by a person: {self._stopping}")
            failed = [d for d in task.depends_on if self.writer.state.tasks.get(d) != "succeeded"]
            if failed:
                self._finish_task(
                    task, ev.TaskFinished(status="skipped", summary=f"dependency failed: {', '.join(failed)}")
                )
                return
            async with limit:
                if self._stopping:
                    raise _StopSession(f"stopped by a person: {self._stopping}")
                await self._run_task(task)
        finally:
            done[task.id].set()

    async def _run_task(self, task: SubTask) -> None:
        assert self._supervisor is not None and self._repo is not None
        worker = f"{task.agent.value}-{task.id}"
        owner = self.launcher.owner if self.launcher else None
        state = self.writer.state.workers.get(worker)
        started = bool(state and state.attempt)
        clone = await asyncio.to_thread(
            self._repo.checkout_task,
            task.id,
            owner[0] if owner else None,
            owner[1] if owner else None,
            started,
        )
        job = self._jobs[worker] = Job(worker=worker, agent=task.agent, prompt=self._task_prompt(task), workdir=clone, task_id=task.id,
                  writable=task.writes, timeout_s=self.settings.task_timeout_s)  # fmt: skip
        if state is not None and state.status == "succeeded":  # finished before a restart of ours
            outcome = Outcome(True, text=self._read_result(task.id), cli_session_id=state.cli_session_id)
        else:
            attach = await self._current_container(worker)
            resume_id = state.cli_session_id if state and state.attempt and attach is None else None
            outcome = await self._supervisor.run(job, resume_id=resume_id, attach=attach)
            self._save_result(task, outcome)
        if outcome.stopped:
            self._finish_task(task, ev.TaskFinished(status="stopped", summary=outcome.error or "stopped"))
            return
        if not outcome.ok:
            self._finish_task(
                task, ev.TaskFinished(status="failed", summary=outcome.error or "the agent failed")
            )
            return
        if not task.writes:
            self._finish_task(task, ev.TaskFinished(status="succeeded", summary=outcome.text[:500]))
            return
        await self._review_and_merge(task, job, outcome)

    async def _review_and_merge(self, task: SubTask, job: Job, outcome: Outcome) -> None:
        assert self._repo is not None and self._reviews is not None and self._supervisor is not None
        assert self._options is not None
        rounds = 0
        while True:
            stat = await asyncio.to_thread(self._repo.collect, task.id, f"{task.id}: {task.title}")
            if not stat.files:
                self._finish_task(task, ev.TaskFinished(status="succeeded", summary="no changes"))
                return
            decision, continued = self._prior_decision(task.id)
            if decision is not None:  # decided before a restart of ours
                if decision.action is DecisionAction.PAUSE and not continued:
                    await self._pause(f"PAUSE after the review of {task.id}: {'; '.join(decision.reasons)}")
                await self._merge(task, stat.files, stat.insertions, stat.deletions)
                return
            reviewers = self._reviews.policy.reviewers_for(task.agent, self._options.agents)
            if self._options.review and self.settings.review.enabled and reviewers:
                request = self._reviews.policy.create_review_request({
                    "id": self._reviews.next_id(task.id), "session_id": self.session_id, "task_id": task.id,
                    "author": job.worker, "reviewers": reviewers, "trigger": "task_finished",
                    "task": task.description, "acceptance": task.acceptance, "diff": stat.diff,
                    "files_changed": stat.files, "summary": outcome.text[:2000],
                })  # fmt: skip
                decision = await self._reviews.review(request, job.workdir)
                if self._reviews.policy.wants_fix_round(decision, rounds):
                    rounds += 1
                    findings = [f for r in decision.reviews for f in r.findings]
                    fix = Job(worker=job.worker, agent=job.agent, prompt=build_fix_prompt(findings),
                              workdir=job.workdir, task_id=task.id, writable=True, timeout_s=job.timeout_s)  # fmt: skip
                    state = self.writer.state.workers.get(job.worker)
                    outcome = await self._supervisor.run(  # on the rung the author's work reached
                        fix, rung=state.rung if state else None, resume_prompt=fix.prompt,
                        resume_id=state.cli_session_id if state else None,
                    )  # fmt: skip
                    if not outcome.ok:
                        self._finish_task(
                            task, ev.TaskFinished(status="failed", summary=outcome.error or "fix failed")
                        )
                        return
                    continue
                await self._act_on(decision, f"review of {task.id}")
            await self._merge(task, stat.files, stat.insertions, stat.deletions)
            return

    def _prior_decision(self, task_id: str) -> tuple[OrchestratorDecision | None, bool]:
        """The last review decision recorded for ``task_id`` and whether a person continued after it."""
        requests: set[str] = set()
        decision: OrchestratorDecision | None = None
        continued = False
        for event in EventReader(self.paths).read():
            data = event.data
            if isinstance(data, ev.ReviewRequested) and data.request.task_id == task_id:
                requests.add(data.request.id)
            elif isinstance(data, ev.Decision) and data.decision.request_id in requests:
                decision, continued = data.decision, False
            elif isinstance(data, ev.HumanDecision) and decision is not None and data.action == "continue":
                continued = True
        if decision is not None and decision.action is DecisionAction.WARN and self._reviews is not None:
            return None, False  # a WARN may still owe a fix round: review again
        return decision, continued

    async def _merge(self, task: SubTask, files: list[str], plus: int, minus: int) -> None:
        assert self._repo is not None
        repo = self._repo
        result = await asyncio.to_thread(repo.merge, task.id, f"Merge {task.id}: {task.title}")
        branch = repo.task_branch(task.id)
        if not result.merged:
            self.writer.emit(
                "orchestrator", ev.MergeConflict(task_id=task.id, files=result.conflicts), task.id
            )
            reason = f"merging {task.id} conflicts in {', '.join(result.conflicts)}; branch {branch} is kept"
            await self._pause(reason)
            self._finish_task(task, ev.TaskFinished(status="succeeded", summary=f"not merged: {reason}",
                                                    files_changed=files, insertions=plus, deletions=minus,
                                                    branch=branch))  # fmt: skip
            return
        self.writer.emit(
            "orchestrator", ev.Merged(branch=repo.branch, tasks=[task.id], commit=result.commit), task.id
        )
        self._finish_task(task, ev.TaskFinished(status="succeeded", summary=f"merged into {repo.branch}",
                                                files_changed=files, insertions=plus, deletions=minus, branch=branch))  # fmt: skip
        await asyncio.to_thread(repo.remove_checkout, task.id)

    async def _act_on(self, decision: OrchestratorDecision, what: str) -> None:
        """CONTINUE and WARN go on, PAUSE waits for a person, STOP ends the session."""
        if decision.action is DecisionAction.STOP:
            assert self._supervisor is not None
            await self._supervisor.stop_all(self.settings.grace_period_s)
            raise _StopSession(f"STOP after the {what}: {'; '.join(decision.reasons)}")
        if decision.action is DecisionAction.PAUSE:
            await self._pause(f"PAUSE after the {what}: {'; '.join(decision.reasons)}")

    async def _pause(self, reason: str) -> None:
        """Wait for a person (or apply ``--on-pause``): returns on continue; a stop ends the session."""
        assert self._options is not None
        async with self._pause_lock:
            self.writer.emit(
                "orchestrator", ev.SessionPaused(reason=reason, decision_seq=self.writer.last_seq)
            )
            await self.writer.commit()
            mode = self._options.on_pause
            if mode == "exit":
                raise SessionPausedExit(f"session {self.session_id} is paused: {reason}")
            if mode in ("continue", "stop"):
                choice = ev.HumanDecision(action=mode, note="--on-pause " + mode, by="policy")
            else:
                choice, recorded = await self._wait_for_person()
                if not recorded:
                    self.writer.emit("orchestrator", choice)
            if mode in ("continue", "stop"):
                self.writer.emit("orchestrator", choice)
            if choice.action == "stop":
                raise _StopSession(f"stopped by {choice.by}: {choice.note or reason}")
            self.writer.emit("orchestrator", ev.SessionResumed(by=choice.by))
            await self.writer.commit()

    async def _wait_for_person(self) -> tuple[ev.HumanDecision, bool]:
        """The next decision, and whether it is already recorded (in-process) or came by the inbox."""
        while True:
            queued = take_decisions(self.paths)
            if queued:
                return queued[0], False
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._decisions.get(), timeout=0.5), True

    async def _finish(self, stopped: str | None = None, failed: str | None = None) -> None:
        state = self.writer.state
        statuses = [state.tasks.get(t.id, "pending") for t in state.plan.tasks] if state.plan else []
        if stopped:
            outcome, summary = "stopped", stopped
            for task in state.plan.tasks if state.plan else []:
                if state.tasks.get(task.id) == "running":  # its work is not merged: say so in the report
                    self._finish_task(task, ev.TaskFinished(status="stopped", summary=stopped[:500]))
        elif failed or any(s in ("failed", "skipped") for s in statuses):
            outcome, summary = "failed", failed or "a task failed beyond recovery"
        elif any(s == "stopped" for s in statuses):
            outcome, summary = "stopped", "a person stopped work"
        else:
            outcome, summary = "succeeded", f"{len(statuses)} tasks succeeded"
        self.writer.emit(
            "orchestrator", ev.SessionFinished.model_validate({"status": outcome, "summary": summary})
        )
        await self.writer.commit()
        report = build_report(EventReader(self.paths).read())
        atomic_write(self.paths.report_json, report.model_dump_json(indent=2).encode())
        atomic_write(self.paths.report_md, render_markdown(report).encode())

    def _finish_task(self, task: SubTask, result: ev.TaskFinished) -> None:
        self.writer.emit(f"{task.agent.value}-{task.id}", result, task.id)
        self.writer.flush()

    def _task_prompt(self, task: SubTask) -> str:
        plan = self.writer.state.plan
        lines = [
            f"Goal of the whole session: {plan.goal if plan else ''}",
            f"Your task ({task.id}): {task.title}",
            task.description,
        ]
        if task.acceptance:
            lines += ["Acceptance criteria:", *[f"- {a}" for a in task.acceptance]]
        if task.writes:
            lines.append(
                "Work in the current directory (a git checkout of the repository). Change only what the task needs."
            )
        else:
            lines.append(
                "This is a read-only task: do not modify any file. Report your findings as your final answer."
            )
        for dep in task.depends_on:
            result = self._read_result(dep)
            if result:
                lines += [f"Result of task {dep}:", result[:RESULT_CHARS]]
        return "\n".join(lines)

    def _save_result(self, task: SubTask, outcome: Outcome) -> None:
        folder = self.paths.task_dir(task.id)
        atomic_write(folder / "result.md", REDACTOR(outcome.text).encode())

    def _read_result(self, task_id: str) -> str:
        path = self.paths.task_dir(task_id) / "result.md"
        return path.read_text(errors="replace") if path.exists() else ""


def _most_important(group: BaseExceptionGroup[Exception]) -> Exception:
    """The error that decides the session's end: a stop, then a pause, then the first failure."""
    flat: list[Exception] = []
    for error in group.exceptions:
        flat.append(_most_important(error) if isinstance(error, BaseExceptionGroup) else error)
    for kind in (_StopSession, SessionPausedExit):
        found = next((e for e in flat if isinstance(e, kind)), None)
        if found is not None:
            return found
    return flat[0]


def plan_agents(plan: TaskBreakdown) -> Sequence[AgentName]:
    """The agents a plan uses, in a stable order."""
    return sorted({t.agent for t in plan.tasks}, key=lambda a: a.value)
