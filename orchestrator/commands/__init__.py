"""Command groups of the ``orchestrate`` CLI, one module per concern."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command module to ``app``. Each module exposes ``register(app)``."""
    from orchestrator.commands import (
        config,
        demo,
        doctor,
        images,
        modelserver,
        parse,
        sandbox,
        serve,
        session,
        version,
    )

    for module in (version, session, demo, doctor, config, images, serve, modelserver, parse, sandbox):
        module.register(app)
