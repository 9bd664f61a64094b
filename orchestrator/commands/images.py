"""``orchestrate images build [--only NAME] [--force]``, ``images list [--json]``, ``images ref NAME``, ``images prune``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestrator.config import Settings
from orchestrator.images import (
    IMAGE_NAMES,
    BuildStep,
    ImageInfo,
    ensure_images,
    image_ref,
    list_images,
    prune_images,
)
from orchestrator.log import configure_logging

images_app = typer.Typer(
    name="images",
    help="Build and list the agent images (made on this machine, no registry needed).",
    no_args_is_help=True,
)


def format_step(step: BuildStep) -> str:
    """One progress line: image, step, duration, detail."""
    return f"{step.image:<12} {step.step:<40} {step.seconds:7.1f} s  {step.detail}".rstrip()


def format_size(size: int | None) -> str:
    """Bytes as MB with one decimal ('-' when unknown)."""
    return "-" if size is None else f"{size / 1_000_000:.1f} MB"


def format_row(info: ImageInfo) -> str:
    """One ``images list`` line: tag, size, created, CLI version, state."""
    state = ("current" if info.current else "old") if info.built else "not built"
    created = (info.created or "-")[:19].replace("T", " ")
    return f"{info.ref:<48} {format_size(info.size_bytes):>10}  {created:<19}  {info.cli_version or '-':<10}  {state}"


@images_app.command("build")
def build(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help=f"build only this image (repeatable): {', '.join(IMAGE_NAMES)}"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when the tag exists")] = False,
) -> None:
    """Build the images that are missing (base first), printing each step with its duration."""
    settings = Settings()
    configure_logging(settings.log_level)
    names = tuple(only) if only else IMAGE_NAMES
    built: list[BuildStep] = []

    def show(step: BuildStep) -> None:
        built.extend([step] if step.built else [])
        typer.echo(format_step(step))

    refs = ensure_images(settings, names, progress=show, force=force)
    if not built:
        typer.echo("all images present: built nothing")
    for name, ref in refs.items():
        typer.echo(f"{name}={ref}")


@images_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array")] = False,
) -> None:
    """List the images under the prefix: tag, size, created, CLI version, and whether current."""
    infos = list_images(Settings())
    if as_json:
        typer.echo(json.dumps([info.model_dump() for info in infos], indent=2))
        return
    typer.echo(f"{'TAG':<48} {'SIZE':>10}  {'CREATED':<19}  {'CLI':<10}  STATE")
    for info in infos:
        typer.echo(format_row(info))


@images_app.command("prune")
def prune() -> None:
    """Remove image tags that the current inputs no longer hash to (tags in use are kept)."""
    removed, kept = prune_images(Settings())
    for ref in removed:
        typer.echo(f"removed {ref}")
    for ref in kept:
        typer.echo(f"kept {ref} (in use by a container)")
    if not removed and not kept:
        typer.echo("nothing to prune")


@images_app.command("ref")
def ref(name: Annotated[str, typer.Argument(help=f"one of {', '.join(IMAGE_NAMES)}")]) -> None:
    """Print the tag image NAME has for the current inputs (built or not), e.g. for compose.yaml."""
    typer.echo(image_ref(Settings(), name))


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
