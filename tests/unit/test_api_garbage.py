"""Garbage in: every body and parameter the API takes answers 400 or 422, never a 500 or a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api.app import create_app
from api.testing import FakeSessionRunner
from orchestrator.config import Settings
from orchestrator.models import SessionPaused

pytestmark = pytest.mark.timeout(120)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def runner(settings: Settings) -> FakeSessionRunner:
    return FakeSessionRunner(settings)


@pytest.fixture
def app(settings: Settings, runner: FakeSessionRunner) -> FastAPI:
    return create_app(settings, runner)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def code_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": "p"}, (422, "validation")),  # no repo
        ({"prompt": "", "repo": "/r"}, (422, "validation")),
        ({"prompt": 42, "repo": "/r"}, (422, "validation")),
        ({"prompt": "p", "repo": "relative/path"}, (422, "validation")),
        ({"prompt": "p", "repo": "/r\u0000x"}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "agents": ["gpt"]}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "agents": ["codex", "codex"]}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "agents": []}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "max_parallel": 0}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "max_parallel": "many"}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "options": [1]}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "options": {f"k{n}": n for n in range(100)}}, (422, "validation")),
        ({"prompt": "p", "repo": "/r", "admin": True}, (422, "validation")),
        ({"prompt": "p" * 100_001, "repo": "/r"}, (422, "validation")),
        ({"prompt": "p", "repo": "/" + "r" * 5000}, (422, "validation")),
        ([], (422, "validation")),
        ("a string", (422, "validation")),
        (None, (422, "validation")),
    ],
)
async def test_start_refuses_bad_bodies(
    client: httpx.AsyncClient, body: Any, expected: tuple[int, str]
) -> None:
    """Missing or mistyped fields, unknown fields and oversized strings are 422s naming the field."""
    response = await client.post("/api/sessions", json=body)
    assert code_of(response) == expected


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000, b'{"prompt": "p", "repo": "/r"', b"",
     b'{"prompt": "p", "repo": "/r", "max_parallel": ' + b"9" * 5000 + b"}",
     b'{"prompt": "p", "repo": "/r", "max_parallel": 1e999}'],
)  # fmt: skip
async def test_start_refuses_bodies_that_are_not_json(client: httpx.AsyncClient, raw: bytes) -> None:
    """Bytes that are not JSON (truncated, binary, absurdly nested or sized, empty) are a 400 or 422."""
    response = await client.post("/api/sessions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["message"]


async def test_a_form_body_is_refused(client: httpx.AsyncClient) -> None:
    """A body sent as a form instead of JSON is refused in the error shape."""
    response = await client.post("/api/sessions", data={"prompt": "p", "repo": "/r"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] in ("bad_request", "validation")


@pytest.mark.parametrize(
    "body",
    [{}, {"action": "maybe"}, {"action": "STOP"}, {"action": "continue", "note": 5},
     {"action": "continue", "note": "n" * 10_001}, {"action": "continue", "by": "root"}, [], "stop"],
)  # fmt: skip
async def test_decision_refuses_bad_bodies(
    client: httpx.AsyncClient, runner: FakeSessionRunner, body: Any
) -> None:
    """A decision must be exactly ``{action: continue|stop, note?}``."""
    sid = await runner.create()
    await runner.emit(sid, "orchestrator", SessionPaused(reason="r"))
    response = await client.post(f"/api/sessions/{sid}/decision", json=body)
    assert code_of(response) == (422, "validation")


@given(body=JSON)
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_json_body_is_answered_without_a_server_error(client: httpx.AsyncClient, body: Any) -> None:
    """Whatever JSON is posted to start a session, the answer is 202, 400 or 422, never 5xx."""
    response = await client.post("/api/sessions", content=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code in (202, 400, 422)


@given(after=st.text(max_size=30), limit=st.text(max_size=10), kind=st.text(max_size=20))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_query_string_is_answered_without_a_server_error(
    client: httpx.AsyncClient, after: str, limit: str, kind: str
) -> None:
    """Arbitrary text in the event page's parameters is a 200 or a 4xx in the error shape."""
    response = await client.get("/api/sessions/abcdefgh12/events",
                                params={"after": after, "limit": limit, "type": kind})  # fmt: skip
    assert response.status_code in (200, 400, 404, 422)


@pytest.mark.parametrize(
    ("url", "unknown"),
    [
        ("/api/sessions?limt=5", "'limt'"),
        ("/api/sessions/abcdefgh12/events?after=0&tpye=output", "'tpye'"),
        ("/api/sessions/abcdefgh12/stream?after=0&x=1&y=2", "'x', 'y'"),
    ],
)
async def test_an_unknown_query_parameter_is_refused_naming_it_and_the_known_ones(
    client: httpx.AsyncClient, url: str, unknown: str
) -> None:
    """A typo in a parameter is a 400 that says which name is unknown, never silently ignored."""
    response = await client.get(url)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert f"unknown query parameter(s) {unknown}" in error["message"]
    assert "this route takes:" in error["message"]


async def test_the_dashboard_page_and_health_take_any_query(client: httpx.AsyncClient) -> None:
    """The page keeps its own state in the query string; only the API routes check theirs."""
    assert (await client.get("/?s=abc")).status_code == 200
    assert (await client.get("/api/health?probe=1")).status_code == 200
