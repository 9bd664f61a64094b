"""Who may call the API: the bind rule at start, the bearer token on every request, ``?token=`` on SSE only."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from api.app import create_app
from api.auth import is_loopback
from api.routes.pages import dashboard
from api.sse import StreamPolicy
from api.testing import FakeSessionRunner, serve
from orchestrator.config import Settings
from orchestrator.errors import ConfigError

pytestmark = pytest.mark.timeout(60)
TOKEN = "t0ken-for-tests-0123456789"


def with_bind(settings: Settings, host: str, token: str | None) -> Settings:
    return settings.model_copy(update={"api_host": host, "api_token": SecretStr(token) if token else None})


@pytest.mark.parametrize(
    ("host", "token", "starts"),
    [
        ("127.0.0.1", None, True),
        ("127.8.9.10", None, True),
        ("::1", None, True),
        ("[::1]", None, True),
        ("localhost", None, True),
        ("0.0.0.0", None, False),
        ("::", None, False),
        ("192.168.1.20", None, False),
        ("orchestrator.example.com", None, False),
        ("0.0.0.0", TOKEN, True),
        ("127.0.0.1", TOKEN, True),
        ("0.0.0.0", "short", False),
        ("127.0.0.1", "short", False),
    ],
)
def test_bind_rule(settings: Settings, host: str, token: str | None, starts: bool) -> None:
    """Off loopback a token is required; a configured token must be long enough; loopback may be open."""
    bound = with_bind(settings, host, token)
    if starts:
        assert isinstance(create_app(bound), FastAPI)
    else:
        with pytest.raises(ConfigError, match="ORCH_API_TOKEN"):
            create_app(bound)


@given(st.ip_addresses())
def test_is_loopback_agrees_with_the_address_family(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Every literal address is loopback exactly when the ``ipaddress`` module says so."""
    assert is_loopback(str(address)) == address.is_loopback


@pytest.fixture
def runner(settings: Settings) -> FakeSessionRunner:
    return FakeSessionRunner(settings)


@pytest.fixture
def app(settings: Settings, runner: FakeSessionRunner) -> FastAPI:
    policy = StreamPolicy(ping_s=0.2, poll_s=0.05)
    return create_app(with_bind(settings, "0.0.0.0", TOKEN), runner, stream_policy=policy)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {}, 401),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, {}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, {}, 401),
        ({"Authorization": TOKEN}, {}, 401),
        ({}, {"token": TOKEN}, 401),  # a token in the URL is for the stream only
        (BEARER, {"token": TOKEN}, 401),
        (BEARER, {}, 200),
    ],
)
async def test_api_routes_need_the_bearer_header(client: httpx.AsyncClient, headers: dict[str, str],
                                                 params: dict[str, str], status: int) -> None:  # fmt: skip
    """Only ``Authorization: Bearer <token>`` opens an API route; the query token is refused there."""
    response = await client.get("/api/sessions", headers=headers, params=params)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_every_change_needs_the_token(client: httpx.AsyncClient, runner: FakeSessionRunner) -> None:
    """Starting, deciding, resuming and stopping are all refused without the token, before any check."""
    sid = await runner.create()
    posts = ["/api/sessions", f"/api/sessions/{sid}/decision", f"/api/sessions/{sid}/resume",
             f"/api/sessions/{sid}/stop", f"/api/sessions/{sid}/workers/codex-t1/stop"]  # fmt: skip
    statuses = [(await client.post(path, json={})).status_code for path in posts]
    reads = [f"/api/sessions/{sid}", f"/api/sessions/{sid}/events", f"/api/sessions/{sid}/report"]
    statuses += [(await client.get(path)).status_code for path in reads]
    assert statuses == [401] * 8


async def test_health_dashboard_and_openapi_stay_open(client: httpx.AsyncClient) -> None:
    """The health check, the (data-free) page and the API description need no token."""
    paths = ["/api/health", "/", "/openapi.json"]
    assert [(await client.get(p)).status_code for p in paths] == [200, 200, 200]


async def test_the_stream_accepts_the_token_in_the_url(app: FastAPI, runner: FakeSessionRunner) -> None:
    """EventSource cannot set headers: the stream takes ``?token=``; a wrong or missing one is a 401."""
    sid = await runner.create()
    await runner.finish(sid)
    url = f"/api/sessions/{sid}/stream"
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        missing = await http.get(url)
        wrong = await http.get(url, params={"token": "wrong-token-wrong-token"})
        by_query = await http.get(url, params={"token": TOKEN})
        by_header = await http.get(url, headers=BEARER)
    assert [missing.status_code, wrong.status_code] == [401, 401]
    assert by_query.status_code == 200
    assert "event: session_finished" in by_query.text
    assert by_header.text.count("\n\n") == by_query.text.count("\n\n")


async def test_loopback_without_a_token_is_open(settings: Settings) -> None:
    """Bound to loopback with no token configured, requests need no header."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/api/sessions")).status_code == 200


async def test_the_page_allows_only_its_own_inline_script(client: httpx.AsyncClient) -> None:
    """The dashboard's CSP names the hash of its one script and allows no other origin."""
    response = await client.get("/")
    csp = response.headers["Content-Security-Policy"]
    html, expected_csp = dashboard()
    assert csp == expected_csp
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", csp)) == 1
    assert "http" not in csp
    assert "<script src" not in html
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # no CDN, no external network
