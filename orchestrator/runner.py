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
from collections.abc import Awaitable, Callable
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


def shipped_scenario(name: object) -> Path:
    """The path of a scenario shipped with the project; anything else is refused (no paths from the API)."""
    folder = Path(str(files("orchestrator") / "scenarios"))
    known = sorted(p.stem for p in folder.glob("*.toml"))
    if not isinstance(name, str) or name not in known:
        raise ConfigError(
            f"options.scenario {name!r} is not a shipped scenario; choose one of: {', '.join(known)}"
        )
    return folder / f"{name}.toml"


@dataclass
class _Live:
    orchestrator: Orchestrator | None
    task: asyncio.Task[object]


@dataclass
class ServerRunner:
    """Runs sessions for the API (see the module docstring)."""

    settings: Settings
    runtime: Runtime
    _live: dict[str, _Live] = field(default_factory=dict)

    async def start(self, request: StartSession) -> str:
        session_id = new_session_id()
        options = request.options
        scenario = shipped_scenario(options["scenario"]) if "scenario" in options else None
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
        host = SessionHost(self.settings, self.runtime)
        ready: asyncio.Queue[Orchestrator] = asyncio.Queue()

        async def work() -> object:
            if scenario is not None:
                async with host.model_server(session_id, scenario) as scripted:
                    local = SessionHost(scripted, self.runtime, host.interrupt)
                    return await self._run(local, session_id, request.prompt, run_options, ready)
            return await self._run(host, session_id, request.prompt, run_options, ready)

        await self._launch(session_id, work, ready)
        return session_id

    async def _run(
        self,
        host: SessionHost,
        session_id: str,
        prompt: str,
        options: SessionOptions,
        ready: asyncio.Queue[Orchestrator],
    ) -> object:
        network = await host.prepare_network(session_id)
        orchestrator = host.orchestrator(session_id, options.repo, network)
        ready.put_nowait(orchestrator)
        return await orchestrator.run(prompt, options)

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
        """Server shutdown: interrupt every session here (resumable), close the runtime."""
        tasks = []
        for live in list(self._live.values()):
            if live.orchestrator is not None:
                live.orchestrator.interrupt.signal = "SIGTERM"
            live.task.cancel()
            tasks.append(live.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.runtime.close()


def make_runner(settings: Settings) -> ServerRunner:
    """The runner ``orchestrate serve`` gives the API: sessions run on the configured runtime."""
    from orchestrator.runtime import make_runtime

    return ServerRunner(settings, make_runtime(settings))
