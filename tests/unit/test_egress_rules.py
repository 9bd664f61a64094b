"""The pure egress rules: allowlisted hosts, the proxy's config, the workers' env, the denial log."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import Settings
from orchestrator.egress_rules import (
    CONNECT_PORTS,
    PROXY_ALLOW,
    Denial,
    DenialParser,
    EgressPlan,
    bridge_name,
    check_host,
    egress_notice,
    host_pattern,
    plan_egress,
    render_proxy_config,
)
from orchestrator.errors import ConfigError, InvalidIdentifier
from orchestrator.models.common import AgentName
from orchestrator.models.events import EgressDenied, EgressOpened

SESSION = "s0000001abc"
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
HOSTS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


def with_network(settings: Settings, network: str) -> Settings:
    return settings.model_copy(update={"network": network})


@pytest.mark.parametrize(
    ("given_host", "expected"),
    [
        ("api.anthropic.com", "api.anthropic.com"),
        ("API.OpenAI.com", "api.openai.com"),
        (" chatgpt.com ", "chatgpt.com"),
        ("*.googleapis.com", "*.googleapis.com"),
        ("modelserver", "modelserver"),
        ("10.0.0.5", "10.0.0.5"),
    ],
)
def test_good_hosts_are_kept_lowercased(given_host: str, expected: str) -> None:
    """A bare DNS name, or a ``*.`` wildcard of one, is accepted and lowercased."""
    assert expected == check_host(given_host, "ORCH_CLAUDE__ALLOWED_HOSTS")


@pytest.mark.parametrize(
    "bad",
    ["", " ", "https://api.anthropic.com", "api.anthropic.com:443", "api.anthropic.com/v1", "a b.com",
     ".*", "api..com", "-lead.com", "trail-.com", "*", "*.", "a.*.com", "x" * 64 + ".com", "ü.com",
     "host\x00.com", "api.anthropic.com\nFilter /etc/passwd"],
)  # fmt: skip
def test_garbage_hosts_are_a_config_error_naming_the_setting(bad: str) -> None:
    """A URL, a port, a path, a regex or any other garbage fails with the setting to fix."""
    with pytest.raises(ConfigError, match="ORCH_CODEX__ALLOWED_HOSTS"):
        check_host(bad, "ORCH_CODEX__ALLOWED_HOSTS")


@given(HOSTS, LABEL)
def test_an_exact_host_pattern_matches_that_host_only(host: str, other: str) -> None:
    """For all hosts: the pattern matches the host, never a longer name, a suffix trick or a subdomain."""
    pattern = re.compile(host_pattern(host))
    assert pattern.search(host)
    assert not pattern.search(f"{other}.{host}")
    assert not pattern.search(f"{host}.{other}")
    assert not pattern.search(f"{host}{other}")
    assert not pattern.search(f"{other}{host}")


@given(HOSTS, LABEL)
def test_a_wildcard_pattern_matches_subdomains_not_the_domain_itself(domain: str, label: str) -> None:
    """For all domains: ``*.d`` matches ``x.d`` and ``x.y.d`` but not ``d`` nor ``xd``."""
    pattern = re.compile(host_pattern(f"*.{domain}"))
    assert pattern.search(f"{label}.{domain}")
    assert pattern.search(f"{label}.{label}.{domain}")
    assert not pattern.search(domain)
    assert not pattern.search(f"{label}{domain}")
    assert not pattern.search(f"{label}.{domain}.evil")


def test_the_allowlist_config_denies_by_default_and_tunnels_only_to_443() -> None:
    """With hosts: a default-deny ERE filter on domains, one anchored line per host, CONNECT to 443."""
    files = render_proxy_config(["api.openai.com", "chatgpt.com"])
    config = files["tinyproxy.conf"].splitlines()
    assert {"FilterDefaultDeny Yes", "FilterType ere", "FilterURLs Off", f'Filter "{PROXY_ALLOW}"'} <= set(
        config
    )
    assert [line for line in config if line.startswith("ConnectPort")] == ["ConnectPort 443"]
    assert files["allow"] == "^api\\.openai\\.com$\n^chatgpt\\.com$\n"
    assert CONNECT_PORTS == (443,)


def test_an_empty_allowlist_refuses_everything_and_open_mode_has_no_filter() -> None:
    """No hosts: the filter stays on and empty (deny all). None (open): no filter, no allow file."""
    empty = render_proxy_config([])
    assert empty["allow"] == ""
    assert "FilterDefaultDeny Yes" in empty["tinyproxy.conf"]
    opened = render_proxy_config(None)
    assert sorted(opened) == ["tinyproxy.conf"]
    assert "Filter" not in opened["tinyproxy.conf"]


def test_the_default_plan_gives_each_agent_its_api_hosts(settings: Settings) -> None:
    """Defaults: Claude -> api.anthropic.com, Codex -> api.openai.com + chatgpt.com, Gemini -> its API."""
    plan = plan_egress(SESSION, settings, ["claude", "codex", "gemini"])
    assert plan.allowlists == {
        AgentName.CLAUDE: ("api.anthropic.com",),
        AgentName.CODEX: ("api.openai.com", "chatgpt.com"),
        AgentName.GEMINI: ("generativelanguage.googleapis.com",),
    }
    assert ("allowlist", f"orch-{SESSION}", "orch-egress") == (plan.mode, plan.network, plan.egress_network)


def test_a_gateway_base_url_is_allowlisted_and_the_model_server_is_reached_directly(
    settings: Settings,
) -> None:
    """A base_url host joins the allowlist, unless it is a direct name (the scripted model server)."""
    gateway = settings.model_copy(
        update={"claude": settings.claude.model_copy(update={"base_url": "https://GW.corp.example:8443/v1"})}
    )
    assert plan_egress(SESSION, gateway, ["claude"]).allowlists[AgentName.CLAUDE] == (
        "api.anthropic.com",
        "gw.corp.example",
    )
    scripted = settings.model_copy(
        update={"claude": settings.claude.model_copy(update={"base_url": "http://orch-ms:8080"})}
    )
    plan = plan_egress(SESSION, scripted, ["claude"], direct=["orch-ms"])
    assert plan.allowlists[AgentName.CLAUDE] == ("api.anthropic.com",)
    assert plan.worker_env(AgentName.CLAUDE)["NO_PROXY"] == "localhost,127.0.0.1,orch-ms"


def test_workers_get_the_proxy_variables_every_cli_reads(settings: Settings) -> None:
    """Upper and lower case proxy variables point at the agent's own proxy by container name."""
    plan = plan_egress(SESSION, settings, ["codex"])
    url = f"http://orch-{SESSION}-proxy-codex:8888"
    assert {
        "HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1", "NODE_USE_ENV_PROXY": "1",
    } == plan.worker_env(AgentName.CODEX)  # fmt: skip
    assert plan.worker_env(AgentName.CLAUDE) == {}  # not in this session: no proxy


