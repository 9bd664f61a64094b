"""Helpers for tests that drive a real server: its event stream, its sessions' containers.

``read_sse`` parses ``text/event-stream`` as a browser's EventSource does (fields, blank-line
boundaries, multi-line data), ``wait_for_status`` polls ``GET /api/sessions/{id}``, and
``remove_sessions`` removes every container and network of the sessions in a workspace by their
``orchestrator.session`` label, whatever the test left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

from orchestrator.runtime.protocol import SESSION_LABEL
from orchestrator.sessions import network_name


@dataclass(frozen=True)
class SseMessage:
    """One server-sent event: ``id`` is the event's seq (None on ping and on the final error)."""

    event: str
    data: str
    id: int | None

    def json(self) -> Any:
        return json.loads(self.data)


async def read_sse(response: httpx.Response) -> AsyncIterator[SseMessage]:
    """The messages of an open ``text/event-stream`` response, in order, until it ends."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                raw_id = fields.get("id")
                yield SseMessage(
                    fields.get("event", "message"), "\n".join(data), int(raw_id) if raw_id else None
                )
            fields, data = {}, []
            continue
        if line.startswith(":"):  # a comment
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


async def wait_for_status(
    client: httpx.AsyncClient, session_id: str, wanted: set[str], timeout_s: float
) -> dict[str, Any]:
    """The session's state once its status is one of ``wanted`` (an assertion error after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        answer = await client.get(f"/api/sessions/{session_id}")
        body: dict[str, Any] = answer.json()
        status = body.get("status")
        if status in wanted:
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"session {session_id} is {status} after {timeout_s:g} s, not one of {sorted(wanted)}"
    )


def sessions_in(workspace: Path) -> list[str]:
    """The ids of the sessions recorded in ``workspace``."""
    if not workspace.is_dir():
        return []
    return sorted(p.name for p in workspace.iterdir() if (p / "events.jsonl").exists())


def running_containers(session_id: str) -> list[str]:
    """Names of ``session_id``'s containers that run (found by label)."""
    client = docker.from_env()
    try:
        found = client.containers.list(filters={"label": f"{SESSION_LABEL}={session_id}"})
        return sorted(c.name for c in found)
    finally:
        client.close()


async def settled_containers(session_id: str, timeout_s: float = 60.0) -> list[str]:
    """``running_containers`` once it is empty, or after ``timeout_s``: a session removes its model
    server and proxies only after it recorded ``session_finished``."""
    deadline = time.monotonic() + timeout_s
    while (names := await asyncio.to_thread(running_containers, session_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return names


def remove_sessions(workspace: Path) -> None:
    """Every container and the network of each session in ``workspace``, by label and name."""
    client = docker.from_env()
    try:
        for session_id in sessions_in(workspace):
            for container in client.containers.list(
                all=True, filters={"label": f"{SESSION_LABEL}={session_id}"}
            ):
                with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile
                    container.remove(force=True)
            for network in client.networks.list(names=[network_name(session_id)]):
                with contextlib.suppress(docker.errors.NotFound):
                    network.remove()
    finally:
        client.close()
