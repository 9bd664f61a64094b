"""Unknown query parameters are refused (400), as unknown fields of a body are: a typo such as
``?limt=5`` must not be silently ignored. The known ones are those the route's OpenAPI operation
documents, including a security scheme read from the query (``?token=`` of the stream route).
``token`` is never unknown: an open server's document does not show it, yet a dashboard that kept a
token still sends it (``api.auth`` refuses a token in the URL of any other route of a secured server)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

from orchestrator.errors import UsageError

_KNOWN = "known_query"


def known_query(app: FastAPI, route: APIRoute, method: str) -> frozenset[str]:
    """The query parameter names the operation ``method`` of ``route`` documents (cached on the app)."""
    cache: dict[tuple[str, str], frozenset[str]] = app.state.__dict__.setdefault("_state", {}).setdefault(
        _KNOWN, {}
    )
    key = (route.path_format, method.lower())
    found = cache.get(key)
    if found is None:
        doc: dict[str, Any] = app.openapi()
        operation = doc.get("paths", {}).get(route.path_format, {}).get(key[1], {})
        names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        schemes = doc.get("components", {}).get("securitySchemes", {})
        for requirement in operation.get("security", []):
            for scheme in requirement:
                spec = schemes.get(scheme, {})
                if spec.get("type") == "apiKey" and spec.get("in") == "query":
                    names.add(spec["name"])
        found = cache[key] = frozenset(names)
    return found


def reject_unknown_query(request: Request) -> None:
    """A dependency of every API route: 400 ``bad_request`` naming the unknown parameters."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = known_query(request.app, route, request.method)
    unknown = sorted({name for name in request.query_params if name not in known and name != "token"})
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise UsageError(
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes: {takes}"
        )
