"""The seam between the HTTP API and whatever runs sessions: the ``SessionRunner`` role.

The API reads every session from its files (``EventReader``): one code path serves sessions run by
this process and sessions run by ``orchestrate run`` elsewhere. It calls a ``SessionRunner`` only to
*change* something: start, decide, resume, stop. The coordinator implements the role; tests use
``api.testing.FakeSessionRunner``.

Contract of every method (the API relies on it):

- Errors are ``OrchestratorError``s from the one tree; the API maps them to their HTTP status
  (``UnsafeMount`` 400, ``SessionNotFound`` 404, ``StateConflict``/``SessionLocked`` 409,
  ``EnvironmentProblem`` 503, ...). Any other exception is a 500 and a bug.
- A method returns once what it did is *durable* in ``events.jsonl`` (the first event of a new
  session, a ``human_decision``, ...), so that a ``GET`` right after the call sees it. Long work
  (planning, containers, stopping with a grace period) continues in asyncio tasks of this process.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.models import AgentName
from orchestrator.models.state import SessionStatus
from orchestrator.store import EventWriter

HumanAction = Literal["continue", "stop"]
MAX_PROMPT = 100_000
MAX_OPTIONS = 64


class StartSession(BaseModel):
    """The body of ``POST /api/sessions``: what a person asks for."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT, description="what the agents should do")
    repo: str = Field(
        min_length=1, max_length=4096, pattern=r"^/[^\x00]*$",
        description="absolute path of the git repository on the server",
    )  # fmt: skip
    agents: list[AgentName] | None = Field(
        default=None, min_length=1, max_length=3, description="agents the planner may use (default: all)",
        json_schema_extra={"uniqueItems": True},
    )  # fmt: skip
    max_parallel: int | None = Field(default=None, ge=1, le=64, description="tasks running at once")
    options: dict[str, Any] = Field(
        default_factory=dict, max_length=MAX_OPTIONS, description="run options, recorded in the session"
    )

    @field_validator("repo", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("repo contains a NUL byte")
        if isinstance(value, str) and not PurePosixPath(value).is_absolute():
            raise ValueError(f"repo {value[:200]!r} is relative; give the absolute path on the server")
        return value

    @field_validator("agents")
    @classmethod
    def _unique(cls, value: list[AgentName] | None) -> list[AgentName] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"agents {[a.value for a in value]} name an agent twice")
        return value


class SessionRunner(Protocol):
    """Starts and steers sessions in this server's process (implemented by the coordinator)."""

    async def start(self, request: StartSession) -> str:
        """Create a session, return its id once ``session_created`` is durable; run it as a task."""
        ...

    async def decide(self, session_id: str, action: HumanAction, note: str) -> SessionStatus:
        """Record a person's decision on a paused session; return the session's status after it."""
        ...

    async def resume(self, session_id: str) -> None:
        """Resume an interrupted session in this process (``SessionLocked`` if another runs it)."""
        ...

    async def stop(self, session_id: str) -> None:
        """Stop every worker and finish the session as ``stopped``."""
        ...

    async def stop_worker(self, session_id: str, worker: str) -> None:
        """Stop one worker; recovery must not restart a worker a person stopped."""
        ...

    def writer_for(self, session_id: str) -> EventWriter | None:
        """The live writer when the session runs in this process (wakes SSE readers), else None."""
        ...

    async def runtime_ok(self) -> bool:
        """True when the container engine answers (for ``/api/health``); must not raise."""
        ...

    async def aclose(self) -> None:
        """Called once at server shutdown: interrupt what runs, close every writer."""
        ...
