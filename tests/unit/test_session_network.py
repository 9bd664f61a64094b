"""The session's internal network is removed when the session ends, on the FakeRuntime.

Found with the real demo: every session left its ``orch-<id>`` network behind (Docker's default
address pools hold a few dozen), and a dirty repository, refused before the session began, left
one too. ``SessionHost.release_network`` removes it once none of the session's containers runs
(the egress also removes it when it closes); a resume creates it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.coordinator import SessionOptions
from orchestrator.egress import ROLE_LABEL
from orchestrator.errors import DirtyRepository
from orchestrator.runtime import FakeProcess, FakeRuntime
from orchestrator.runtime.protocol import SESSION_LABEL
from orchestrator.runtime.spec import ContainerSpec
from orchestrator.sessions import SessionHost, network_name
from tests.support.fake_agents import FakeAgents, plan, task
from tests.support.repos import make_repo
from tests.unit.test_egress_session import READY, FakeFirewall

IMAGES = {n: f"img-{n}:1" for n in ("base", "claude", "codex", "gemini", "modelserver")}
SESSION = "sess0001"


class Host(SessionHost):
    def images(self) -> dict[str, str]:
        return IMAGES


def _host(tmp_path: Path, runtime: FakeRuntime) -> Host:
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", flush_interval_s=0.001)
    keys = {
        a: settings.agent(a).model_copy(update={"api_key": SecretStr("test-key-123456")})
        for a in ("claude", "codex", "gemini")
    }
    return Host(settings.model_copy(update=keys), runtime, firewall=FakeFirewall())


def _behind_proxies(agents: FakeAgents) -> FakeRuntime:
    """The session's allowlist proxies get ready and run; the agents do what ``agents`` says."""

    def script(spec: ContainerSpec) -> FakeProcess:
        if spec.labels.get(ROLE_LABEL) == "proxy":
            return FakeProcess(lines=[READY], hang=True)
        return agents(spec)

    return FakeRuntime(script=script)


def test_a_finished_session_leaves_no_network(tmp_path: Path) -> None:
    """The network exists while the session runs and is gone after its report."""
    runtime = _behind_proxies(FakeAgents([plan(task("t1", "gemini", writes=False))]))
    report = asyncio.run(
        _host(tmp_path, runtime).run("look around", SessionOptions(repo=make_repo(tmp_path)), SESSION)
    )
    assert report.exit_code == 0
    assert any(call[:2] == ("ensure_network", network_name(SESSION)) for call in runtime.calls)
    assert network_name(SESSION) not in runtime.networks


def test_a_refused_dirty_repository_leaves_no_network(tmp_path: Path) -> None:
    """Refused with exit 2 before anything started: no network stays behind."""
    repo = make_repo(tmp_path)
    (repo / "app.py").write_text("changed\n")
    runtime = _behind_proxies(FakeAgents([]))
    with pytest.raises(DirtyRepository):
        asyncio.run(_host(tmp_path, runtime).run("x", SessionOptions(repo=repo), SESSION))
    assert network_name(SESSION) not in runtime.networks


def test_the_network_stays_while_a_container_of_the_session_runs(tmp_path: Path) -> None:
    """A container still running on the network (left for a resume to re-attach) keeps it."""
    runtime = FakeRuntime(FakeProcess(hang=True))
    host = _host(tmp_path, runtime)

    async def main() -> None:
        await host.prepare_network(SESSION)
        spec = ContainerSpec(image="img", argv=("sleep",), user="1000:1000", memory_bytes=64 << 20,
                             nano_cpus=10**9, pids_limit=64, network=network_name(SESSION),
                             labels={SESSION_LABEL: SESSION})  # fmt: skip
        container = await runtime.start(spec)
        await host.release_network(SESSION)
        assert network_name(SESSION) in runtime.networks
        await runtime.kill(container)
        await runtime.wait(container)
        await host.release_network(SESSION)

    asyncio.run(main())
    assert network_name(SESSION) not in runtime.networks
