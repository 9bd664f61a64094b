"""Pure rules of the egress allowlist: names, hosts, the proxy's config, the workers' env, the denial log.

No I/O here: ``orchestrator.egress`` starts the networks and proxies these rules describe.

- ``plan_egress(session_id, settings, agents, direct=...)`` -> ``EgressPlan``: everything about one
  session's egress as data (network names, the bridge name, one allowlist per agent, the names
  workers reach directly such as the scripted model server).
- ``render_proxy_config(hosts)`` -> the tinyproxy files of one agent's proxy.
- ``DenialParser.feed(line)`` -> ``Denial | None``: the proxy's log lines that refused a request.
- ``egress_notice(settings, agents)`` -> the event that records a session run without the allowlist.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import Field

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.models.common import AgentName, Model
from orchestrator.models.events import EgressDenied, EgressOpened
from orchestrator.paths import validate_session_id

PROXY_PORT: Final = 8888
PROXY_CONFIG_DIR: Final = "/etc/orchestrator/proxy"
PROXY_CONFIG: Final = f"{PROXY_CONFIG_DIR}/tinyproxy.conf"
PROXY_ALLOW: Final = f"{PROXY_CONFIG_DIR}/allow"
EGRESS_NETWORK: Final = "orch-egress"
CONNECT_PORTS: Final = (443,)
NO_PROXY_ALWAYS: Final = ("localhost", "127.0.0.1")
AGENTS: Final = tuple(AgentName)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_MAX_HOST = 253

EgressMode = Literal["allowlist", "open", "none"]


def agent_name(name: str) -> AgentName:
    """``name`` as an ``AgentName``; anything else is a ``ConfigError`` listing the agents."""
    try:
        return AgentName(name)
    except ValueError:
        raise ConfigError(f"unknown agent {name!r}: expected one of {', '.join(AGENTS)}") from None


def check_host(host: str, where: str) -> str:
    """``host`` lowercased if it is a DNS name (``api.openai.com``) or a ``*.``-wildcard of one.

    Anything else (a URL, a port, a path, spaces, a regex) is a ``ConfigError`` naming ``where``
    it came from (the setting to fix).
    """
    name = host.strip().lower() if isinstance(host, str) else ""
    if not name or len(name) > _MAX_HOST or not HOST_RE.fullmatch(name):
        raise ConfigError(
            f"host {host!r} in {where} is not a host name: give bare names such as "
            "api.example.com or *.example.com (no scheme, port or path)"
        )
    return name


def host_pattern(host: str) -> str:
    """The anchored POSIX ERE that tinyproxy's filter matches ``host`` (already checked) with."""
    if host.startswith("*."):
        return r"^([a-z0-9-]+\.)+" + re.escape(host[2:]).replace(r"\-", "-") + "$"
    return "^" + re.escape(host).replace(r"\-", "-") + "$"


def base_url_host(base_url: str | None) -> str | None:
    """The host of an agent's ``base_url`` (None when unset or without a host)."""
    if not base_url:
        return None
    try:
        return urlsplit(base_url).hostname
    except ValueError:
        return None


def bridge_name(session_id: str) -> str:
    """The Linux bridge of a session's network: 15 characters (the kernel's limit), stable per session."""
    return "orch" + hashlib.sha256(validate_session_id(session_id).encode()).hexdigest()[:11]


def render_proxy_config(hosts: Sequence[str] | None) -> dict[str, str]:
    """tinyproxy's files for one agent: ``tinyproxy.conf`` and, unless ``hosts`` is None (open), ``allow``.

    The proxy listens on ``PROXY_PORT``, tunnels CONNECT only to ``CONNECT_PORTS``, logs every
    request (level Info) to stdout, and with an allowlist refuses every host not on it (including
    any IP address) before resolving it. An empty allowlist refuses everything.
    """
    lines = [
        "# Rendered by orchestrator/egress_rules.py for one (session, agent); do not edit.",
        f"Port {PROXY_PORT}",
        "Timeout 600",
        "MaxClients 64",
        "LogLevel Info",
        "DisableViaHeader Yes",
        *(f"ConnectPort {port}" for port in CONNECT_PORTS),
    ]
    files: dict[str, str] = {}
    if hosts is not None:
        lines += ["FilterType ere", "FilterURLs Off", "FilterCaseSensitive Off", "FilterDefaultDeny Yes"]
        lines.append(f'Filter "{PROXY_ALLOW}"')
        files["allow"] = "".join(f"{host_pattern(host)}\n" for host in hosts)
    files["tinyproxy.conf"] = "\n".join(lines) + "\n"
    return files


