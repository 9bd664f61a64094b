"""Starting and resuming sessions: the wiring around ``Orchestrator`` shared by the CLI and the API.

``SessionHost`` owns what outlives one orchestrator object: the runtime, the image tags, the
session's internal network and, for a credential-free run, the scripted model server container
on that network (the agents' endpoints then point at it through the ordinary endpoint settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.coordinator import ALL_AGENTS, Interrupt, Orchestrator, SessionOptions
from orchestrator.egress import (
    BRIDGE_OPTION,
    HostFirewall,
    IptablesFirewall,
    SessionEgress,
    egress_notice,
    plan_egress,
)
from orchestrator.egress_rules import EgressPlan
from orchestrator.errors import CredentialsMissing, OrchestratorError
from orchestrator.images import IMAGE_NAMES, image_ref, image_refs
from orchestrator.launch import Launcher
from orchestrator.log import get_logger
from orchestrator.models import AgentName
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.report import Report
from orchestrator.runtime import Runtime
from orchestrator.runtime.protocol import MANAGED_LABEL, SESSION_LABEL, WORKER_LABEL
from orchestrator.store import EventWriter
from sandbox.mounts import MountRequest, SandboxRoots
from sandbox.safety import WorkerRequest, build_spec, container_name, container_user

log = get_logger(__name__)
MODEL_PORT = 8080
DUMMY_KEYS = {"claude": "sk-ant-local-scripted-model", "codex": "sk-local-scripted-model-0000", "gemini": "local-scripted-model-key"}  # fmt: skip


def model_server_name(session_id: str) -> str:
    """The scripted model server's container name: workers reach it directly, not through a proxy."""
    return container_name(session_id, "modelserver", 1)


def network_name(session_id: str) -> str:
    """The session's own internal network: workers of different sessions cannot reach each other."""
    return f"orch-{session_id}"


def check_credentials(settings: Settings, agents: tuple[AgentName, ...]) -> None:
    """Exit 5 before anything starts when a needed agent has neither a key nor a login folder."""
    for agent in agents:
        own = settings.agent(agent.value)
        if own.api_key is None and (own.login_dir is None or not own.login_dir.is_dir()):
            upper = agent.value.upper()
            raise CredentialsMissing(
                f"no credentials for {agent.value}: set ORCH_{upper}__API_KEY, or ORCH_{upper}__LOGIN_DIR "
                f"to a login folder (~/.{agent.value}), or leave {agent.value} out with --agents"
            )


