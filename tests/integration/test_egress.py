"""The egress allowlist on real Docker: a worker reaches its agent's API host through the proxy, nothing else.

Each test builds a session's egress (``SessionEgress``: internal network, host rule, proxy) and a
stand-in for the real API: a tiny HTTP server on the egress side, known there by the real host's
name (network aliases ``api.anthropic.com`` and ``other.example``), listening on 80 and 443
without TLS, and a stand-in for the scripted model server on the session network. The worker is a production spec (``sandbox.safety.build_spec``) of the base image
running a Python probe that prints ``key=value`` facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import docker
import pytest
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.egress import SessionEgress, plan_egress
from orchestrator.egress_rules import EgressPlan
from orchestrator.models.common import AgentName
from orchestrator.models.events import EgressDenied
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.runtime import MANAGED_LABEL, SESSION_LABEL, ContainerSpec, LogLine
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.store import EventReader, EventWriter
from sandbox.safety import SandboxRoots, WorkerRequest, build_spec, container_user

ALIASES = ("api.anthropic.com", "other.example")
STANDIN = """
import http.server, sys, threading
class Reply(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"standin-ok"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
for port in (80, 443):
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Reply)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
# Prints key=value facts. Raw sockets for CONNECT (the stand-in speaks plain HTTP on 443);
# urllib for what a client that only reads the proxy variables does.
PROBE = """
import os, socket, urllib.request
proxy_host, proxy_port = os.environ["HTTPS_PROXY"].rsplit("/", 1)[1].split(":")
def read_all(sock):
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data.decode(errors="replace")
def tunnel(target):
    try:
        sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=5)
        sock.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
        status = sock.recv(4096).decode(errors="replace").split("\\r\\n")[0]
        if " 200 " not in status:
            return "refused " + status.split(" ", 1)[1]
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        return "tunnel " + read_all(sock).rsplit("\\r\\n", 1)[-1]
    except OSError as err:
        return f"error {type(err).__name__}"
def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as err:
        return f"blocked {type(err).__name__}"
def fetch(url):
    try:
        return "ok " + urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception as err:
        return f"failed {type(err).__name__}"
print("tunnel_allowed=" + tunnel("api.anthropic.com:443"))
print("tunnel_other=" + tunnel("other.example:443"))
print("tunnel_port80=" + tunnel("api.anthropic.com:80"))
print("tunnel_by_ip=" + tunnel(os.environ["STANDIN_IP"] + ":443"))
print("urllib_allowed=" + fetch("http://api.anthropic.com/"))
print("urllib_other=" + fetch("http://other.example/"))
print("direct_by_ip=" + direct(os.environ["STANDIN_IP"], 80))
print("direct_by_name=" + direct("api.anthropic.com", 443))
print("model_server=" + fetch("http://" + os.environ["MODEL_SERVER"] + "/"))
for index, address in enumerate(os.environ["HOST_IPS"].split()):
    print(f"host_{index}=" + direct(address, int(os.environ["HOST_PORT"])))
"""


@dataclass
class Stage:
    """One session's egress plus the stand-in API, on real Docker."""

    runtime: DockerRuntime
    settings: Settings
    paths: SessionPaths
    plan: EgressPlan
    egress: SessionEgress
    standin_ip: str
    base_image: str
    repo: Path

    def worker(self, script: str, env: dict[str, str]) -> ContainerSpec:
        """A production worker spec (Claude's egress) running ``python3 -c script``."""
        return build_spec(WorkerRequest(
            image=self.base_image, argv=["python3", "-c", script], session_id=self.plan.session_id,
            worker="probe-t1", attempt=1, task="read-only", mounts=[],
            roots=SandboxRoots(repo=self.repo, workspace=self.paths.root), user=container_user(self.repo, self.settings),
            network=self.plan.network, agent="claude",
            env={**self.plan.worker_env(AgentName.CLAUDE), "MODEL_SERVER": self.plan.direct[0], **env},
        ))  # fmt: skip

    async def run(self, spec: ContainerSpec, timeout_s: float = 60) -> dict[str, str]:
        container_id = await self.runtime.start(spec)
        await self.runtime.wait(container_id, timeout_s)
        lines = [line.text async for line in self.runtime.stream(container_id)]
        return dict(line.split("=", 1) for line in lines if "=" in line)


