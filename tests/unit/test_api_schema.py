"""The OpenAPI document is the truth: schemathesis fuzzes every operation of the app in process.

Two servers: an open one (loopback, no token) and a secured one (a token; each case carries it, and
schemathesis' ``ignored_auth`` check proves requests without it are refused). Every answer must be
documented (status, media type, body schema) and no input may cause a 5xx. The sessions live in a
temporary workspace, written by a ``FakeSessionRunner``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from api.app import create_app
from api.sse import StreamPolicy
from api.testing import FakeSessionRunner
from orchestrator.config import Settings

TOKEN = "schema-token-0123456789abcdef"
_WORKSPACE = tempfile.TemporaryDirectory(prefix="orch-schema-")
_SETTINGS = Settings(_env_file=None, workspace=Path(_WORKSPACE.name))  # type: ignore[call-arg]
_POLICY = StreamPolicy(ping_s=0.2, poll_s=0.05, send_timeout_s=1.0)
OPEN = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(_SETTINGS, FakeSessionRunner(_SETTINGS), stream_policy=_POLICY)
)
_SECURED_SETTINGS = _SETTINGS.model_copy(update={"api_host": "0.0.0.0", "api_token": SecretStr(TOKEN)})
SECURED = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(_SECURED_SETTINGS, FakeSessionRunner(_SETTINGS), stream_policy=_POLICY)
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _remove_workspace() -> Iterator[None]:
    yield
    _WORKSPACE.cleanup()


@OPEN.parametrize()
@FUZZ
def test_open_server_conforms_to_its_document(case: schemathesis.Case) -> None:
    """Each answer of the open server is documented and none is a server error."""
    case.call_and_validate()


@SECURED.parametrize()
@FUZZ
def test_secured_server_conforms_and_refuses_requests_without_the_token(case: schemathesis.Case) -> None:
    """With the token every answer is documented; schemathesis also checks that auth is not ignored."""
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
