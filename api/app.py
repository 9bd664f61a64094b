"""``create_app(settings, runner)``: the HTTP API and the dashboard of the orchestrator.

Settings, the runner and the stream policy are passed in and kept on ``app.state`` (no globals).
``create_app`` refuses a bind that needs a token it lacks (``ConfigError``): the server never starts
open to the network. ``app.state.shutting_down`` is an ``asyncio.Event`` every SSE stream watches;
``begin_shutdown(app)`` sets it from any thread or a signal handler, and the lifespan sets it on exit,
so open streams end with a final event instead of being cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from api.auth import TokenCheck, check_bind
from api.errors import install_error_handlers
from api.fanout import Fanouts
from api.listing import SessionIndex
from api.query import reject_unknown_query
from api.routes import pages, sessions, stream
from api.runner import SessionRunner
from api.sse import StreamPolicy
from orchestrator import __version__
from orchestrator.config import Settings
from orchestrator.log import REDACTOR, get_logger

log = get_logger(__name__)


def begin_shutdown(app: FastAPI) -> None:
    """Tell every open stream to end now (thread- and signal-safe)."""
    event: asyncio.Event = app.state.shutting_down
    loop: asyncio.AbstractEventLoop | None = app.state.loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(event.set)
    else:
        event.set()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.loop = asyncio.get_running_loop()
    # An app served again, or twice at once (tests reuse one), accepts changes while any serving runs:
    # only the end of the last one shuts it down.
    app.state.serving += 1
    app.state.shutting_down.clear()
    log.info("api.started", workspace=str(app.state.settings.workspace), auth=app.state.token_check.token is not None,
             runner=app.state.runner is not None)  # fmt: skip
    try:
        yield
    finally:
        app.state.serving -= 1
        if app.state.serving == 0:
            app.state.shutting_down.set()
            runner: SessionRunner | None = app.state.runner
            if runner is not None:
                await runner.aclose()
        log.info("api.stopped")


def create_app(
    settings: Settings, runner: SessionRunner | None = None, *, stream_policy: StreamPolicy | None = None
) -> FastAPI:
    """The API over ``settings.workspace``. Without a runner it only reads (changes answer 503)."""
    token = check_bind(settings)
    if token is not None:
        REDACTOR.register(token)
    app = FastAPI(
        title="Meta-Orchestrator",
        version=__version__,
        description="Sessions of AI coding agents in sandboxed containers: read, follow live, steer.",
        docs_url=None,  # the Swagger/ReDoc pages load scripts from a CDN; /openapi.json is enough
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.runner = runner
    app.state.index = SessionIndex(settings.workspace)
    app.state.stream_policy = stream_policy or StreamPolicy()
    app.state.fanouts = Fanouts(app.state.stream_policy)
    app.state.token_check = TokenCheck(token)
    app.state.shutting_down = asyncio.Event()
    app.state.serving = 0
    app.state.loop = None
    install_error_handlers(app)
    app.include_router(pages.router)
    app.include_router(sessions.router, dependencies=[Depends(reject_unknown_query)])
    app.include_router(stream.router, dependencies=[Depends(reject_unknown_query)])
    if token is None:
        _document_as_open(app)
    return app


def _document_as_open(app: FastAPI) -> None:
    """Without a token the API is open: its OpenAPI document must not claim a security scheme."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)  # fmt: skip
            for item in doc.get("paths", {}).values():
                for operation in item.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
            doc.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
