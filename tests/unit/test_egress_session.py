"""``SessionEgress`` on the fake runtime: networks, proxies, the firewall rule, denials as events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.egress import (
    AGENT_LABEL,
    BRIDGE_OPTION,
    ROLE_LABEL,
    IptablesFirewall,
    SessionEgress,
    plan_egress,
    proxy_spec,
)
from orchestrator.egress_rules import PROXY_CONFIG_DIR, EgressPlan
from orchestrator.errors import RuntimeFailure
from orchestrator.models.common import AgentName
from orchestrator.models.events import EgressDenied
from orchestrator.paths import SessionPaths
from orchestrator.runtime import FakeProcess, FakeRuntime
from orchestrator.runtime.protocol import SESSION_LABEL, WORKER_LABEL
from orchestrator.runtime.spec import ContainerSpec

SESSION = "s0000001abc"
PROXY_IMAGE = "meta-orchestrator-proxy:test"
READY = "INFO      Nov 26 03:25:18.021 [1]: Starting main loop. Accepting connections."


class FakeFirewall:
    """Records the bridges it was asked to block; ``blocked`` is the set in force."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    async def block(self, bridge: str) -> bool:
        self.calls.append(("block", bridge))
        self.blocked.add(bridge)
        return True

    async def unblock(self, bridge: str) -> None:
        self.calls.append(("unblock", bridge))
        self.blocked.discard(bridge)


class Recorder:
    """An ``Emitter`` that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def emit(self, worker: str, data: object, task_id: str | None = None) -> object:
        self.events.append((worker, data))
        return data


def proxies_print(*lines: str) -> FakeRuntime:
    """A fake whose proxies print ``READY`` then ``lines`` and run on; other containers just run."""

    def script(spec: ContainerSpec) -> FakeProcess:
        if spec.labels.get(ROLE_LABEL) == "proxy":
            return FakeProcess(lines=[READY, *lines], hang=True)
        return FakeProcess(hang=True)

    return FakeRuntime(script)


def make(runtime: FakeRuntime, plan: EgressPlan, tmp_path: Path) -> tuple[SessionEgress, FakeFirewall]:
    firewall = FakeFirewall()
    egress = SessionEgress(
        runtime, plan, SessionPaths.of(tmp_path, SESSION), image=PROXY_IMAGE, firewall=firewall
    )
    return egress, firewall


async def test_start_makes_the_network_the_rule_and_one_ready_proxy_per_agent(
    settings: Settings, tmp_path: Path
) -> None:
    """Internal network on a named bridge, host rule, egress network, and a proxy per agent on both."""
    runtime = proxies_print()
    plan = plan_egress(SESSION, settings, ["claude", "codex"])
    egress, firewall = make(runtime, plan, tmp_path)
    await egress.start()
    assert runtime.networks[plan.network][0] is True
    assert runtime.network_options[plan.network] == {BRIDGE_OPTION: plan.bridge}
    assert runtime.networks[plan.egress_network][0] is False
    assert firewall.blocked == {plan.bridge}
    assert egress.host_blocked is True
    assert sorted(egress.proxies) == [AgentName.CLAUDE, AgentName.CODEX]
    for agent, container_id in egress.proxies.items():
        container = runtime.containers[container_id]
        assert container.name == plan.proxy_name(agent)
        assert set(container.addresses) == {plan.network, plan.egress_network}
        assert container.spec.labels[AGENT_LABEL] == str(agent)
        assert WORKER_LABEL not in container.spec.labels
    await runtime.close()


async def test_each_proxy_reads_its_own_rendered_config_read_only(settings: Settings, tmp_path: Path) -> None:
    """The config folder holds the agent's allowlist and is mounted read-only at the config path."""
    runtime = proxies_print()
    plan = plan_egress(SESSION, settings, ["codex"])
    egress, _ = make(runtime, plan, tmp_path)
    await egress.start()
    spec = runtime.containers[egress.proxies[AgentName.CODEX]].spec
    (mount,) = spec.mounts
    assert (mount.target, mount.read_only) == (PROXY_CONFIG_DIR, True)
    assert (Path(mount.source) / "allow").read_text() == "^api\\.openai\\.com$\n^chatgpt\\.com$\n"
    assert (Path(mount.source) / "tinyproxy.conf").read_text() == plan.proxy_files(AgentName.CODEX)[
        "tinyproxy.conf"
    ]
    await runtime.close()