class EgressPlan(Model):
    """One session's egress, as data. ``orchestrator.egress.start_egress`` makes it real.

    - ``network``: the session's internal network (workers, proxies, the model server), on the
      Linux bridge ``bridge``; ``egress_network``: the non-internal network only proxies join.
    - ``allowlists``: the hosts each agent's proxy lets through (recorded in ``open`` mode, where
      the proxies filter nothing; empty in ``none`` mode, where there are no proxies).
    - ``direct``: names workers reach without the proxy (the scripted model server's container).
    """

    session_id: str
    mode: EgressMode
    network: str
    bridge: str
    egress_network: str = EGRESS_NETWORK
    allowlists: dict[AgentName, tuple[str, ...]] = Field(default_factory=dict)
    direct: tuple[str, ...] = ()

    @property
    def agents(self) -> tuple[AgentName, ...]:
        """The agents that get a proxy (none in ``none`` mode)."""
        return () if self.mode == "none" else tuple(self.allowlists)

    def proxy_name(self, agent: AgentName) -> str:
        """The container name of ``agent``'s proxy; workers reach it by this name."""
        return f"orch-{self.session_id}-proxy-{agent}"

    def proxy_url(self, agent: AgentName) -> str:
        return f"http://{self.proxy_name(agent)}:{PROXY_PORT}"

    def proxy_files(self, agent: AgentName) -> dict[str, str]:
        """The rendered config of ``agent``'s proxy (no filter in ``open`` mode)."""
        return render_proxy_config(None if self.mode == "open" else self.allowlists[agent])

    def worker_env(self, agent: AgentName) -> dict[str, str]:
        """Plain env for ``agent``'s workers: the proxy variables every CLI honours, or {} in ``none`` mode.

        Claude Code (native) and Codex (Rust) read ``HTTPS_PROXY``/``NO_PROXY``; Gemini CLI passes
        them to undici's ``EnvHttpProxyAgent``; curl reads the lower-case names; Node >= 22.21 reads
        them with ``NODE_USE_ENV_PROXY=1`` (older Node ignores it).
        """
        if agent not in self.agents:
            return {}
        url = self.proxy_url(agent)
        no_proxy = ",".join(dict.fromkeys([*NO_PROXY_ALWAYS, *self.direct]))
        return {
            "HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy, "NODE_USE_ENV_PROXY": "1",
        }  # fmt: skip


def plan_egress(
    session_id: str,
    settings: Settings,
    agents: Iterable[AgentName | str],
    *,
    direct: Sequence[str] = (),
    egress_network: str = EGRESS_NETWORK,
) -> EgressPlan:
    """The egress of a session running ``agents`` under ``settings.network``.

    An agent's allowlist is its ``allowed_hosts`` plus the host of its ``base_url`` (a gateway),
    unless that host is in ``direct`` (the scripted model server, reached on the internal network).
    Raises ``InvalidIdentifier`` for a bad session id and ``ConfigError`` for a bad host.
    """
    validate_session_id(session_id)
    reached = tuple(check_host(name, "the names workers reach directly") for name in direct)
    allowlists: dict[AgentName, tuple[str, ...]] = {}
    for agent in dict.fromkeys(agent_name(name) for name in agents):
        conf = settings.agent(agent)
        setting = f"ORCH_{agent.upper()}__ALLOWED_HOSTS"
        hosts = [check_host(host, setting) for host in conf.allowed_hosts]
        gateway = base_url_host(conf.base_url)
        if gateway and gateway.lower() not in reached:
            hosts.append(check_host(gateway, f"ORCH_{agent.upper()}__BASE_URL"))
        allowlists[agent] = tuple(dict.fromkeys(hosts))
    mode: EgressMode = settings.network
    return EgressPlan(
        session_id=session_id, mode=mode, network=f"orch-{session_id}", bridge=bridge_name(session_id),
        egress_network=egress_network, allowlists={} if mode == "none" else allowlists, direct=reached,
    )  # fmt: skip


