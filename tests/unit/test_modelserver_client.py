"""A small HTTP client for the model server tests, speaking each API family like its CLI does.

The other ``test_modelserver_*`` modules import ``call``, ``serving`` and the request builders from
here. Requests are shaped like the recorded ones (reference transcripts): Claude sends its working
directory in the system prompt and tools by name, Codex an ``environment_context`` message and a
custom ``apply_patch`` tool, Gemini ``contents``/``systemInstruction``/``functionDeclarations``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from orchestrator.modelserver import ModelServer, parse_scenario

CWD = "/workspace"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool = True
    events: list[tuple[str | None, Any]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def names(self) -> list[str | None]:
        """The SSE event names (Anthropic/OpenAI) or None per frame (Gemini)."""
        return [name for name, _ in self.events]


def sse_events(data: bytes) -> list[tuple[str | None, Any]]:
    """Parse SSE frames the way the CLIs' SDKs do: blank-line separated, ``event:`` + ``data:``."""
    out: list[tuple[str | None, Any]] = []
    for frame in data.decode().replace("\r\n", "\n").split("\n\n"):
        if not frame.strip():
            continue
        name = None
        payload: list[str] = []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                payload.append(line[5:].strip())
        out.append((name, json.loads("\n".join(payload))))
    return out


def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    connection: http.client.HTTPConnection | None = None,
) -> Response:
    """One request; a cut stream gives ``complete=False`` with what arrived before the cut."""
    parts = urlsplit(url)
    conn = connection or http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout
    )
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    complete = True
    try:
        raw = resp.read()
    except http.client.IncompleteRead as err:
        raw, complete = bytes(err.partial), False
    result = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw, complete)
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        result.events = sse_events(raw)
    if connection is None:
        conn.close()
    return result


@contextmanager
def serving(toml: str, **kwargs: Any) -> Iterator[ModelServer]:
    """A server on 127.0.0.1 (free port) answering from the scenario text ``toml``."""
    with ModelServer(parse_scenario(toml, source="test.toml"), **kwargs) as server:
        yield server


def claude_body(prompt: str = "make hello.txt", stream: bool = True, **extra: Any) -> dict[str, Any]:
    system = [
        {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
        {"type": "text", "text": f"# Environment\n - Primary working directory: {CWD}\n - Platform: linux"},
    ]
    tools = [{"name": name, "input_schema": {"type": "object"}} for name in ("Bash", "Edit", "Read", "Write")]
    messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return {
        "model": "claude-opus-4-8",
        "messages": messages,
        "system": system,
        "tools": tools,
        "stream": stream,
    } | extra


def codex_body(prompt: str = "make hello.txt", stream: bool = True, **extra: Any) -> dict[str, Any]:
    context = f"<environment_context>\n  <cwd>{CWD}</cwd>\n  <shell>bash</shell>\n</environment_context>"
    items = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "You are Codex."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": context}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
    ]
    tools = [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        {"type": "web_search"},
    ]
    return {"model": "gpt-5.5", "stream": stream, "input": items, "tools": tools} | extra


def gemini_body(prompt: str = "make hello.txt", **extra: Any) -> dict[str, Any]:
    context = f"<session_context>\n- **Workspace Directories:**\n  - {CWD}\n</session_context>"
    declarations = [{"name": n, "parameters": {"type": "object"}} for n in ("read_file", "write_file")]
    return {
        "contents": [{"role": "user", "parts": [{"text": context}, {"text": prompt}]}],
        "systemInstruction": {"parts": [{"text": "You are Gemini CLI."}]},
        "tools": [{"functionDeclarations": declarations}],
    } | extra


CLAUDE_PATH = "/v1/messages?beta=true"
CODEX_PATH = "/v1/responses"
GEMINI_STREAM = "/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse"
GEMINI_PLAIN = "/v1beta/models/gemini-3.8-flash:generateContent"


def test_sse_parser_reads_named_and_unnamed_frames() -> None:
    """The client parses Anthropic/OpenAI frames (event + data) and Gemini frames (data only)."""
    data = b'event: message_stop\ndata: {"type": "message_stop"}\n\ndata: {"a": 1}\r\n\r\n'
    assert sse_events(data) == [("message_stop", {"type": "message_stop"}), (None, {"a": 1})]


def test_client_reports_a_complete_plain_answer() -> None:
    """A plain JSON answer arrives complete with its status and headers."""
    with serving('[[turn]]\ntext = "hi"') as server:
        response = call(server.url, "GET", "/")
    assert (response.status, response.complete) == (200, True)
    assert response.json()["server"] == "modelserver"
