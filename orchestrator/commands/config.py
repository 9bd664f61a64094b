"""``orchestrate config``: every setting, its variable, default and description (the README's table)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel

from orchestrator.config import Settings


def rows(model: BaseModel | None = None, prefix: str = "ORCH_") -> list[tuple[str, str, str]]:
    """(variable, default, description) for every field, nested models flattened with ``__``."""
    instance = model if model is not None else Settings.model_construct()  # defaults only, no environment
    found: list[tuple[str, str, str]] = []
    for name, info in type(instance).model_fields.items():
        variable = f"{prefix}{name.upper()}"
        value: Any = getattr(instance, name)
        if isinstance(value, BaseModel):
            found.extend(rows(value, f"{variable}__"))
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        shown = "(secret)" if "SecretStr" in repr(value) else str(shown) if shown not in (None, "") else "-"
        found.append((variable, shown, info.description or ""))
    return found


def register(app: typer.Typer) -> None:
    @app.command()
    def config(
        markdown: Annotated[bool, typer.Option("--markdown", help="as a Markdown table")] = False,
    ) -> None:
        """Every setting with its environment variable, default and meaning."""
        table = rows()
        if markdown:
            typer.echo("| variable | default | meaning |\n| --- | --- | --- |")
            for variable, default, text in table:
                typer.echo(f"| `{variable}` | `{default}` | {text} |")
            return
        for variable, default, text in table:
            typer.echo(f"{variable:<40} {default:<28} {text}")