@pytest.mark.parametrize(
    ("mode", "agents", "filtered", "env"),
    [
        ("allowlist", (AgentName.CLAUDE,), True, True),
        ("open", (AgentName.CLAUDE,), False, True),
        ("none", (), None, False),
    ],
)
def test_the_three_network_modes(
    settings: Settings, mode: str, agents: tuple[AgentName, ...], filtered: bool | None, env: bool
) -> None:
    """allowlist: filtered proxy; open: proxy without filter; none: no proxy and no proxy env."""
    plan = plan_egress(SESSION, with_network(settings, mode), ["claude"])
    assert agents == plan.agents
    assert env == bool(plan.worker_env(AgentName.CLAUDE))
    if filtered is not None:
        assert filtered == ("allow" in plan.proxy_files(AgentName.CLAUDE))


def test_network_open_is_recorded_as_an_event(settings: Settings) -> None:
    """network=open returns the EgressOpened payload to record; the other modes record nothing."""
    notice = egress_notice(with_network(settings, "open"), ["codex", "claude", "codex"])
    assert isinstance(notice, EgressOpened)
    assert notice.agents == [AgentName.CODEX, AgentName.CLAUDE]
    assert egress_notice(settings, ["codex"]) is None
    assert egress_notice(with_network(settings, "none"), ["codex"]) is None


@pytest.mark.parametrize("session", ["../etc", "short", "a" * 65, "with space1", ""])
def test_a_bad_session_id_never_becomes_a_network_name(settings: Settings, session: str) -> None:
    """Session ids are validated before they name a network, a bridge or a container."""
    with pytest.raises(InvalidIdentifier):
        plan_egress(session, settings, ["claude"])


@pytest.mark.parametrize("agent", ["", "Claude", "gpt", "claude "])
def test_an_unknown_agent_is_a_config_error(settings: Settings, agent: str) -> None:
    """Only claude, codex and gemini have proxies."""
    with pytest.raises(ConfigError, match="unknown agent"):
        plan_egress(SESSION, settings, [agent])


def test_a_bad_allowed_host_in_settings_fails_the_plan(settings: Settings) -> None:
    """Garbage in ORCH_GEMINI__ALLOWED_HOSTS fails before any container starts."""
    bad = settings.model_copy(
        update={"gemini": settings.gemini.model_copy(update={"allowed_hosts": ["https://x.com/"]})}
    )
    with pytest.raises(ConfigError, match="ORCH_GEMINI__ALLOWED_HOSTS"):
        plan_egress(SESSION, bad, ["gemini"])


