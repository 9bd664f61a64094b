"""``orchestrate doctor`` and ``orchestrate gc``: is this machine ready, and what was left behind.

``doctor`` checks the Docker engine, the images, each agent's credentials and lists orphaned
containers (a managed container whose session no process runs: left by a ``kill -9`` or a power
cut), each problem with its fix; it exits 5 when something a session needs is missing.
``gc`` removes the orphans (the sessions stay resumable: ``resume`` relaunches their workers).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.session import load_settings
from orchestrator.config import Settings
from orchestrator.egress import IptablesFirewall
from orchestrator.errors import OrchestratorError
from orchestrator.paths import SESSION_ID_RE, SessionPaths
from orchestrator.runtime import MANAGED_LABEL, SESSION_LABEL, WORKER_LABEL, ContainerInfo, Runtime


def session_is_live(settings: Settings, session_id: str) -> bool:
    """True when a process holds the session's lock (it runs the session right now)."""
    if not SESSION_ID_RE.fullmatch(session_id):
        return False
    lock = SessionPaths.of(settings.workspace, session_id).lock
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _in_workspace(settings: Settings, session_id: str) -> bool:
    return bool(SESSION_ID_RE.fullmatch(session_id)) and (settings.workspace / session_id).is_dir()


async def orphans(settings: Settings, runtime: Runtime, everywhere: bool = False) -> list[ContainerInfo]:
    """Managed containers of this workspace's sessions that no live process runs.

    ``everywhere``: also containers of sessions this workspace does not know (another workspace,
    a deleted session folder) — those may belong to someone else's live session.
    """
    found = await runtime.find({MANAGED_LABEL: "true"})
    left = []
    for info in found:
        session = info.labels.get(SESSION_LABEL, "")
        if _in_workspace(settings, session):
            if not session_is_live(settings, session):
                left.append(info)
        elif everywhere:
            left.append(info)
    return left


def _checks(settings: Settings) -> list[dict[str, Any]]:
    from orchestrator.images import list_images
    from orchestrator.runtime import make_runtime

    rows: list[dict[str, Any]] = []
    runtime = make_runtime(settings)

    async def engine() -> list[ContainerInfo]:
        try:
            await runtime.ping()
            return await orphans(settings, runtime)
        finally:
            await runtime.close()

    try:
        left = asyncio.run(engine())
        rows.append({"check": "container engine", "ok": True, "detail": settings.runtime})
    except OrchestratorError as err:
        rows.append({"check": "container engine", "ok": False, "detail": err.message,
                     "fix": "start it: scripts/docker-engine (installs Debian's docker.io when missing)"})  # fmt: skip
        return rows
    try:
        built = {i.name: i for i in list_images(settings) if i.current}
    except OrchestratorError as err:
        built = {}
        rows.append(
            {"check": "images", "ok": False, "detail": err.message, "fix": "orchestrate images build"}
        )
    for name in ("base", "claude", "codex", "gemini", "modelserver", "proxy"):
        info = built.get(name)
        present = bool(info and info.built)
        rows.append({"check": f"image {name}", "ok": present, "detail": info.ref if info else "",
                     **({} if present else {"fix": "orchestrate images build"})})  # fmt: skip
    for agent in ("claude", "codex", "gemini"):
        own = settings.agent(agent)
        how = "api key" if own.api_key else ("login folder " + str(own.login_dir)) if own.login_dir else ""
        ok = bool(own.api_key) or bool(own.login_dir and own.login_dir.is_dir())
        upper = agent.upper()
        rows.append({"check": f"credentials {agent}", "ok": ok, "detail": how or "none",
                     **({} if ok else {"fix": f"set ORCH_{upper}__API_KEY or ORCH_{upper}__LOGIN_DIR (~/.{agent}); "
                                              "`orchestrate demo` needs none"})})  # fmt: skip
    rows.append({
        "check": "orphaned containers", "ok": not left,
        "detail": ", ".join(f"{c.name} ({c.labels.get(SESSION_LABEL, '?')}/{c.labels.get(WORKER_LABEL, '?')})" for c in left)
        or "none",
        **({"fix": "orchestrate resume <session> re-attaches them, or orchestrate gc removes them"} if left else {}),
    })  # fmt: skip
    return rows


def stale_firewall_bridges() -> list[str]:
    """Bridges named by a session's host firewall rule that no longer exist (left by a crash)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return []
    listed = subprocess.run(
        ["iptables", "-w", "5", "-S", "INPUT"], capture_output=True, text=True, check=False
    )
    stale = []
    for line in listed.stdout.splitlines():
        parts = line.split()
        if "meta-orchestrator" in line and "-i" in parts:
            bridge = parts[parts.index("-i") + 1]
            if not Path(f"/sys/class/net/{bridge}").exists() and bridge not in stale:
                stale.append(bridge)
    return stale


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Check the engine, images, credentials; list orphaned containers. Exit 5 when not ready."""
        settings = load_settings()
        rows = _checks(settings)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            for row in rows:
                mark = "ok  " if row["ok"] else "FAIL"
                typer.echo(
                    f"{mark} {row['check']}: {row['detail']}"
                    + (f"\n     fix: {row['fix']}" if "fix" in row else "")
                )
        needed = [r for r in rows if not r["ok"] and not r["check"].startswith(("credentials", "orphaned"))]
        raise typer.Exit(5 if needed else 0)

    @app.command()
    def gc(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="only list them")] = False,
        everywhere: Annotated[
            bool, typer.Option("--all", help="also containers of sessions this workspace does not know")
        ] = False,
    ) -> None:
        """Remove orphaned containers (of sessions no process runs); the sessions stay resumable."""
        settings = load_settings()
        from orchestrator.runtime import make_runtime

        runtime = make_runtime(settings)

        async def collect() -> list[ContainerInfo]:
            try:
                left = await orphans(settings, runtime, everywhere)
                if not dry_run:
                    for info in left:
                        await runtime.remove(info.id)
                return left
            finally:
                await runtime.close()

        verb = "would remove" if dry_run else "removed"
        for info in asyncio.run(collect()):
            typer.echo(f"{verb} {info.name} (session {info.labels.get(SESSION_LABEL, '?')})")
        for bridge in stale_firewall_bridges():
            if not dry_run:
                asyncio.run(IptablesFirewall().unblock(bridge))
            typer.echo(f"{verb} the host firewall rule of the gone bridge {bridge}")
