"""``orchestrate modelserver --scenario FILE --port N [--host 127.0.0.1] [--log FILE]``.

Runs the scripted model API (``orchestrator.modelserver``) in the foreground, for the
credential-free demo and for pointing a real agent CLI at a scenario by hand. A bad scenario file
is a ``ConfigError`` (exit 2) whose message names the file, the turn and the key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ConfigError, EnvironmentProblem
from orchestrator.log import get_logger
from orchestrator.modelserver import ModelServer, ScenarioError, load_scenario
from orchestrator.modelserver.server import serve_until_signal

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
log = get_logger(__name__)


def resolve_scenario(value: str) -> Path:
    """A scenario path, or the name of a shipped scenario (``write-hello`` = scenarios/write-hello.toml)."""
    given = Path(value)
    if given.exists() or given.suffix == ".toml" or "/" in value:
        return given
    return SCENARIOS / f"{value}.toml"


def register(app: typer.Typer) -> None:
    @app.command("modelserver")
    def modelserver(
        scenario: Annotated[
            str,
            typer.Option("--scenario", help="scenario TOML file, or the name of a shipped one (e.g. demo)"),
        ],
        port: Annotated[
            int, typer.Option("--port", min=0, max=65535, help="port to listen on (0: any free)")
        ],
        host: Annotated[str, typer.Option("--host", help="address to bind")] = "127.0.0.1",
        request_log: Annotated[
            Path | None,
            typer.Option("--log", help="append every request with its full body to this JSONL file"),
        ] = None,
    ) -> None:
        """Serve a scripted Anthropic/OpenAI/Gemini model API that answers from a scenario file."""
        path = resolve_scenario(scenario)
        try:
            loaded = load_scenario(path)
        except ScenarioError as err:
            shipped = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
            raise ConfigError(f"{err} (shipped scenarios: {shipped})") from err
        try:
            server = ModelServer(loaded, host, port, request_log, echo=sys.stderr)
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port or stop what uses it"
            ) from err
        log.info("modelserver.start", url=server.url, scenario=str(path), scripts=len(loaded.scripts))
        typer.echo(f"modelserver listening on {server.url} (scenario {path})", err=True)
        serve_until_signal(server)