@given(st.from_regex(r"[0-9A-Za-z_-]{8,64}", fullmatch=True))
def test_bridge_names_fit_the_kernel_limit_and_are_stable(session: str) -> None:
    """For all session ids: 15 characters at most, the same each time, distinct from the id itself."""
    name = bridge_name(session)
    assert len(name) <= 15
    assert name == bridge_name(session)
    assert re.fullmatch(r"orch[0-9a-f]{11}", name)


# Lines as tinyproxy 1.11.2 (images/proxy) printed them in a real run.
LOG = [
    "CONNECT   Nov 26 03:25:22.548 [1]: Connect (file descriptor 5): 172.18.0.3",
    "CONNECT   Nov 26 03:25:22.548 [1]: Request (file descriptor 5): CONNECT api.anthropic.com:443 HTTP/1.1",
    'CONNECT   Nov 26 03:25:22.549 [1]: Established connection to host "api.anthropic.com" using file descriptor 6.',
    "CONNECT   Nov 26 03:25:22.551 [1]: Connect (file descriptor 5): 172.18.0.4",
    "CONNECT   Nov 26 03:25:22.551 [1]: Request (file descriptor 5): CONNECT api.anthropic.com:80 HTTP/1.1",
    "INFO      Nov 26 03:25:22.551 [1]: Refused CONNECT method on port 80",
    "CONNECT   Nov 26 03:25:22.552 [1]: Connect (file descriptor 7): 172.18.0.3",
    "CONNECT   Nov 26 03:25:22.552 [1]: Request (file descriptor 7): CONNECT example.com:443 HTTP/1.1",
    'NOTICE    Nov 26 03:25:22.552 [1]: Proxying refused on filtered domain "example.com"',
    "CONNECT   Nov 26 03:25:22.557 [1]: Connect (file descriptor 5): 172.18.0.5",
    "CONNECT   Nov 26 03:25:22.557 [1]: Request (file descriptor 5): GET http://evil.example:8080/x HTTP/1.1",
    'NOTICE    Nov 26 03:25:22.557 [1]: Proxying refused on filtered domain "evil.example"',
    "INFO      Nov 26 03:25:18.021 [1]: Starting main loop. Accepting connections.",
]


def test_the_proxy_log_gives_one_denial_per_refused_request_with_its_client() -> None:
    """A filtered host and a refused CONNECT port are denials; allowed traffic and noise are not."""
    parser = DenialParser("claude")
    denials = [d for d in (parser.feed(line) for line in LOG) if d is not None]
    assert [(d.host, d.client) for d in denials] == [
        ("api.anthropic.com", "172.18.0.4"),
        ("example.com", "172.18.0.3"),
        ("evil.example", "172.18.0.5"),
    ]
    assert denials[0].detail == "CONNECT api.anthropic.com:80 refused: tunnels go to port 443 only"
    assert denials[1].detail == "CONNECT example.com:443 refused: example.com is not on the claude allowlist"
    assert EgressDenied(host="evil.example", detail=denials[2].detail) == denials[2].event()


def test_a_refusal_without_its_request_line_still_names_the_host() -> None:
    """If the request line was missed (a stream resumed mid-way), the refusal alone is enough."""
    parser = DenialParser("codex")
    denial = parser.feed('NOTICE    Nov 26 03:25:22.552 [1]: Proxying refused on filtered domain "x.example"')
    assert denial is not None
    assert (denial.host, denial.client) == ("x.example", None)


PREFIXED = st.text(max_size=120).map(lambda message: f"NOTICE    Nov 26 03:25:22.552 [1]: {message}")
REFUSALS = st.text(max_size=60).map(lambda host: f'Proxying refused on filtered domain "{host}"')


@given(
    st.lists(
        st.one_of(st.text(max_size=200), PREFIXED, REFUSALS.map(lambda m: f"NOTICE Nov 1 1:1:1.1 [9]: {m}"))
    )
)
def test_the_parser_never_raises_on_garbage(lines: list[str]) -> None:
    """For all inputs, each line gives None or a denial with a host and a detail, and never raises."""
    parser = DenialParser("gemini")
    for line in lines:
        denial = parser.feed(line)
        assert denial is None or (isinstance(denial, Denial) and bool(denial.detail))


def test_a_plan_round_trips_as_json(settings: Settings) -> None:
    """The plan is data: it can be stored with the session and read back unchanged."""
    plan = plan_egress(SESSION, settings, ["claude", "gemini"], direct=["orch-ms"])
    assert plan == EgressPlan.model_validate_json(plan.model_dump_json())
