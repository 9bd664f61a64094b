"""Egress of one session made real: its internal network, one allowlist proxy per agent, the host
firewall rule, and the proxies' refusals as ``egress_denied`` events. The rules are data in
``orchestrator.egress_rules``; this module only acts on them.

The coordinator, at session start::

    notice = egress_notice(settings, agents)            # EgressOpened when network=open: record it
    plan = plan_egress(session_id, settings, agents, direct=[model_server_name])
    async with SessionEgress(runtime, plan, paths, image=image_ref(settings, "proxy")) as egress:
        # each worker: network=plan.network, env |= plan.worker_env(agent)
        tasks.create_task(egress.watch_denials(writer))

Topology, and why (container-spike.md §5, security-runtime.md §5):

- ``plan.network`` is internal and per session, on a bridge with a fixed name (``plan.bridge``),
  so workers of two sessions never reach each other. Docker 20.10 still gives an internal network
  a default route, and the host's INPUT chain accepts what comes in from the bridge: a host service
  listening on 0.0.0.0 is reachable from a worker. So, when running as root with iptables,
  ``IptablesFirewall`` rejects everything entering the host from that bridge (nothing on the host
  is ever meant for a worker; Docker's embedded DNS lives in the container, not behind INPUT).
  Without root the rule cannot be set: host services must bind 127.0.0.1, which the API server and
  the host-side model server do by default; a warning says so.
- Each agent's proxy (tinyproxy, ``images/proxy``) sits on ``plan.network`` and on the shared,
  non-internal ``plan.egress_network``, which only proxies join. It refuses every host not on the
  agent's allowlist before resolving it, and logs the refusal; ``open`` mode runs it without the
  filter (still logged), ``none`` mode runs no proxy at all.
- The scripted model server (tests, demo) joins ``plan.network`` and is reached by its name,
  listed in ``plan.direct`` and so in ``NO_PROXY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final, Protocol

from orchestrator.egress_rules import (
    PROXY_CONFIG,
    PROXY_CONFIG_DIR,
    DenialParser,
    EgressPlan,
    egress_notice,
    plan_egress,
)
from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.log import get_logger
from orchestrator.models.common import AgentName
from orchestrator.paths import SessionPaths
from orchestrator.runtime.protocol import MANAGED_LABEL, SESSION_LABEL, WORKER_LABEL, Runtime
from orchestrator.runtime.spec import ContainerSpec, LogLine, MountSpec

__all__ = [
    "EgressPlan",
    "Emitter",
    "HostFirewall",
    "IptablesFirewall",
    "NoFirewall",
    "SessionEgress",
    "egress_notice",
    "plan_egress",
]

log = get_logger(__name__)

ROLE_LABEL: Final = "orchestrator.role"
AGENT_LABEL: Final = "orchestrator.agent"
BRIDGE_OPTION: Final = "com.docker.network.bridge.name"
PROXY_USER: Final = "1000:1000"
PROXY_MEMORY: Final = 64 * 1024**2
PROXY_CPUS: Final = 250_000_000
PROXY_PIDS: Final = 128
READY_TEXT: Final = "Accepting connections"
READY_TIMEOUT_S: Final = 15.0
_BRIDGE_RE = re.compile(r"[a-z][a-z0-9-]{1,14}")


class Emitter(Protocol):
    """Where denials go: ``EventWriter`` is one."""

    def emit(self, worker: str, data: object, task_id: str | None = None) -> object: ...


class HostFirewall(Protocol):
    """Keeps a session's bridge away from the host's own services."""

    async def block(self, bridge: str) -> bool:
        """Reject traffic from ``bridge`` to the host; True if a rule is in force afterwards."""
        ...

    async def unblock(self, bridge: str) -> None:
        """Remove the rule for ``bridge`` (a missing rule is fine)."""
        ...


class NoFirewall:
    """Sets no rule (tests on a fake runtime; hosts whose services all bind 127.0.0.1)."""

    async def block(self, bridge: str) -> bool:
        return False

    async def unblock(self, bridge: str) -> None:
        return None


class IptablesFirewall:
    """``iptables -I INPUT -i <bridge> -j REJECT``, set only when running as root with iptables."""

    def __init__(self, binary: str = "iptables") -> None:
        self._binary = binary

    @staticmethod
    def rule(bridge: str) -> list[str]:
        """The rule's arguments after the chain verb; ``bridge`` must be a plain interface name."""
        if not _BRIDGE_RE.fullmatch(bridge):
            raise RuntimeFailure(
                f"bridge name {bridge!r} is not an interface name; refusing to pass it to iptables"
            )
        return [
            "INPUT",
            "-i",
            bridge,
            "-m",
            "comment",
            "--comment",
            "meta-orchestrator session",
            "-j",
            "REJECT",
        ]

    def usable(self) -> bool:
        return os.geteuid() == 0 and shutil.which(self._binary) is not None

    async def block(self, bridge: str) -> bool:
        rule = self.rule(bridge)
        if not self.usable():
            log.warning(
                "egress_host_reachable", bridge=bridge,
                detail="not root or no iptables: workers can reach host services on 0.0.0.0; bind them to 127.0.0.1",
            )  # fmt: skip
            return False
        if await self._run("-C", *rule) == 0:
            return True
        code = await self._run("-I", *rule)
        if code != 0:
            log.warning("egress_firewall_failed", bridge=bridge, exit_code=code)
        return code == 0

    async def unblock(self, bridge: str) -> None:
        rule = self.rule(bridge)
        if not self.usable():
            return
        for _ in range(8):  # one rule per block(); a few in case of an earlier crash
            if await self._run("-D", *rule) != 0:
                return

    async def _run(self, *args: str) -> int:
        process = await asyncio.create_subprocess_exec(
            self._binary,
            "-w",
            "5",
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await process.wait()


def proxy_spec(plan: EgressPlan, agent: AgentName, image: str, config_dir: Path) -> ContainerSpec:
    """The hardened container of ``agent``'s proxy: read-only root, no capabilities, config read-only."""
    return ContainerSpec(
        image=image,
        argv=("/usr/bin/tinyproxy", "-d", "-c", PROXY_CONFIG),
        user=PROXY_USER,
        workdir="/",
        mounts=(MountSpec(source=str(config_dir), target=PROXY_CONFIG_DIR, read_only=True),),
        memory_bytes=PROXY_MEMORY,
        nano_cpus=PROXY_CPUS,
        pids_limit=PROXY_PIDS,
        network=plan.network,
        labels=proxy_labels(plan, agent),
        name=plan.proxy_name(agent),
    )


def proxy_labels(plan: EgressPlan, agent: AgentName) -> dict[str, str]:
    """Labels of a proxy: managed and per session like workers, but no worker label (it is not one)."""
    return {
        MANAGED_LABEL: "true",
        SESSION_LABEL: plan.session_id,
        ROLE_LABEL: "proxy",
        AGENT_LABEL: str(agent),
    }


class SessionEgress:
    """The live egress of one session. ``async with`` it, or call ``start``/``close``.

    ``start`` is idempotent and safe on resume: a proxy that still runs is kept (its workers'
    tunnels stay up), a stopped one is replaced. ``close`` removes the proxies, the firewall rule
    and the session network; the shared egress network stays.
    """

    def __init__(
        self,
        runtime: Runtime,
        plan: EgressPlan,
        paths: SessionPaths,
        *,
        image: str,
        firewall: HostFirewall | None = None,
    ) -> None:
        self.runtime = runtime
        self.plan = plan
        self.paths = paths
        self.image = image
        self.firewall: HostFirewall = firewall if firewall is not None else IptablesFirewall()
        self.proxies: dict[AgentName, str] = {}
        self.host_blocked = False
        self._workers: dict[str, str] = {}

    async def __aenter__(self) -> SessionEgress:
        try:
            await self.start()
        except BaseException:
            # A half-made egress (network, rule, some proxies) must not outlive the failed start.
            try:
                await self.close()
            except Exception as err:  # noqa: BLE001 - the start's error is the one to raise
                log.warning("egress_cleanup_failed", session=self.plan.session_id, error=str(err))
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def config_root(self) -> Path:
        return self.paths.root / "egress"

    async def start(self) -> None:
        """Network, firewall rule, then one ready proxy per agent (none in ``none`` mode)."""
        plan = self.plan
        labels = {MANAGED_LABEL: "true", SESSION_LABEL: plan.session_id}
        await self.runtime.ensure_network(
            plan.network, internal=True, labels=labels, options={BRIDGE_OPTION: plan.bridge}
        )
        self.host_blocked = await self.firewall.block(plan.bridge)
        if plan.agents:
            await self.runtime.ensure_network(
                plan.egress_network, internal=False, labels={MANAGED_LABEL: "true"}
            )
        for agent in plan.agents:
            self.proxies[agent] = await self._proxy(agent)
        log.info(
            "egress_started", session=plan.session_id, mode=plan.mode, network=plan.network,
            proxies=sorted(self.proxies), host_blocked=self.host_blocked,
        )  # fmt: skip

    async def _proxy(self, agent: AgentName) -> str:
        folder = self.config_root / str(agent)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for name, text in self.plan.proxy_files(agent).items():
            (folder / name).write_text(text)
            (folder / name).chmod(0o644)
        container_id: str | None = None
        for found in await self.runtime.find(proxy_labels(self.plan, agent)):
            if found.running and container_id is None:
                container_id = found.id
            else:
                await self.runtime.remove(found.id)
        if container_id is None:
            container_id = await self.runtime.start(
                proxy_spec(self.plan, agent, self.image, folder.resolve())
            )
            await self._ready(agent, container_id)
        await self.runtime.connect_network(container_id, self.plan.egress_network)
        return container_id

    async def _ready(self, agent: AgentName, container_id: str) -> None:
        """Wait until tinyproxy accepts connections; a proxy that dies first is a ``RuntimeFailure``."""
        seen: list[str] = []

        async def accepting() -> bool:
            async with _closing(self.runtime.stream(container_id)) as lines:
                async for line in lines:
                    seen.append(line.text)
                    if READY_TEXT in line.text:
                        return True
            return False

        try:
            ready = await asyncio.wait_for(accepting(), READY_TIMEOUT_S)
        except TimeoutError:
            ready = False
        if not ready:
            tail = "\n".join(seen[-10:])
            raise RuntimeFailure(
                f"the {agent} egress proxy {self.plan.proxy_name(agent)} did not start within "
                f"{READY_TIMEOUT_S:.0f} s; its last lines:\n{tail}\nCheck the proxy image (orchestrate images build)"
            )

    async def watch_denials(self, emit: Emitter, since_ns: int | None = None) -> None:
        """Record every refusal of every proxy as ``egress_denied`` until the proxies stop.

        The event goes to the worker whose address made the request (found by the containers'
        ``orchestrator.worker`` label), else to ``egress-<agent>``.
        """
        async with asyncio.TaskGroup() as group:
            for agent, container_id in self.proxies.items():
                group.create_task(self._watch(agent, container_id, emit, since_ns))

    async def _watch(self, agent: AgentName, container_id: str, emit: Emitter, since_ns: int | None) -> None:
        parser = DenialParser(str(agent))
        try:
            async with _closing(self.runtime.stream(container_id, since_ns)) as lines:
                async for line in lines:
                    denial = parser.feed(line.text)
                    if denial is None:
                        continue
                    worker = await self._worker_of(denial.client) or f"egress-{agent}"
                    log.info("egress_denied", session=self.plan.session_id, worker=worker, host=denial.host)
                    emit.emit(worker, denial.event())
        except ContainerNotFound:
            log.info("egress_proxy_gone", session=self.plan.session_id, agent=str(agent))  # closed meanwhile

    async def _worker_of(self, address: str | None) -> str | None:
        if address is None:
            return None
        if address not in self._workers:
            for info in await self.runtime.find({SESSION_LABEL: self.plan.session_id}):
                mine = info.addresses.get(self.plan.network)
                if mine and WORKER_LABEL in info.labels:
                    self._workers[mine] = info.labels[WORKER_LABEL]
        return self._workers.get(address)

    async def close(self) -> None:
        """Remove the proxies, the session network and then the firewall rule.

        While a leftover container keeps the network (the engine refuses to remove it), the rule
        stays too, so that container still cannot reach the host; a later ``close`` removes both.
        """
        for container in await self.runtime.find({SESSION_LABEL: self.plan.session_id, ROLE_LABEL: "proxy"}):
            await self.runtime.remove(container.id)
        self.proxies.clear()
        try:
            await self.runtime.remove_network(self.plan.network)
        except RuntimeFailure as err:
            log.info("egress_network_kept", network=self.plan.network, error=str(err))
            return
        await self.firewall.unblock(self.plan.bridge)
        self.host_blocked = False
        log.info("egress_closed", session=self.plan.session_id)


@contextlib.asynccontextmanager
async def _closing(lines: AsyncIterator[LogLine]) -> AsyncIterator[AsyncIterator[LogLine]]:
    """Close a runtime's line stream when the reader stops early (its reader threads end with it)."""
    try:
        yield lines
    finally:
        close = getattr(lines, "aclose", None)
        if close is not None:
            await close()
