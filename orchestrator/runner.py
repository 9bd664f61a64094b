"""``ServerRunner``: sessions started, steered and resumed by the HTTP API, in the server's process.

It implements ``api.runner.SessionRunner``. Each session runs as an asyncio task of the server;
the API reads every session from its files, so a session run by ``orchestrate run`` in another
process is served the same way, and steered through the store (the decision inbox, the lock).
A session may ask for a shipped scenario (``options.scenario``, e.g. ``"demo"``): it then runs
credential-free against the scripted model server, like ``orchestrate demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

from api.runner import HumanAction, StartSession
from orchestrator.config import Settings
from orchestrator.coordinator import Orchestrator, SessionOptions
from orchestrator.decisions import submit_decision
from orchestrator.errors import (
    ConfigError,
    EnvironmentProblem,
    OrchestratorError,
    SessionLocked,
    StateConflict,
)
from orchestrator.log import get_logger
from orchestrator.models import AgentName, HumanDecision, SessionFinished
from orchestrator.models.state import SessionStatus
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.runtime import SESSION_LABEL, Runtime
from orchestrator.sessions import SessionHost, check_credentials
from orchestrator.store import EventReader, EventWriter

log = get_logger(__name__)
T = TypeVar("T")
STOP_MARGIN_S = 10.0  # beyond the workers' grace period: the model server, proxies, network


def shipped_scenarios() -> Path:
    """The folder of the scenarios shipped with the project (``orchestrator/scenarios``)."""
    return Path(str(files("orchestrator") / "scenarios"))


def find_scenario(folders: Sequence[Path], name: object) -> Path:
    """The scenario ``name`` (a file's stem) in ``folders``, the first folder winning; anything else,
    a path included, is refused: the API never names a file."""
    known: dict[str, Path] = {}
    for folder in reversed(folders):
        known.update({p.stem: p for p in folder.glob("*.toml")})
    if not isinstance(name, str) or name not in known:
        raise ConfigError(
            f"options.scenario {name!r} is not a shipped scenario; choose one of: {', '.join(sorted(known))}"
        )
    return known[name]


def shipped_scenario(name: object) -> Path:
    """The path of a scenario shipped with the project; anything else is refused (no paths from the API)."""
    return find_scenario((shipped_scenarios(),), name)


@dataclass
class _Live:
    orchestrator: Orchestrator | None
    task: asyncio.Task[object]

    def finished(self) -> bool:
        """The session recorded ``session_finished`` (its task may still be tearing down)."""
        writer = self.orchestrator._writer if self.orchestrator is not None else None
        return writer is not None and writer.state.finished


@dataclass
class ServerRunner:
    """Runs sessions for the API (see the module docstring)."""

    settings: Settings
    runtime: Runtime
    # where ``options.scenario`` names are looked up (tests add a folder of their own)
    scenario_dirs: tuple[Path, ...] = field(default_factory=lambda: (shipped_scenarios(),))
    _live: dict[str, _Live] = field(default_factory=dict)
    _closing: bool = False

    async def start(self, request: StartSession) -> str:
        if self._closing:
            raise EnvironmentProblem("the server is shutting down; start the session again once it is back")
        session_id = new_session_id()
        options = request.options
        scenario = self.scenario(options["scenario"]) if "scenario" in options else None
        chosen = (
            tuple(request.agents) if request.agents else (AgentName.CLAUDE, AgentName.CODEX, AgentName.GEMINI)
        )
        run_options = SessionOptions(
            repo=Path(request.repo), agents=chosen, max_parallel=request.max_parallel,
            allow_dirty=bool(options.get("allow_dirty", False)), on_pause="wait",
            review=bool(options.get("review", True)),
            model_server=str(self.settings.workspace / session_id / "scenario.toml") if scenario else None,
        )  # fmt: skip
        if scenario is None:
            check_credentials(self.settings, chosen)
        ready: asyncio.Queue[Orchestrator] = asyncio.Queue()
        host = SessionHost(self.settings, self.runtime, on_orchestrator=ready.put_nowait)

        async def work() -> object:
            # SessionHost.run: the session's network and egress proxies, released when it ends
            if scenario is not None:
                async with host.model_server(session_id, scenario) as scripted:
                    local = SessionHost(scripted, self.runtime, host.interrupt, host.on_orchestrator)
                    return await local.run(request.prompt, run_options, session_id)
            return await host.run(request.prompt, run_options, session_id)

        await self._launch(session_id, work, ready)
        return session_id

    def scenario(self, name: object) -> Path:
        """The scenario file ``options.scenario`` names, from ``scenario_dirs``."""
        return find_scenario(self.scenario_dirs, name)

    async def _launch(
        self, session_id: str, work: Callable[[], Awaitable[object]], ready: asyncio.Queue[Orchestrator]
    ) -> None:
        """Run ``work`` as a task; return once the session's first event is durable (or raise its error)."""
        task: asyncio.Task[object] = asyncio.ensure_future(work())
        live = _Live(None, task)
        self._live[session_id] = live
        task.add_done_callback(lambda _: self._done(session_id, task))
        orchestrator = await self._first(ready.get(), task)
        live.orchestrator = orchestrator
        await self._first(orchestrator.created.wait(), task)

    async def _first(self, awaitable: Awaitable[T], task: asyncio.Task[object]) -> T:
        """``awaitable``'s result, unless the session's task ends first (then its error)."""
        waiter = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        error = task.exception()
        if error is not None:
            raise error
        raise StateConflict("the session ended before it started")

    def _done(self, session_id: str, task: asyncio.Task[object]) -> None:
        if self._live.get(session_id) and self._live[session_id].task is task:
            del self._live[session_id]
        if not task.cancelled() and task.exception() is not None:
            log.warning("session.ended_with_error", session=session_id, error=str(task.exception()))

    def _orchestrator(self, session_id: str) -> Orchestrator | None:
        live = self._live.get(session_id)
        return live.orchestrator if live else None

    async def decide(self, session_id: str, action: HumanAction, note: str) -> SessionStatus:
        paths = SessionPaths.of(self.settings.workspace, session_id)
        orchestrator = self._orchestrator(session_id)
        if orchestrator is not None:
            await orchestrator.decide(action, note)
            for _ in range(50):  # the coordinator acts on it at once: report the status after it
                status = orchestrator.writer.state.status if not orchestrator.writer.closed else None
                if status is not None and status != "paused":
                    return status
                await asyncio.sleep(0.05)
            return EventReader(paths).state().status
        await asyncio.to_thread(submit_decision, paths, action, note)
        return EventReader(paths).state().status

    async def resume(self, session_id: str) -> None:
        paths = SessionPaths.of(self.settings.workspace, session_id)
        if self._closing:
            raise EnvironmentProblem("the server is shutting down; resume the session once it is back")
        if session_id in self._live:
            raise SessionLocked(f"session {session_id} already runs in this server")
        state = EventReader(paths).state()
        ready: asyncio.Queue[Orchestrator] = asyncio.Queue()
        host = SessionHost(self.settings, self.runtime, on_orchestrator=ready.put_nowait)

        async def work() -> object:
            return await host.resume(session_id, Path(state.repo))

        await self._launch(session_id, work, ready)

    async def stop(self, session_id: str) -> None:
        orchestrator = self._orchestrator(session_id)
        if orchestrator is not None:
            await orchestrator.stop("stopped through the API")
            return
        paths = SessionPaths.of(self.settings.workspace, session_id)
        with EventWriter.open(paths, create=False) as writer:  # SessionLocked if another process runs it
            if writer.state.finished:
                raise StateConflict(f"session {session_id} has finished ({writer.state.status})")
            for info in await self.runtime.find({SESSION_LABEL: session_id}):
                with contextlib.suppress(OrchestratorError):
                    await self.runtime.remove(info.id)
            writer.emit(
                "orchestrator", HumanDecision(action="stop", note="stopped through the API", by="person")
            )
            writer.emit("orchestrator", SessionFinished(status="stopped", summary="stopped through the API"))

    async def stop_worker(self, session_id: str, worker: str) -> None:
        orchestrator = self._orchestrator(session_id)
        if orchestrator is None:
            raise StateConflict(f"session {session_id} does not run in this server: resume it first")
        await orchestrator.stop_worker(worker)

    def writer_for(self, session_id: str) -> EventWriter | None:
        orchestrator = self._orchestrator(session_id)
        if orchestrator is None or orchestrator._writer is None or orchestrator._writer.closed:
            return None
        return orchestrator._writer

    async def runtime_ok(self) -> bool:
        try:
            await self.runtime.ping()
        except OrchestratorError:
            return False
        return True

    async def aclose(self) -> None:
        """Server shutdown: refuse new sessions, interrupt every session here (``session_interrupted``,
        workers stopped within the grace period: resumable), close the runtime.

        Returns within ``grace_period_s + STOP_MARGIN_S``: a session still stopping then is left as it
        is (its containers keep running; a resume re-attaches them).
        """
        self._closing = True
        tasks = []
        for live in list(self._live.values()):
            tasks.append(live.task)
            if live.finished():  # only its teardown is left (model server, proxies, network): let it end
                continue
            if live.orchestrator is not None:
                live.orchestrator.interrupt.signal = "SIGTERM"
            live.task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_period_s + STOP_MARGIN_S)
            if pending:
                log.warning("runner.sessions_still_stopping", sessions=len(pending),
                            detail="their containers keep running; resume re-attaches them")  # fmt: skip
        with contextlib.suppress(Exception):
            await self.runtime.close()


def make_runner(settings: Settings) -> ServerRunner:
    """The runner ``orchestrate serve`` gives the API: sessions run on the configured runtime."""
    from orchestrator.runtime import make_runtime

    return ServerRunner(settings, make_runtime(settings))
