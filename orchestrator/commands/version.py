"""``orchestrate version``."""

from __future__ import annotations

import typer

from orchestrator import __version__


def register(app: typer.Typer) -> None:
    @app.command()
    def version() -> None:
        """Print the orchestrator's version."""
        typer.echo(__version__)
