"""Command groups of the ``orchestrate`` CLI, one module per concern."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command module to ``app``. Each module exposes ``register(app)``."""
    from orchestrator.commands import images, modelserver, parse, serve, version

    for module in (version, images, serve, modelserver, parse):
        module.register(app)
