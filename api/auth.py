"""Who may call the API: the bind rule and the bearer token.

- Bound to a loopback address with no token configured, the API is open (a person on this machine).
- Bound to anything else, a token is required: ``check_bind`` raises ``ConfigError`` and the server
  does not start. A configured token is always enforced, whatever the bind.
- With a token, every ``/api/*`` route but ``GET /api/health`` needs ``Authorization: Bearer <t>``.
  The SSE route also accepts ``?token=`` (a browser's EventSource cannot set headers); anywhere
  else a token in the URL is refused (URLs end up in logs and browser history).
- ``GET /`` (the dashboard page holds no data), ``/openapi.json`` and ``/api/health`` are open.
- Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.config import Settings
from orchestrator.errors import ConfigError, Unauthorized

MIN_TOKEN = 16
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_bearer = HTTPBearer(auto_error=False, description="ORCH_API_TOKEN; needed unless bound to loopback")
_query = APIKeyQuery(name="token", auto_error=False, description="the token, for EventSource")


def is_loopback(host: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and the usual names of localhost."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> str | None:
    """The token the API enforces (None = open); ``ConfigError`` when the bind needs one it lacks."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(
            f"the API token is {len(token)} characters long; use at least {MIN_TOKEN}, e.g. "
            "ORCH_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if token is None and not is_loopback(settings.api_host):
        raise ConfigError(
            f"refusing to serve on {settings.api_host!r} without a token: anyone who can reach it could "
            "start agents. Set ORCH_API_TOKEN (or --token), or bind to 127.0.0.1"
        )
    return token


@dataclass(frozen=True)
class TokenCheck:
    """Compares a presented token with the configured one; ``token=None`` means the API is open."""

    token: str | None

    def verify(self, presented: str | None) -> None:
        if self.token is None:
            return
        if presented is None:
            raise Unauthorized("this API needs a token: send the header 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise Unauthorized("the bearer token is wrong: use the value of ORCH_API_TOKEN on the server")


def _check(request: Request) -> TokenCheck:
    check: TokenCheck = request.app.state.token_check
    return check


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Header-only auth for every API route but the stream and health."""
    check = _check(request)
    if check.token is not None and "token" in request.query_params:
        raise Unauthorized(
            "a token in the URL is accepted only by the /stream route; "
            "send 'Authorization: Bearer <token>' instead"
        )
    check.verify(credentials.credentials if credentials else None)


def require_stream_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Depends(_query)],
) -> None:
    """Auth of the SSE route: the header, or ``?token=`` for EventSource."""
    _check(request).verify(credentials.credentials if credentials else token)
