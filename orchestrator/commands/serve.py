"""``orchestrate serve``: the HTTP API and the dashboard, with sessions run in this process.

The session runner is ``orchestrator.runner.make_runner(settings)``: sessions started through the
API run in this process.
On SIGINT/SIGTERM every open event stream ends with a final ``event: error`` (``shutting_down``)
before uvicorn waits for connections to close.
"""

from __future__ import annotations

import importlib
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import begin_shutdown, create_app
from api.runner import SessionRunner
from orchestrator.config import Settings
from orchestrator.log import REDACTOR, configure_logging, get_logger

log = get_logger(__name__)
GRACEFUL_S = 5
RUNNER_MODULE = "orchestrator.runner"


def load_runner(settings: Settings) -> SessionRunner | None:
    """The coordinator's runner, or None when no coordinator module offers ``make_runner`` yet."""
    try:
        module = importlib.import_module(RUNNER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != RUNNER_MODULE:
            raise
        return None
    factory = getattr(module, "make_runner", None)
    if factory is None:
        return None
    runner: SessionRunner = factory(settings)
    return runner


def settings_for(host: str | None, port: int | None, token: str | None) -> Settings:
    """The settings of the environment with the flags given on the command line over them."""
    update: dict[str, object] = {}
    if host is not None:
        update["api_host"] = host
    if port is not None:
        update["api_port"] = port
    if token is not None:
        update["api_token"] = SecretStr(token)
    return Settings().model_copy(update=update)


def build(settings: Settings) -> FastAPI:
    """The app with the coordinator's runner; ``ConfigError`` for an unsafe bind."""
    REDACTOR.register(*settings.secret_values())
    runner = load_runner(settings)
    api = create_app(settings, runner)
    if runner is None:
        log.warning("serve.read_only", reason=f"{RUNNER_MODULE}.make_runner is not available")
    return api


class _Server(uvicorn.Server):
    """uvicorn that ends the app's event streams as soon as it is told to exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin_shutdown(self._app)
        super().handle_exit(sig, frame)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Annotated[
            str | None, typer.Option(help="address to bind (default: ORCH_API_HOST, 127.0.0.1)")
        ] = None,
        port: Annotated[
            int | None, typer.Option(min=1, max=65535, help="port (default: ORCH_API_PORT)")
        ] = None,
        token: Annotated[
            str | None,
            typer.Option(help="bearer token; prefer ORCH_API_TOKEN (a command line is visible to others)"),
        ] = None,
    ) -> None:
        """Serve the API and the dashboard. Off loopback, a token is required."""
        settings = settings_for(host, port, token)
        configure_logging(settings.log_level)
        api = build(settings)
        config = uvicorn.Config(api, host=settings.api_host, port=settings.api_port, log_level=settings.log_level,
                                timeout_graceful_shutdown=GRACEFUL_S, proxy_headers=False)  # fmt: skip
        log.info("serve.listening", url=f"http://{settings.api_host}:{settings.api_port}/")
        _Server(config, api).run()