async def first_line(runtime: DockerRuntime, container_id: str, text: str, timeout_s: float = 20) -> None:
    """Wait until the container prints a line containing ``text``."""

    async def seen() -> None:
        lines = cast(AsyncGenerator[LogLine, None], runtime.stream(container_id))
        async with contextlib.aclosing(lines):
            async for line in lines:
                if text in line.text:
                    return

    await asyncio.wait_for(seen(), timeout_s)


async def make_stage(tmp_path: Path, images: dict[str, str], network: str) -> AsyncIterator[Stage]:
    session_id = new_session_id()
    settings = Settings(_env_file=None, workspace=tmp_path / "workspace", network=network)
    paths = SessionPaths.of(settings.workspace, session_id)
    model_server = f"orch-{session_id}-modelserver"
    plan = plan_egress(
        session_id, settings, ["claude"], direct=[model_server], egress_network=f"orch-{session_id}-out"
    )
    runtime = DockerRuntime()
    labels = {MANAGED_LABEL: "true", SESSION_LABEL: session_id}
    scratch = f"orch-{session_id}-standin"
    egress = SessionEgress(runtime, plan, paths, image=images["proxy"])
    repo = tmp_path / "repo"
    repo.mkdir()
    try:
        await runtime.ensure_network(plan.egress_network, internal=False, labels=labels)
        await runtime.ensure_network(scratch, internal=True, labels=labels)
        standin = await runtime.start(ContainerSpec(
            image=images["base"], argv=("python3", "-c", STANDIN), user="1000:1000", memory_bytes=128 * 1024**2,
            nano_cpus=500_000_000, pids_limit=64, network=scratch, labels=labels, name=f"orch-{session_id}-standin",
        ))  # fmt: skip
        await runtime.connect_network(standin, plan.egress_network, aliases=ALIASES)
        await first_line(runtime, standin, "ready")
        await egress.start()
        # The scripted model server's place: on the session's network, reached by name, not via the proxy.
        scripted = await runtime.start(ContainerSpec(
            image=images["base"], argv=("python3", "-c", STANDIN), user="1000:1000", memory_bytes=128 * 1024**2,
            nano_cpus=500_000_000, pids_limit=64, network=plan.network, labels=labels, name=model_server,
        ))  # fmt: skip
        await first_line(runtime, scripted, "ready")
        standin_ip = (await runtime.inspect(standin)).addresses[plan.egress_network]
        yield Stage(runtime, settings, paths, plan, egress, standin_ip, images["base"], repo)
    finally:
        for container in await runtime.find({SESSION_LABEL: session_id}):
            await runtime.remove(container.id)
        await egress.close()
        for name in (scratch, plan.egress_network):
            await runtime.remove_network(name)
        await runtime.close()


@pytest.fixture
async def stage(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Stage]:
    """A session with network=allowlist (Claude: api.anthropic.com)."""
    async for made in make_stage(tmp_path, images, "allowlist"):
        yield made


