"""``orchestrate sandbox check [--json] [--agent NAME] [--image REF]``: prove the sandbox from inside.

For each agent it launches, through ``WorkerManager`` (the production path: the agent's own command
for env, config files and state folders, ``sandbox.layout.worker_spec`` for the spec, as a session's
``Launcher`` does), a container whose command is replaced by ``sandbox.probe.PROBE``, on a throw-away
session with a writable worktree and a read-only folder, on the network the settings give workers.
It compares what the probe saw with the policy and exits 1 if anything differs (5 without Docker or
an image, 2 for bad arguments). No real credential is used: the agents get a placeholder key.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.errors import UsageError
from orchestrator.log import configure_logging
from orchestrator.models.common import AgentName
from orchestrator.models.plan import DirSpec
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.runtime import MANAGED_LABEL, SESSION_LABEL, Runtime
from orchestrator.workers import SessionContext, WorkerManager, command_for, session_network
from sandbox.probe import PROBE, Check, compare, parse_facts
from sandbox.safety import container_user

PLACEHOLDER_KEY = SecretStr("sandbox-check-placeholder")
PROBE_TIMEOUT_S = 60.0

sandbox_app = typer.Typer(name="sandbox", help="Check the worker sandbox from inside a container.",
                          no_args_is_help=True)  # fmt: skip


@dataclass
class AgentReport:
    """What the probe saw in one agent's container."""

    agent: str
    image: str
    exit_code: int | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {"agent": self.agent, "image": self.image, "ok": self.ok, "exit_code": self.exit_code,
                "checks": [c.to_dict() for c in self.checks]}  # fmt: skip


def _agents(names: Sequence[str] | None) -> list[AgentName]:
    chosen: list[AgentName] = []
    for name in names or [a.value for a in AgentName]:
        try:
            chosen.append(AgentName(name))
        except ValueError:
            known = ", ".join(a.value for a in AgentName)
            raise UsageError(f"unknown agent {name!r}: the agents are {known}") from None
    return chosen


def _check_settings(settings: Settings, root: Path, image: str | None) -> Settings:
    update: dict[str, object] = {"workspace": root / "workspace"}
    for agent in AgentName:
        changes: dict[str, object] = {"api_key": PLACEHOLDER_KEY, "login_dir": None}
        if image is not None:
            changes["image"] = image
        update[agent.value] = settings.agent(agent.value).model_copy(update=changes)
    return settings.model_copy(update=update)


async def run_check(settings: Settings, runtime: Runtime, agents: Sequence[AgentName],
                    image: str | None = None) -> list[AgentReport]:  # fmt: skip
    """Probe each agent's production container; every container and network made is removed."""
    with tempfile.TemporaryDirectory(prefix="orch-sandbox-check-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the container's uid must reach the mounts below
        checked = _check_settings(settings, root, image)
        session_id = new_session_id()
        paths = SessionPaths.of(checked.workspace, session_id)
        repo = root / "repo"
        repo.mkdir()
        network, internal = session_network(checked, session_id)
        if network != "none":
            labels = {MANAGED_LABEL: "true", SESSION_LABEL: session_id}
            await runtime.ensure_network(network, internal=internal, labels=labels)
        manager = WorkerManager(runtime, checked, SessionContext(paths, repo, network))
        try:
            return [await _probe(manager, checked, agent) for agent in agents]
        finally:
            await manager.close()
            if network != "none":
                await runtime.remove_network(network)


async def _probe(manager: WorkerManager, settings: Settings, agent: AgentName) -> AgentReport:
    task_id = f"check-{agent.value}"
    worktree = manager.session.paths.worktree(task_id)
    (worktree / ".git").mkdir(parents=True)
    (worktree / "docs").mkdir()
    if os.geteuid() == 0:
        uid, gid = container_user(manager.session.repo, settings)
        for path in (worktree, worktree / ".git", worktree / "docs"):
            os.chown(path, uid, gid)
    command = command_for(agent, "sandbox check", 0, settings)
    probe = command.model_copy(update={"argv": ["sh", "-c", PROBE]})
    handle = await manager.launch(agent, "sandbox check", task_id=task_id, write_dir=str(worktree),
                                  dirs=[DirSpec(path="docs")], command=probe)  # fmt: skip
    lines = [line.text async for line in handle.lines() if line.stream == "stdout"]
    exit_info = await handle.wait(PROBE_TIMEOUT_S)
    assert handle.spec is not None  # launch always sets it
    checks = compare(parse_facts(lines), handle.spec)
    await handle.remove()
    return AgentReport(agent.value, handle.spec.image, exit_info.exit_code, checks)


def render(reports: Sequence[AgentReport]) -> str:
    """The human report: one block per agent, one line per property."""
    out: list[str] = []
    for report in reports:
        out.append(f"{report.agent} ({report.image}): {'ok' if report.ok else 'DIFFERS FROM POLICY'}")
        if report.exit_code != 0:
            out.append(f"  FAIL probe exit code {report.exit_code}")
        for check in report.checks:
            shown = check.actual if check.ok else f"{check.actual!r} (policy: {check.expected!r})"
            out.append(f"  {'ok  ' if check.ok else 'FAIL'} {check.name:<16} {shown}")
    return "\n".join(out)


def outcome(reports: Sequence[AgentReport], network: str, *, as_json: bool) -> tuple[str, int]:
    """What to print and the exit code: 0 when every agent matches the policy, else 1."""
    ok = bool(reports) and all(r.ok for r in reports)
    if as_json:
        body = {"ok": ok, "network": network, "agents": [r.to_dict() for r in reports]}
        return json.dumps(body, indent=2), 0 if ok else 1
    return render(reports), 0 if ok else 1


@sandbox_app.command("check")
def check(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report")] = False,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", "-a", help="only this agent (repeatable)")
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="run every probe in this image instead")
    ] = None,
) -> None:
    """Start each agent's production container with a probe; exit 1 if anything differs from the policy."""
    settings = Settings()
    configure_logging(settings.log_level)
    agents = _agents(agent)

    async def main() -> list[AgentReport]:
        from orchestrator.runtime.docker import DockerRuntime

        async with DockerRuntime() as runtime:
            await runtime.ping()
            return await run_check(settings, runtime, agents, image)

    text, code = outcome(asyncio.run(main()), settings.network, as_json=as_json)
    typer.echo(text)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(sandbox_app, name="sandbox")
