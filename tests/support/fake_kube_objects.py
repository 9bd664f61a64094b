"""The plain parts of ``FakeKubeApi``: its records, error bodies, and the objects it only stores.

Secrets, Services and NetworkPolicies need no kubelet: ``ObjectRoutes`` creates (validating the
name and, for Secrets, the base64 data), reads, merge-patches (refusing to change an immutable
Secret's data) and deletes them, answering as the API server does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from orchestrator.runtime.fake import FakeProcess
from orchestrator.runtime.spec import StreamName
from tests.support.fake_kube_checks import valid_name

Store = dict[str, dict[tuple[str, str], dict[str, Any]]]


def rfc3339_nano(time_ns: int) -> str:
    """Go's RFC3339Nano, as the kubelet stamps log lines (trailing zeros of the fraction dropped)."""
    seconds, fraction = divmod(time_ns, 1_000_000_000)
    digits = f"{fraction:09d}".rstrip("0")
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status(code: int, reason: str, message: str, details: dict[str, str] | None = None) -> web.Response:
    """An API server error body."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}  # fmt: skip
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=code)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


@dataclass(slots=True)
class LogEntry:
    time_ns: int
    stream: StreamName
    data: bytes


@dataclass(slots=True)
class FakePod:
    """The fake's record of one pod; ``obj`` is what the API returns."""

    obj: dict[str, Any]
    log: list[LogEntry] = field(default_factory=list)
    process: FakeProcess | None = None
    kubelet: asyncio.Task[None] | None = None
    ender: asyncio.Task[None] | None = None
    grace_changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    follows_dropped: int = 0

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.obj["status"]["containerStatuses"][0]["state"])

    @property
    def ended(self) -> bool:
        return "terminated" in self.state

    def notify(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def changed(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class ObjectRoutes:
    """Create, get, merge-patch and delete for objects the fake only stores (``objects[kind]``)."""

    def __init__(self, objects: Store, meta: Callable[[dict[str, Any], str], None]) -> None:
        self.objects = objects
        self.meta = meta

    def creator(self, kind: str) -> Callable[[web.Request], Any]:
        async def create(request: web.Request) -> web.Response:
            namespace = request.match_info["ns"]
            obj = await request.json()
            name = str((obj.get("metadata") or {}).get("name", ""))
            if not valid_name(name, label=kind == "services"):
                return status(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value')
            if kind == "secrets":
                for key, value in (obj.get("data") or {}).items():
                    try:
                        base64.b64decode(value, validate=True)
                    except (binascii.Error, ValueError):
                        return status(422, "Invalid", f"data[{key}]: not base64")
            if (namespace, name) in self.objects[kind]:
                return status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            self.meta(obj, namespace)
            self.objects[kind][(namespace, name)] = obj
            return web.json_response(obj, status=201)

        return create

    def getter(self, kind: str) -> Callable[[web.Request], Any]:
        async def get(request: web.Request) -> web.Response:
            found = self.objects[kind].get((request.match_info["ns"], request.match_info["name"]))
            if found is None:
                return status(404, "NotFound", f'{kind} "{request.match_info["name"]}" not found')
            return web.json_response(found)

        return get

    def patcher(self, kind: str) -> Callable[[web.Request], Any]:
        async def patch(request: web.Request) -> web.Response:
            key = (request.match_info["ns"], request.match_info["name"])
            found = self.objects[kind].get(key)
            if found is None:
                return status(404, "NotFound", f'{kind} "{key[1]}" not found')
            change = await request.json()
            if found.get("immutable") and "data" in change:
                return status(422, "Invalid", "data: Forbidden: field is immutable when `immutable` is set")
            self.objects[kind][key] = merge(found, change)
            return web.json_response(self.objects[kind][key])

        return patch

    def deleter(self, kind: str) -> Callable[[web.Request], Any]:
        async def delete(request: web.Request) -> web.Response:
            found = self.objects[kind].pop((request.match_info["ns"], request.match_info["name"]), None)
            if found is None:
                return status(404, "NotFound", f'{kind} "{request.match_info["name"]}" not found')
            if kind == "services":
                return web.json_response(found)
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            )

        return delete


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged
