"""Every failure answers ``{"error": {"code", "message"}}`` with a fitting status; never a traceback.

- ``OrchestratorError``: its own ``http_status`` and ``code`` (``orchestrator/errors.py``).
- Validation of a body or parameter: 422 ``validation``, the message naming each bad field; a body
  that is not JSON at all: 400 ``bad_request``.
- Starlette's own HTTP errors (unknown route 404, wrong method 405): their status, same shape.
- Anything else: 500 ``internal``, logged with the traceback, the message says where to look.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from orchestrator.errors import InvalidIdentifier, OrchestratorError
from orchestrator.log import get_logger
from orchestrator.paths import validate_session_id

log = get_logger(__name__)
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type"}  # fmt: skip
_MAX_SHOWN = 5
_SESSIONS = "/api/sessions/"


def error_json(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _describe(errors: list[dict[str, object]]) -> str:
    parts = []
    for err in errors[:_MAX_SHOWN]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"  # type: ignore[attr-defined]
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(errors) - _MAX_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def _orchestrator_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestratorError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    if exc.http_status >= 500:
        log.warning("api.error", code=exc.code, message=exc.message)
    return error_json(exc.http_status, exc.code, exc.message, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [dict(e) for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_json(400, "bad_request", f"the body is not valid JSON ({_describe(errors)})")
    return error_json(422, "validation", _describe(errors))


def _bad_session_segment(path: str) -> InvalidIdentifier | None:
    """An id with a slash in it (``..%2Fx``) matches no route: still answer 400 ``invalid_id``."""
    if not path.startswith(_SESSIONS):
        return None
    segment = path[len(_SESSIONS) :].split("/", 1)[0]
    try:
        validate_session_id(segment)
    except InvalidIdentifier as err:
        return err
    return None


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers = {"Allow": allowed}
        message = f"{request.method} is not allowed here; allowed: {allowed}"
    if exc.status_code == 404 and message == "Not Found":
        bad = _bad_session_segment(request.url.path)
        if bad is not None:
            return error_json(bad.http_status, bad.code, bad.message)
        message = "no such route; the routes are listed in /openapi.json"
    return error_json(exc.status_code, code, message, headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("api.unexpected_error", path=request.url.path, error=repr(exc))
    return error_json(500, "internal", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the API's error body."""
    app.add_exception_handler(OrchestratorError, _orchestrator_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