def test_the_proxy_container_is_hardened_like_every_container(settings: Settings, tmp_path: Path) -> None:
    """Non-root, read-only root, no capabilities, small limits, on the session's internal network."""
    plan = plan_egress(SESSION, settings, ["gemini"])
    spec = proxy_spec(plan, AgentName.GEMINI, PROXY_IMAGE, tmp_path)
    assert (spec.uid, spec.read_only_root, spec.cap_drop, spec.network) == (
        1000,
        True,
        ("ALL",),
        plan.network,
    )
    assert spec.memory_bytes <= 64 * 1024**2
    assert spec.secrets == {}


async def test_none_mode_starts_no_proxy_but_still_isolates_the_host(
    settings: Settings, tmp_path: Path
) -> None:
    """network=none: the internal network and the host rule, no egress network, no proxy."""
    runtime = proxies_print()
    plan = plan_egress(SESSION, settings.model_copy(update={"network": "none"}), ["claude"])
    egress, firewall = make(runtime, plan, tmp_path)
    await egress.start()
    assert egress.proxies == {}
    assert plan.egress_network not in runtime.networks
    assert firewall.blocked == {plan.bridge}
    await runtime.close()


async def test_a_running_proxy_is_kept_on_resume_and_a_dead_one_replaced(
    settings: Settings, tmp_path: Path
) -> None:
    """A second start (orchestrator restarted) keeps live proxies; an exited one is removed and started anew."""
    runtime = proxies_print()
    plan = plan_egress(SESSION, settings, ["claude", "codex"])
    first, _ = make(runtime, plan, tmp_path)
    await first.start()
    runtime.exit(first.proxies[AgentName.CODEX], 1)
    again, _ = make(runtime, plan, tmp_path)
    await again.start()
    assert again.proxies[AgentName.CLAUDE] == first.proxies[AgentName.CLAUDE]
    assert again.proxies[AgentName.CODEX] != first.proxies[AgentName.CODEX]
    assert first.proxies[AgentName.CODEX] not in runtime.containers
    await runtime.close()


async def test_a_proxy_that_dies_at_start_is_a_runtime_failure_with_its_output(
    settings: Settings, tmp_path: Path
) -> None:
    """A bad image or config: the proxy exits before accepting connections, and the error shows why."""
    runtime = FakeRuntime(
        FakeProcess(lines=["ERROR     Nov 26 [1]: Unable to parse config file."], exit_code=1)
    )
    egress, _ = make(runtime, plan_egress(SESSION, settings, ["claude"]), tmp_path)
    with pytest.raises(RuntimeFailure, match="Unable to parse config file"):
        await egress.start()
    await runtime.close()


async def test_a_failed_start_leaves_nothing_behind(settings: Settings, tmp_path: Path) -> None:
    """``async with`` a start that fails: the network, the rule and the started proxies are removed."""
    runtime = FakeRuntime(
        FakeProcess(lines=["ERROR     Nov 26 [1]: Unable to parse config file."], exit_code=1)
    )
    plan = plan_egress(SESSION, settings, ["claude"])
    firewall = FakeFirewall()
    with pytest.raises(RuntimeFailure):
        async with SessionEgress(
            runtime, plan, SessionPaths.of(tmp_path, SESSION), image=PROXY_IMAGE, firewall=firewall
        ):
            pass
    assert (plan.network in runtime.networks, firewall.blocked, runtime.containers) == (False, set(), {})
    await runtime.close()


async def test_watching_a_proxy_that_is_gone_ends_quietly(settings: Settings, tmp_path: Path) -> None:
    """Closing the egress while its denials are watched ends the watch without an error."""
    runtime = proxies_print()
    egress, _ = make(runtime, plan_egress(SESSION, settings, ["claude"]), tmp_path)
    await egress.start()
    proxies = dict(egress.proxies)
    await egress.close()
    egress.proxies.update(proxies)  # as a watcher started before close would still hold them
    recorder = Recorder()
    await asyncio.wait_for(egress.watch_denials(recorder), 5)
    assert recorder.events == []
    await runtime.close()


