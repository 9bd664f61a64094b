"""``GET /`` (the dashboard) and ``GET /api/health``: open, whatever the token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import OptionalRunnerDep
from api.schemas import Health
from orchestrator import __version__
from orchestrator.log import get_logger

log = get_logger(__name__)
router = APIRouter()
DASHBOARD = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"
HEALTH_PROBE_S = 2.0


@cache
def dashboard() -> tuple[str, str]:
    """The page and its Content-Security-Policy, which allows exactly the page's inline script."""
    html = DASHBOARD.read_text(encoding="utf-8")
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, csp


@router.get("/", response_class=HTMLResponse, summary="the dashboard (one page, no build step)")
async def dashboard_page() -> HTMLResponse:
    html, csp = dashboard()
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}  # fmt: skip
    return HTMLResponse(html, headers=headers)


@router.get("/api/health", summary="liveness, and whether the container engine answers")
async def health(runner: OptionalRunnerDep) -> Health:
    docker = False
    if runner is not None:
        try:
            docker = await asyncio.wait_for(runner.runtime_ok(), HEALTH_PROBE_S)
        except TimeoutError:
            log.warning("api.health_probe_timeout", seconds=HEALTH_PROBE_S)
    return Health(status="ok", docker=docker, version=__version__)