@dataclass
class SessionHost:
    """Runs sessions on one runtime."""

    settings: Settings
    runtime: Runtime
    interrupt: Interrupt = field(default_factory=Interrupt)
    on_orchestrator: Callable[[Orchestrator], None] | None = None  # sees each session's orchestrator
    firewall: HostFirewall | None = None  # the host rule for the session bridge (default: iptables)

    def images(self) -> dict[str, str]:
        return image_refs(
            self.settings,
            [n for n in IMAGE_NAMES if n in ("claude", "codex", "gemini", "modelserver", "base")],
        )

    def egress_plan(self, session_id: str, agents: Iterable[AgentName] = ALL_AGENTS) -> EgressPlan:
        """The session's egress: its internal network, each agent's allowlist proxy, direct names."""
        return plan_egress(session_id, self.settings, agents, direct=[model_server_name(session_id)])

    async def prepare_network(self, session_id: str) -> str:
        """The session's internal network (on its fixed bridge name); ``none`` when egress is off."""
        if self.settings.network == "none":
            return "none"
        plan = self.egress_plan(session_id)
        await self.runtime.ensure_network(
            plan.network, internal=True, labels={MANAGED_LABEL: "true", SESSION_LABEL: session_id},
            options={BRIDGE_OPTION: plan.bridge},
        )  # fmt: skip
        return plan.network

    @contextlib.asynccontextmanager
    async def egress(
        self, session_id: str, agents: Iterable[AgentName]
    ) -> AsyncIterator[SessionEgress | None]:
        """The session's allowlist proxies while the session runs (none when ``network=none``)."""
        if self.settings.network == "none":
            yield None
            return
        plan = self.egress_plan(session_id, agents)
        paths = SessionPaths.of(self.settings.workspace, session_id)
        live = SessionEgress(
            self.runtime, plan, paths, image=image_ref(self.settings, "proxy"), firewall=self.firewall
        )
        async with live:
            yield live

    def orchestrator(
        self, session_id: str, repo: Path, network: str, egress: SessionEgress | None = None
    ) -> Orchestrator:
        paths = SessionPaths.of(self.settings.workspace, session_id)
        agent_env = {a.value: egress.plan.worker_env(a) for a in egress.plan.agents} if egress else {}
        launcher = Launcher(self.settings, paths, repo.resolve(), self.images(), network, agent_env=agent_env)
        made = Orchestrator(
            self.settings, self.runtime, session_id=session_id, launcher=launcher, interrupt=self.interrupt
        )
        if egress is not None:
            made.watchers.append(egress.watch_denials)
        notice = egress_notice(self.settings, ALL_AGENTS)
        if notice is not None:
            made.notices.append(notice)
        if self.on_orchestrator is not None:
            self.on_orchestrator(made)
        return made

    async def release_network(self, session_id: str) -> None:
        """Remove the session's network once none of its containers runs (``prepare_network`` makes it
        again for a resume): Docker's address pools hold only a few dozen networks."""
        if self.settings.network == "none":
            return
        if any(c.running for c in await self.runtime.find({SESSION_LABEL: session_id})):
            return
        try:
            await self.runtime.remove_network(network_name(session_id))
        except OrchestratorError:
            return  # still in use: its host firewall rule stays with it
        firewall = self.firewall if self.firewall is not None else IptablesFirewall()
        await firewall.unblock(self.egress_plan(session_id).bridge)  # the rule outlived the egress close

    async def run(self, prompt: str, options: SessionOptions, session_id: str | None = None) -> Report:
        """A new session to the end (or to a pause with ``--on-pause exit``)."""
        check_credentials(self.settings, options.agents)
        session_id = session_id or new_session_id()
        network = await self.prepare_network(session_id)
        try:
            async with self.egress(session_id, options.agents) as egress:
                orchestrator = self.orchestrator(session_id, options.repo, network, egress)
                return await orchestrator.run(prompt, options)
        finally:  # also when refused before it began (a dirty repository)
            await self.release_network(session_id)

    async def resume(self, session_id: str, repo: Path) -> Report:
        """Continue a session; a credential-free one gets its scripted model server back first."""
        paths = SessionPaths.of(self.settings.workspace, session_id)
        # the lock first: a second resume is refused before it touches a container or the network
        writer = EventWriter.open(paths, snapshot_every=self.settings.snapshot_every, create=False)
        try:
            network = await self.prepare_network(session_id)
        except BaseException:
            writer.close()
            raise
        try:
            agents = SessionOptions.from_dict(repo, dict(writer.state.options)).agents
            scenario = writer.state.options.get("model_server")
            if isinstance(scenario, str) and Path(scenario).is_file() and not writer.state.finished:
                async with self.model_server(session_id, Path(scenario)) as scripted:
                    local = SessionHost(
                        scripted, self.runtime, self.interrupt, self.on_orchestrator, self.firewall
                    )
                    async with local.egress(session_id, agents) as egress:
                        return await local.orchestrator(session_id, repo, network, egress).resume(writer)
            async with self.egress(session_id, agents) as egress:
                return await self.orchestrator(session_id, repo, network, egress).resume(writer)
        finally:
            writer.close()  # idempotent: the orchestrator closes it when it ran
            await self.release_network(session_id)

    @contextlib.asynccontextmanager
    async def model_server(self, session_id: str, scenario: Path) -> AsyncIterator[Settings]:
        """The scripted model server on the session's network; yields settings pointing the agents at it."""
        network = await self.prepare_network(session_id)
        paths = SessionPaths.of(self.settings.workspace, session_id)
        paths.root.mkdir(parents=True, exist_ok=True)
        local = paths.root / "scenario.toml"
        if scenario.resolve() != local.resolve():
            await asyncio.to_thread(shutil.copyfile, scenario, local)
        running = None
        for old in await self.runtime.find({SESSION_LABEL: session_id, WORKER_LABEL: "modelserver"}):
            if old.running and running is None:
                running = old  # left by a process that was killed: keep it, it knows the scenario's position
            else:
                await self.runtime.remove(old.id)
        worker = "modelserver"
        request = WorkerRequest(
            image=self.images()["modelserver"],
            argv=["python3", "-m", "orchestrator.modelserver", "--scenario", "/scenario/scenario.toml",
                  "--host", "0.0.0.0",  # noqa: S104 - inside its container, on the session network only
                  "--port", str(MODEL_PORT)],  # fmt: skip
            session_id=session_id, worker=worker, attempt=1, task="read-only",
            mounts=[MountRequest(str(paths.root / "scenario.toml"), "ro", "/scenario/scenario.toml")],
            roots=SandboxRoots(repo=paths.root, workspace=paths.root), user=container_user(paths.root, self.settings),
            network=network,
        )  # fmt: skip
        spec = build_spec(request)
        if running is not None:
            container, host = running.id, running.name
        else:
            container = await self.runtime.start(spec)
            host = spec.name or container[:12]
        url = f"http://{host}:{MODEL_PORT}"
        update = {
            agent: self.settings.agent(agent).model_copy(
                update={"base_url": url, "api_key": SecretStr(DUMMY_KEYS[agent])}
            )
            for agent in ("claude", "codex", "gemini")
        }
        try:
            yield self.settings.model_copy(update=update)
        finally:
            with contextlib.suppress(Exception):
                await self.runtime.remove(container)
            await self.release_network(session_id)