async def test_close_removes_proxies_network_and_rule(settings: Settings, tmp_path: Path) -> None:
    """After close nothing of the session's egress is left but the shared egress network."""
    runtime = proxies_print()
    plan = plan_egress(SESSION, settings, ["claude"])
    async with SessionEgress(
        runtime,
        plan,
        SessionPaths.of(tmp_path, SESSION),
        image=PROXY_IMAGE,
        firewall=(firewall := FakeFirewall()),
    ):
        pass
    assert await runtime.find({SESSION_LABEL: SESSION}) == []
    assert plan.network not in runtime.networks
    assert plan.egress_network in runtime.networks
    assert firewall.blocked == set()
    await runtime.close()


async def test_denials_become_events_of_the_worker_that_asked(settings: Settings, tmp_path: Path) -> None:
    """A refusal is emitted as egress_denied for the worker container at the client's address."""
    plan = plan_egress(SESSION, settings, ["claude"])
    holder: dict[str, str] = {}

    def script(spec: ContainerSpec) -> FakeProcess:
        if spec.labels.get(ROLE_LABEL) != "proxy":
            return FakeProcess(hang=True)
        client = holder.get("address", "10.9.9.9")
        return FakeProcess(
            lines=[
                READY,
                f"CONNECT   Nov 26 03:25:22.552 [1]: Connect (file descriptor 7): {client}",
                "CONNECT   Nov 26 03:25:22.552 [1]: Request (file descriptor 7): CONNECT example.com:443 HTTP/1.1",
                'NOTICE    Nov 26 03:25:22.552 [1]: Proxying refused on filtered domain "example.com"',
                "CONNECT   Nov 26 03:25:22.553 [1]: Connect (file descriptor 8): 10.200.0.1",
                "CONNECT   Nov 26 03:25:22.553 [1]: Request (file descriptor 8): CONNECT other.example:443 HTTP/1.1",
                'NOTICE    Nov 26 03:25:22.553 [1]: Proxying refused on filtered domain "other.example"',
            ],
            run_s=0.05,
        )

    runtime = FakeRuntime(script)
    await runtime.ensure_network(plan.network)
    worker = await runtime.start(
        ContainerSpec(image="agent", argv=("claude",), user="1000:1000", memory_bytes=2**30, nano_cpus=10**9,
                      pids_limit=64, network=plan.network, labels={SESSION_LABEL: SESSION, WORKER_LABEL: "claude-t1"})
    )  # fmt: skip
    holder["address"] = runtime.containers[worker].addresses[plan.network]
    egress, _ = make(runtime, plan, tmp_path)
    await egress.start()
    recorder = Recorder()
    await asyncio.wait_for(egress.watch_denials(recorder), 5)
    assert [(name, data) for name, data in recorder.events] == [
        ("claude-t1", EgressDenied(host="example.com", detail="CONNECT example.com:443 refused: example.com is not on the claude allowlist")),
        ("egress-claude", EgressDenied(host="other.example", detail="CONNECT other.example:443 refused: other.example is not on the claude allowlist")),
    ]  # fmt: skip
    await runtime.close()


@pytest.mark.parametrize("bridge", ["", "eth0; rm -rf /", "-j ACCEPT", "a" * 16, "Br0"])
def test_the_firewall_refuses_a_bridge_name_that_is_not_an_interface(bridge: str) -> None:
    """Only a plain interface name is ever passed to iptables."""
    with pytest.raises(RuntimeFailure, match="not an interface name"):
        IptablesFirewall.rule(bridge)


def test_the_firewall_rule_rejects_input_from_the_session_bridge() -> None:
    """The rule names the INPUT chain, the bridge, and REJECT (fast failure, not a hang)."""
    assert IptablesFirewall.rule("orch0123456789a") == [
        "INPUT", "-i", "orch0123456789a", "-m", "comment", "--comment", "meta-orchestrator session", "-j", "REJECT",
    ]  # fmt: skip
