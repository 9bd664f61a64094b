"""``orchestrate demo``: a full session with no API keys.

The real CLIs run in their containers against the scripted model server (``orchestrator/scenarios/
demo.toml``) on the session's internal network, on a fresh copy of the example repository shipped
with the project. Images are built on first use, with progress.
"""

from __future__ import annotations

import shutil
import sys
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.commands.session import ON_PAUSE, drive, load_settings, print_report
from orchestrator.coordinator import SessionOptions
from orchestrator.errors import UsageError
from orchestrator.gitwork import git
from orchestrator.images import ensure_images
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.report import Report

DEMO_PROMPT = "Add a greeting module and notes, after a quick survey of the repository"
NEEDED = ["base", "claude", "codex", "gemini", "modelserver", "proxy"]


def example_repo(dest: Path) -> Path:
    """A fresh git copy of the example repository at ``dest``."""
    source = Path(str(files("orchestrator") / "demo" / "example-repo"))
    shutil.copytree(source, dest)
    git(dest, "init", "--quiet", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "--quiet", "-m", "example")
    return dest


def scenario_file(name: str = "demo.toml") -> Path:
    return Path(str(files("orchestrator") / "scenarios" / name))


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        as_json: Annotated[
            bool, typer.Option("--json", help="print the final report as JSON on stdout")
        ] = False,
        scenario: Annotated[
            Path | None, typer.Option(help="another scenario file for the model server")
        ] = None,
        on_pause: Annotated[
            str, typer.Option(help="exit|stop|continue|wait: what a pause does (exit: code 4, resumable)")
        ] = "continue",
    ) -> None:
        """Run a full session without API keys: real CLIs, scripted model server, an example repository."""
        if on_pause not in ON_PAUSE:
            raise UsageError(f"--on-pause {on_pause!r}: choose one of {', '.join(ON_PAUSE)}")
        settings = load_settings()

        def progress(step: object) -> None:
            sys.stderr.write(f"images: {step}\n")

        ensure_images(settings, NEEDED, progress=progress)
        session_id = new_session_id()
        repo = example_repo(settings.workspace / "demo-repos" / session_id)
        from orchestrator.commands.session import host_for

        host = host_for(settings)

        async def work() -> Report:
            async with host.model_server(session_id, scenario or scenario_file()) as demo_settings:
                local = type(host)(demo_settings, host.runtime, host.interrupt)
                recorded = str(settings.workspace / session_id / "scenario.toml")
                options = SessionOptions(repo=repo, on_pause=on_pause, model_server=recorded)  # type: ignore[arg-type]
                report: Report = await local.run(DEMO_PROMPT, options, session_id)
                return report

        paths = SessionPaths.of(settings.workspace, session_id)
        report = drive(host, paths, work, as_json)
        print_report(report, as_json)
        raise typer.Exit(report.exit_code)