@pytest.fixture
async def open_stage(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[Stage]:
    """The same with network=open."""
    async for made in make_stage(tmp_path, images, "open"):
        yield made


def host_addresses(bridge: str) -> str:
    """The host's own IPv4 addresses a worker might try: its session bridge's (the gateway),
    docker0's and the default route's interface's. (Other bridges come and go with other tests.)"""
    if shutil.which("ip") is None:
        return ""

    def run(*args: str) -> str:
        return subprocess.run(["ip", "-4", "-o", *args], capture_output=True, text=True, check=False).stdout

    default = run("route", "show", "default").split()
    devices = [bridge, "docker0", *(default[default.index("dev") + 1 :][:1] if "dev" in default else [])]
    found = [
        field.split("/")[0] for device in devices for field in run("addr", "show", "dev", device).split()[3:4]
    ]
    return " ".join(dict.fromkeys(found))


@contextlib.asynccontextmanager
async def host_listener() -> AsyncIterator[int]:
    """A TCP listener of the host on 0.0.0.0 (what a careless service does); yields its port."""

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "0.0.0.0", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_the_allowed_host_is_reached_through_the_proxy_and_nothing_else_is(stage: Stage) -> None:
    """Through Claude's proxy: api.anthropic.com yes (CONNECT to 443, plain HTTP); any other name,
    an IP, port 80, or going around the proxy: no."""
    facts = await stage.run(
        stage.worker(PROBE, {"STANDIN_IP": stage.standin_ip, "HOST_IPS": "", "HOST_PORT": "9"})
    )
    assert facts["tunnel_allowed"] == "tunnel standin-ok"
    assert facts["urllib_allowed"] == "ok standin-ok"
    assert facts["tunnel_other"] == "refused 403 Filtered"
    assert facts["urllib_other"] == "failed HTTPError"
    assert facts["tunnel_port80"] == "refused 403 Access violation"
    assert facts["tunnel_by_ip"] == "refused 403 Filtered"
    assert facts["direct_by_ip"].startswith("blocked")
    assert facts["direct_by_name"] == "blocked gaierror"
    assert facts["model_server"] == "ok standin-ok"  # NO_PROXY: straight to it on the session network


async def test_every_refusal_is_an_egress_denied_event_of_the_worker_that_asked(stage: Stage) -> None:
    """The proxy's log becomes egress_denied events in the session log, attributed to the worker."""
    with EventWriter.open(stage.paths) as writer:
        watcher = asyncio.create_task(stage.egress.watch_denials(writer))
        await stage.run(
            stage.worker(PROBE, {"STANDIN_IP": stage.standin_ip, "HOST_IPS": "", "HOST_PORT": "9"})
        )
        for _ in range(100):
            if writer.pending >= 4:
                break
            await asyncio.sleep(0.1)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        writer.flush()
    denied = [
        (e.worker, e.data.host) for e in EventReader(stage.paths).read() if isinstance(e.data, EgressDenied)
    ]
    assert sorted(denied) == sorted([
        ("probe-t1", "other.example"), ("probe-t1", "other.example"),
        ("probe-t1", "api.anthropic.com"), ("probe-t1", stage.standin_ip),
    ])  # fmt: skip


async def test_a_host_service_on_all_interfaces_is_not_reachable_from_a_worker(stage: Stage) -> None:
    """The host rule rejects everything entering the host from the session's bridge (run as root)."""
    assert stage.egress.host_blocked, "the INPUT rule needs root and iptables; without them this is exposed"
    async with host_listener() as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # control: the listener answers
        writer.close()
        env = {
            "STANDIN_IP": stage.standin_ip,
            "HOST_IPS": host_addresses(stage.plan.bridge),
            "HOST_PORT": str(port),
        }
        facts = await stage.run(stage.worker(PROBE, env))
    probes = {key: value for key, value in facts.items() if key.startswith("host_")}
    assert len(probes) >= 2, f"too few host addresses to try: {probes}"
    assert all(value == "blocked ConnectionRefusedError" for value in probes.values()), probes


async def test_open_mode_lets_any_host_through_but_only_on_443(open_stage: Stage) -> None:
    """network=open lifts the allowlist: other.example is reached; CONNECT to port 80 is still refused."""
    env = {"STANDIN_IP": open_stage.standin_ip, "HOST_IPS": "", "HOST_PORT": "9"}
    facts = await open_stage.run(open_stage.worker(PROBE, env))
    assert facts["tunnel_other"] == "tunnel standin-ok"
    assert facts["tunnel_port80"] == "refused 403 Access violation"
    assert facts["direct_by_name"] == "blocked gaierror"


async def test_the_proxy_runs_hardened(stage: Stage) -> None:
    """The proxy: non-root, read-only root, no capabilities, no-new-privileges, on both networks."""
    client = docker.from_env()
    try:
        attrs = client.api.inspect_container(stage.egress.proxies[AgentName.CLAUDE])
    finally:
        client.close()
    host = attrs["HostConfig"]
    assert (attrs["Config"]["User"], host["ReadonlyRootfs"], host["CapDrop"], host["Privileged"]) == (
        "1000:1000", True, ["ALL"], False,
    )  # fmt: skip
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert set(attrs["NetworkSettings"]["Networks"]) == {stage.plan.network, stage.plan.egress_network}
    assert [m["Destination"] for m in attrs["Mounts"] if not m["RW"]] == ["/etc/orchestrator/proxy"]


# Each CLI's plain headless run with a dummy key and its default (real) API host. With empty
# allowlists the proxy refuses the tunnel at once, so nothing leaves the machine.
CLI_RUNS = {
    AgentName.CLAUDE: (["claude", "-p", "hi", "--output-format", "stream-json", "--verbose"],
                       {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, "ANTHROPIC_API_KEY", "api.anthropic.com"),
    AgentName.CODEX: (["codex", "exec", "--skip-git-repo-check", "--json", "hi"], {}, "OPENAI_API_KEY",
                      "api.openai.com"),
    AgentName.GEMINI: (["gemini", "-p", "hi", "-o", "stream-json"],
                       {"GEMINI_CLI_TRUST_WORKSPACE": "true", "GEMINI_CLI_NO_RELAUNCH": "1"}, "GEMINI_API_KEY",
                       "generativelanguage.googleapis.com"),
}  # fmt: skip


class Seen:
    """An ``Emitter`` that notes (worker, host) of each denial."""

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()

    def emit(self, worker: str, data: object, task_id: str | None = None) -> object:
        if isinstance(data, EgressDenied):
            self.pairs.add((worker, data.host))
        return data


async def test_each_real_cli_sends_its_model_traffic_through_its_own_proxy(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """Claude Code, Codex and Gemini CLI all honour the proxy variables: with empty allowlists each
    one's API host shows up as a denial of its own worker, on its own agent's proxy."""
    session_id = new_session_id()
    settings = Settings(_env_file=None, workspace=tmp_path / "workspace")
    for agent in CLI_RUNS:
        settings = settings.model_copy(
            update={agent: settings.agent(agent).model_copy(update={"allowed_hosts": []})}
        )
    paths = SessionPaths.of(settings.workspace, session_id)
    plan = plan_egress(session_id, settings, list(CLI_RUNS), egress_network=f"orch-{session_id}-out")
    runtime = DockerRuntime()
    egress = SessionEgress(runtime, plan, paths, image=images["proxy"])
    repo = tmp_path / "repo"
    repo.mkdir()
    seen = Seen()
    wanted = {(f"{agent}-t1", host) for agent, (_, _, _, host) in CLI_RUNS.items()}
    try:
        await egress.start()
        watcher = asyncio.create_task(egress.watch_denials(seen))
        for agent, (argv, env, key, _) in CLI_RUNS.items():
            await runtime.start(build_spec(WorkerRequest(
                image=images[str(agent)], argv=argv, session_id=session_id, worker=f"{agent}-t1", attempt=1,
                task="read-only", mounts=[], roots=SandboxRoots(repo=repo, workspace=paths.root),
                user=container_user(repo, settings), network=plan.network, agent=str(agent),
                env={**plan.worker_env(agent), **env}, secrets={key: SecretStr("dummy-key-0123456789")},
            )))  # fmt: skip
        for _ in range(240):
            if wanted <= seen.pairs:
                break
            await asyncio.sleep(0.5)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        for container in await runtime.find({SESSION_LABEL: session_id}):
            await runtime.remove(container.id)
        await egress.close()
        await runtime.remove_network(plan.egress_network)
        await runtime.close()
    assert wanted <= seen.pairs
    assert {worker for worker, _ in seen.pairs} <= {worker for worker, _ in wanted}
