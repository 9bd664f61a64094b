"""``orchestrate run | resume | decide | sessions | show | logs``: sessions from the command line.

Exit codes are FLOW.md's: 0 succeeded, 1 failed, 2 usage error, 3 stopped, 4 paused (with
``--on-pause exit``), 5 environment error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator import gc_tuning
from orchestrator.config import Settings
from orchestrator.console import describe, follow_session
from orchestrator.coordinator import ALL_AGENTS, SessionOptions
from orchestrator.decisions import submit_decision
from orchestrator.errors import SessionNotFound, UsageError
from orchestrator.log import configure_logging
from orchestrator.models import AgentName, lines_of
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.report import Report, build_report, render_markdown
from orchestrator.sessions import check_credentials
from orchestrator.store import EventReader

ON_PAUSE = ("exit", "stop", "continue", "wait")


def load_settings() -> Settings:
    """Settings from the environment, logging configured once."""
    settings = Settings()
    configure_logging(settings.log_level)
    return settings


def parse_agents(value: str | None) -> tuple[AgentName, ...]:
    """``claude,codex`` -> the agents; garbage is a usage error naming the bad name."""
    if not value:
        return ALL_AGENTS
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in {a.value for a in AgentName}]
    if bad or not names:
        raise UsageError(
            f"--agents: unknown agent(s) {', '.join(bad) or value!r}; choose from claude, codex, gemini"
        )
    return tuple(AgentName(n) for n in dict.fromkeys(names))


def print_report(report: Report, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(render_markdown(report))
        sys.stdout.write(f"\nsession: {report.session_id}\n")


async def with_live_view(paths: SessionPaths, work: Callable[[], Awaitable[Report]], quiet: bool) -> Report:
    """Run ``work`` while printing the session's progress on stderr."""

    async def view() -> None:
        for _ in range(600):  # the session's folder appears once set-up is done
            if paths.events.exists():
                break
            await asyncio.sleep(0.1)
        await follow_session(paths)

    watcher = None if quiet else asyncio.ensure_future(view())
    try:
        return await work()
    finally:
        if watcher is not None:
            await asyncio.sleep(0.3)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, SessionNotFound):
                await watcher


EXIT_ON_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def drive(host: Any, paths: SessionPaths, work: Callable[[], Awaitable[Report]], quiet: bool) -> Report:
    """Run a session's coroutine under signal handling (FLOW.md exit codes 130/143).

    First SIGINT/SIGTERM: say so, record ``session_interrupted``, stop every worker within the grace
    period, flush the log, exit 130/143 — resumable. A second SIGINT: exit at once, leaving the
    containers running for ``orchestrate resume`` to re-attach.
    """

    async def main() -> Report:
        gc_tuning.tune()
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if host.interrupt.signal is None:
                host.interrupt.signal = sig.name
                sys.stderr.write(
                    f"\n{sig.name}: stopping the workers of session {paths.session_id} "
                    f"(grace {host.settings.grace_period_s:g} s); resume with: orchestrate resume {paths.session_id}\n"
                )
                task.cancel()
                return
            sys.stderr.write(
                f"\nsecond {sig.name}: exiting now; the workers' containers keep running "
                f"(docker ps --filter label=orchestrator.session={paths.session_id}); "
                f"`orchestrate resume {paths.session_id}` re-attaches them\n"
            )
            os._exit(EXIT_ON_SIGNAL.get(sig.name, 130))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await with_live_view(paths, work, quiet)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if host.interrupt.signal is None:
            raise
        raise typer.Exit(EXIT_ON_SIGNAL.get(host.interrupt.signal, 130)) from None


def ensure_agent_images(
    settings: Settings, agents: tuple[AgentName, ...], extra: tuple[str, ...] = ()
) -> None:
    """Build what a session needs and is missing (first use), with progress on stderr."""
    from orchestrator.images import ensure_images

    def progress(step: object) -> None:
        sys.stderr.write(f"images: {step}\n")

    needed = ["base", *(a.value for a in agents), *extra]
    if settings.network != "none":
        needed.append("proxy")
    ensure_images(settings, list(dict.fromkeys(needed)), progress=progress)


