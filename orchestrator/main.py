"""The ``orchestrate`` command line (typer).

``orchestrate "prompt"`` is short for ``orchestrate run "prompt"``, as the seed shows.
Exit codes are those of ``../spec/FLOW.md``: every ``OrchestratorError`` exits with its own code.
"""

from __future__ import annotations

import sys

import typer

from orchestrator.errors import OrchestratorError

app = typer.Typer(
    name="orchestrate",
    help="Run AI coding-agent CLIs (Claude Code, Codex CLI, Gemini CLI) in hardened Docker containers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Meta-Orchestrator: one prompt, several agent CLIs, each in its own sandboxed container."""


def _register() -> None:
    """Attach the command groups; each lives in ``orchestrator/commands/``."""
    from orchestrator.commands import register

    register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to exit codes and accepts a bare prompt."""
    args = list(sys.argv[1:] if argv is None else argv)
    _register()
    group = typer.main.get_command(app)
    names = set(getattr(group, "commands", {}))
    if args and not args[0].startswith("-") and args[0] not in names:
        args.insert(0, "run")
    try:
        app(args=args, prog_name="orchestrate", standalone_mode=True)
    except OrchestratorError as err:
        typer.echo(f"error: {err.message}", err=True)
        raise SystemExit(err.exit_code) from err


if __name__ == "__main__":
    main()
