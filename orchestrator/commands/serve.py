"""``orchestrate serve``: the HTTP API and the dashboard, with sessions run in this process.

The session runner is ``orchestrator.runner.make_runner(settings)``: sessions started through the
API run in this process.

On SIGINT/SIGTERM, a graceful shutdown that exits 0 once it is complete:

1. every open event stream ends with a final ``event: error`` (``shutting_down``, with the seq to
   resume after) and requests that would change something answer 503; uvicorn stops listening and
   waits up to ``GRACEFUL_S`` for connections to close;
2. the runner's ``aclose`` interrupts the sessions running here: each records
   ``session_interrupted`` and its workers are stopped within ``grace_period_s``; they are resumable
   (``POST /api/sessions/{id}/resume`` on the next server, or ``orchestrate resume``);
3. the process exits 0. uvicorn would raise the caught signal again at this point (exit -15), which
   tells a supervisor the process was killed; here the signal was handled, so the exit is clean.
   A second SIGINT exits at once (uvicorn's force exit).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import begin_shutdown, create_app
from api.runner import SessionRunner
from orchestrator import gc_tuning
from orchestrator.config import Settings
from orchestrator.errors import EnvironmentProblem
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


HANDLED = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn that ends the app's event streams as soon as it is told to exit, and exits 0 once its
    graceful shutdown is complete (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self.signals: list[str] = []  # the signals that asked this server to exit, in order

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(signal.Signals(sig).name)
        begin_shutdown(self._app)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers for SIGINT/SIGTERM, restored afterwards, without raising the caught
        signal again after the shutdown it asked for is complete."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
        server = _Server(config, api)
        gc_tuning.tune()
        server.run()
        if not server.started:  # the app's startup failed: uvicorn logged why (a taken port exits in uvicorn)
            raise EnvironmentProblem(
                f"the server on {settings.api_host}:{settings.api_port} did not start; its log above says why"
            )
        log.info("serve.stopped", signals=server.signals or None)
