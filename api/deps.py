"""FastAPI dependencies: what a route needs, taken from ``app.state`` (tests override them).

``create_app`` puts the settings, the runner and the session index on ``app.state``; nothing here is
a module-level singleton.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Path, Request

from api.listing import SessionIndex
from api.runner import SessionRunner
from api.sse import StreamPolicy
from orchestrator.config import Settings
from orchestrator.errors import EnvironmentProblem
from orchestrator.paths import SESSION_ID_RE, SessionPaths

# The pattern is documented, and checked by ``SessionPaths`` (a 400 ``invalid_id``, not a 422).
SESSION_ID_DOC = "the session id: 8-64 characters of [0-9A-Za-z_-] (anything else is a 400 invalid_id)"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_index(request: Request) -> SessionIndex:
    index: SessionIndex = request.app.state.index
    return index


def get_policy(request: Request) -> StreamPolicy:
    policy: StreamPolicy = request.app.state.stream_policy
    return policy


def get_optional_runner(request: Request) -> SessionRunner | None:
    runner: SessionRunner | None = request.app.state.runner
    return runner


def get_runner(
    request: Request, runner: Annotated[SessionRunner | None, Depends(get_optional_runner)]
) -> SessionRunner:
    """The runner, or 503 when this server was started without one (read-only) or is shutting down
    (it starts and changes nothing more: its sessions are being interrupted, resumable)."""
    if runner is None:
        raise EnvironmentProblem(
            "this server only reads sessions: it was started without a session runner; "
            "start it with `orchestrate serve` to start and steer sessions"
        )
    shutting_down: asyncio.Event = request.app.state.shutting_down
    if shutting_down.is_set():
        raise EnvironmentProblem(
            "the server is shutting down and changes nothing more; retry once it is back "
            "(its sessions are interrupted and can be resumed then)"
        )
    return runner


def session_paths(
    settings: Annotated[Settings, Depends(get_settings)],
    session_id: Annotated[
        str, Path(description=SESSION_ID_DOC, json_schema_extra={"pattern": f"^{SESSION_ID_RE.pattern}$"})
    ],
) -> SessionPaths:
    """The validated paths of the session in the URL (``InvalidIdentifier`` -> 400)."""
    return SessionPaths.of(settings.workspace, session_id)


SettingsDep = Annotated[Settings, Depends(get_settings)]
IndexDep = Annotated[SessionIndex, Depends(get_index)]
RunnerDep = Annotated[SessionRunner, Depends(get_runner)]
OptionalRunnerDep = Annotated[SessionRunner | None, Depends(get_optional_runner)]
PolicyDep = Annotated[StreamPolicy, Depends(get_policy)]
PathsDep = Annotated[SessionPaths, Depends(session_paths)]
