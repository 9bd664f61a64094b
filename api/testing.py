"""Test doubles shipped with the API: a ``FakeSessionRunner`` and a real server on a free port.

``FakeSessionRunner`` keeps the ``SessionRunner`` contract with real ``EventWriter``s and no
containers: what it does is visible as events in the session's log, like the coordinator's work.
Tests script a session with ``emit``; the API reads it back from the files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from api.runner import HumanAction, StartSession
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError, SessionFinished, SessionNotFound, StateConflict
from orchestrator.models import (
    AgentEvent,
    EventData,
    HumanDecision,
    SessionCreated,
    SessionResumed,
    WorkerExited,
)
from orchestrator.models import SessionFinished as Finished
from orchestrator.models.events import SessionOutcome
from orchestrator.models.state import FINISHED_WORKER, SessionStatus
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.store import EventWriter


class FakeSessionRunner:
    """Runs no agents: records each request as the events the coordinator would record."""

    def __init__(
        self, settings: Settings, *, docker: bool = True, fail_start: OrchestratorError | None = None
    ):
        self.settings = settings
        self.docker = docker
        self.fail_start = fail_start
        self.writers: dict[str, EventWriter] = {}
        self.closed = False

    def _paths(self, session_id: str) -> SessionPaths:
        return SessionPaths.of(self.settings.workspace, session_id)

    def _live(self, session_id: str) -> EventWriter:
        writer = self.writers.get(session_id)
        if writer is None:
            raise StateConflict(f"session {session_id} does not run in this process; resume it first")
        return writer

    async def create(
        self, prompt: str = "do a thing", repo: str = "/repo", session_id: str | None = None
    ) -> str:
        """A new live session with its ``session_created`` event (a test helper, also used by start)."""
        session_id = session_id or new_session_id()
        writer = EventWriter.open(self._paths(session_id))
        self.writers[session_id] = writer
        writer.emit("orchestrator", SessionCreated(prompt=prompt, repo=repo))
        await writer.commit()
        return session_id

    async def emit(
        self, session_id: str, worker: str, data: EventData, task_id: str | None = None
    ) -> AgentEvent:
        """Record one event of a live session, durably (as a worker's adapter would)."""
        writer = self._live(session_id)
        event = writer.emit(worker, data, task_id)
        await writer.commit()
        return event

    async def finish(self, session_id: str, status: SessionOutcome = "succeeded") -> None:
        """Record ``session_finished`` and close the writer."""
        await self.emit(session_id, "orchestrator", Finished(status=status))
        self.writers.pop(session_id).close()

    async def start(self, request: StartSession) -> str:
        if self.fail_start is not None:
            raise self.fail_start
        return await self.create(request.prompt, request.repo)

    async def decide(self, session_id: str, action: HumanAction, note: str) -> SessionStatus:
        writer = self._live(session_id)
        await self.emit(session_id, "person", HumanDecision(action=action, note=note))
        if action == "stop":
            await self.finish(session_id, "stopped")
            return "stopped"
        return writer.state.status

    async def resume(self, session_id: str) -> None:
        if session_id in self.writers:
            raise StateConflict(f"session {session_id} already runs in this process")
        writer = EventWriter.open(self._paths(session_id), create=False)
        if writer.state.finished:
            writer.close()
            raise SessionFinished(f"session {session_id} has finished and cannot be resumed")
        self.writers[session_id] = writer
        await self.emit(session_id, "orchestrator", SessionResumed(by="person"))

    async def stop(self, session_id: str) -> None:
        writer = self._live(session_id)
        for name, worker in list(writer.state.workers.items()):
            if worker.status not in FINISHED_WORKER:
                writer.emit(name, WorkerExited(exit_code=None, reason="stopped"), worker.task_id)
        await self.finish(session_id, "stopped")

    async def stop_worker(self, session_id: str, worker: str) -> None:
        writer = self._live(session_id)
        found = writer.state.workers.get(worker)
        if found is None:
            raise SessionNotFound(f"no worker {worker!r} in session {session_id}")
        writer.emit(worker, HumanDecision(action="stop", note="stopped from the API"), found.task_id)
        writer.emit(worker, WorkerExited(exit_code=None, reason="stopped"), found.task_id)
        await writer.commit()

    def writer_for(self, session_id: str) -> EventWriter | None:
        return self.writers.get(session_id)

    async def runtime_ok(self) -> bool:
        return self.docker

    async def aclose(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        self.closed = True


@contextlib.asynccontextmanager
async def serve(app: FastAPI, graceful_s: int = 3) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn on a free loopback port in this loop; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=graceful_s)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # surfaces why it did not start
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, graceful_s + 5)