def egress_notice(settings: Settings, agents: Iterable[AgentName | str]) -> EgressOpened | None:
    """The event to record at session start when the allowlist is lifted (``network=open``), else None."""
    if settings.network != "open":
        return None
    return EgressOpened(
        agents=list(dict.fromkeys(agent_name(name) for name in agents)),
        detail="network=open: the agents' proxies let every host through (CONNECT to port 443 only)",
    )


# -- the proxy's log --------------------------------------------------------------------------
_LINE = re.compile(r"^(?P<level>[A-Z]+)\s+\w{3}\s+\d+\s+[\d:.]+\s+\[\d+\]:\s(?P<message>.*)$")
_CONNECT = re.compile(r"^Connect \(file descriptor (?P<fd>\d+)\): (?P<client>\S+)")
_REQUEST = re.compile(r"^Request \(file descriptor (?P<fd>\d+)\): (?P<method>[A-Z]+) (?P<target>\S+)")
_FILTERED = re.compile(r'^Proxying refused on filtered domain "(?P<host>[^"]*)"')
_PORT = re.compile(r"^Refused CONNECT method on port (?P<port>\d+)")
_MAX_TRACKED = 1024


@dataclass(frozen=True, slots=True)
class Denial:
    """One refused request: the host asked for, the client's address if known, and what happened."""

    host: str
    client: str | None
    detail: str

    def event(self) -> EgressDenied:
        return EgressDenied(host=self.host, detail=self.detail)


def _target_host(method: str, target: str) -> tuple[str, int | None]:
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        return (host or target), int(port) if port.isdigit() else None
    try:
        parts = urlsplit(target)
        return parts.hostname or target, parts.port
    except ValueError:
        return target, None


class DenialParser:
    """Reads tinyproxy's log (level Info) line by line and reports each refused request.

    tinyproxy serves connections in threads and names the request only on its ``Request`` line,
    so a refusal is matched to the latest request for the same host (or, for a refused CONNECT
    port, the latest CONNECT to that port). ``feed`` never raises.
    """

    def __init__(self, agent: str) -> None:
        self._agent = agent
        self._clients: dict[str, str] = {}
        self._requests: list[tuple[str, str, str, int | None, str]] = []  # fd, method, host, port, target

    def feed(self, line: str) -> Denial | None:
        found = _LINE.match(line.strip()) if isinstance(line, str) else None
        if found is None:
            return None
        message = found.group("message")
        if connect := _CONNECT.match(message):
            self._clients[connect.group("fd")] = connect.group("client")
        elif request := _REQUEST.match(message):
            method, target = request.group("method"), request.group("target")
            host, port = _target_host(method, target)
            self._requests.append((request.group("fd"), method, host.lower(), port, target))
            del self._requests[:-_MAX_TRACKED]
        elif filtered := _FILTERED.match(message):
            host = filtered.group("host")
            seen = self._latest(lambda r: r[2] == host.lower())
            what = f"{seen[1]} {seen[4]}" if seen else host
            return Denial(
                host, self._client(seen), f"{what} refused: {host} is not on the {self._agent} allowlist"
            )
        elif port_refused := _PORT.match(message):
            port = int(port_refused.group("port"))
            seen = self._latest(lambda r: r[1] == "CONNECT" and r[3] == port)
            allowed = ", ".join(str(p) for p in CONNECT_PORTS)
            return Denial(
                seen[2] if seen else f"*:{port}",
                self._client(seen),
                f"CONNECT {seen[4] if seen else f'to port {port}'} refused: tunnels go to port {allowed} only",
            )
        return None

    def _latest(
        self, match: Callable[[tuple[str, str, str, int | None, str]], bool]
    ) -> tuple[str, str, str, int | None, str] | None:
        return next((r for r in reversed(self._requests) if match(r)), None)

    def _client(self, request: tuple[str, str, str, int | None, str] | None) -> str | None:
        return self._clients.get(request[0]) if request else None