def host_for(settings: Settings) -> Any:
    """The session host on the configured runtime (Docker by default)."""
    from orchestrator.runtime import make_runtime
    from orchestrator.sessions import SessionHost

    return SessionHost(settings, make_runtime(settings))


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        prompt: Annotated[str, typer.Argument(help="what the agents should do")],
        repo: Annotated[Path, typer.Option(help="the repository to work on")] = Path(),
        agents: Annotated[
            str | None, typer.Option(help="comma-separated agents to use (default: all)")
        ] = None,
        max_parallel: Annotated[int | None, typer.Option(min=1, max=64, help="tasks at once")] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="print the final report as JSON on stdout")
        ] = False,
        on_pause: Annotated[
            str | None, typer.Option(help="exit|stop|continue|wait (default: exit without a TTY)")
        ] = None,
        allow_dirty: Annotated[
            bool, typer.Option(help="run although the repository has uncommitted changes")
        ] = False,
        review: Annotated[bool, typer.Option(help="have the agents review each other's work")] = True,
    ) -> None:
        """Run a session: plan, run the tasks in containers, review, merge, report."""
        settings = load_settings()
        chosen = on_pause or ("wait" if sys.stdin.isatty() else "exit")
        if chosen not in ON_PAUSE:
            raise UsageError(f"--on-pause {chosen!r}: choose one of {', '.join(ON_PAUSE)}")
        options = SessionOptions(repo=repo, agents=parse_agents(agents), max_parallel=max_parallel,
                                 allow_dirty=allow_dirty, on_pause=chosen, review=review)  # type: ignore[arg-type]  # fmt: skip
        session_id = new_session_id()
        paths = SessionPaths.of(settings.workspace, session_id)
        host = host_for(settings)
        if settings.runtime == "docker":
            check_credentials(settings, options.agents)  # exit 5 before anything is built or started
            ensure_agent_images(settings, options.agents)
        report = drive(host, paths, lambda: host.run(prompt, options, session_id), as_json)
        print_report(report, as_json)
        raise typer.Exit(report.exit_code)

    @app.command()
    def resume(
        session_id: Annotated[str, typer.Argument(help="the session to continue")],
        as_json: Annotated[bool, typer.Option("--json", help="print the final report as JSON")] = False,
    ) -> None:
        """Continue an interrupted or decided session from its log."""
        settings = load_settings()
        paths = SessionPaths.of(settings.workspace, session_id)
        state = EventReader(paths).state()
        host = host_for(settings)
        report = drive(host, paths, lambda: host.resume(session_id, Path(state.repo)), as_json)
        print_report(report, as_json)
        raise typer.Exit(report.exit_code)

    @app.command()
    def decide(
        session_id: Annotated[str, typer.Argument(help="the paused session")],
        action: Annotated[str, typer.Argument(help="continue or stop")],
        note: Annotated[str, typer.Option(help="why")] = "",
    ) -> None:
        """Decide on a paused session (then `orchestrate resume` it if no process runs it)."""
        settings = load_settings()
        how = submit_decision(SessionPaths.of(settings.workspace, session_id), action, note)
        typer.echo(f"decision {action} {how} for session {session_id}")

    @app.command()
    def sessions(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """List the sessions in the workspace, newest first."""
        settings = load_settings()
        rows = []
        root = settings.workspace
        for folder in sorted(root.iterdir(), reverse=True) if root.is_dir() else []:
            with contextlib.suppress(Exception):
                state = EventReader(SessionPaths.of(root, folder.name)).state()
                rows.append({"id": folder.name, "status": state.status, "prompt": state.prompt[:60],
                             "cost_usd": round(state.totals.cost_usd, 4), "workers": len(state.workers)})  # fmt: skip
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            typer.echo(f"{row['id']}  {row['status']:<11} ${row['cost_usd']:<8} {row['prompt']}")

    @app.command()
    def show(session_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Show a session's report (built from its log, finished or not)."""
        settings = load_settings()
        report = build_report(EventReader(SessionPaths.of(settings.workspace, session_id)).read())
        print_report(report, as_json)

    @app.command()
    def logs(
        session_id: str,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
        worker: Annotated[str | None, typer.Option(help="only this worker's events")] = None,
        raw: Annotated[bool, typer.Option(help="every event as a JSON line")] = False,
    ) -> None:
        """Print a session's events."""
        settings = load_settings()
        paths = SessionPaths.of(settings.workspace, session_id)
        reader = EventReader(paths)

        def emit(event: Any) -> None:
            if worker and event.worker != worker:
                return
            if raw:
                typer.echo(event.model_dump_json())
                return
            line = describe(event)
            if line is None and (texts := lines_of(event.data)):
                head = f"{event.worker} [{event.data.stream}] "
                line = "\n       ".join(head + text for text in texts)
            if line:
                typer.echo(f"{event.seq:>6} {line}")

        if not follow:
            for event in reader.read():
                emit(event)
            return

        async def tail() -> None:
            async for event in reader.follow():
                emit(event)
                if event.type == "session_finished":
                    return

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(tail())
