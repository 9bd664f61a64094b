"""What the vendor renderers share: the reply type, a resolved answer, ids, SSE frames, text chunks.

A ``Reply`` is either a plain body or a list of SSE frames; the HTTP handler writes it (and cuts
it when the turn says so). An ``Answer`` is a scenario turn with its placeholders filled in for one
request; ``wire_anthropic``, ``wire_openai`` and ``wire_gemini`` turn it into their API's bytes.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from dataclasses import dataclass, field
from typing import Any

from orchestrator.modelserver.scenario import ErrorReply, RawTool, RunShell, ToolCall, Usage, WriteFile

SHELL_DESCRIPTION = "Run the scripted command"
_LONG_TEXT = 60


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: ``events`` (SSE frames, sent chunked) or ``body`` (sent with a length)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    events: tuple[bytes, ...] | None = None

    @classmethod
    def json(cls, status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        data = json.dumps(value).encode()
        return cls(status, (("Content-Type", "application/json"), *headers), data)

    @classmethod
    def stream(cls, frames: list[bytes], headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        base = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))
        return cls(200, (*base, *headers), events=tuple(frames))


@dataclass(frozen=True)
class Answer:
    """A message turn resolved for one request: placeholders filled, ``cwd`` known if stated."""

    text: str | None
    data: Any
    tool: ToolCall | None
    usage: Usage = field(default_factory=Usage)
    chunks: int | None = None
    cwd: str | None = None

    @property
    def body_text(self) -> str | None:
        """The text of the message: ``text``, or the JSON document of ``data`` pretty-printed."""
        if self.data is not None:
            return json.dumps(self.data, indent=2)
        return self.text

    def pieces(self, text: str) -> list[str]:
        """``text`` split into the deltas to stream: ``chunks`` of them, or 3 for long text."""
        count = self.chunks or (3 if len(text) >= _LONG_TEXT else 1)
        count = max(1, min(count, len(text)))
        size, extra = divmod(len(text), count)
        out, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            out.append(text[start:end])
            start = end
        return out or [""]

    def absolute(self, path: str) -> str:
        """``path`` made absolute against the agent's working directory when one is known."""
        if posixpath.isabs(path) or not self.cwd:
            return path
        return posixpath.join(self.cwd, path)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; ``event`` adds the ``event:`` line (Anthropic, OpenAI), Gemini has none."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def seconds_text(value: float) -> str:
    """3.0 -> "3", 1.5 -> "1.5": how the APIs write delays."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def retry_headers(error: ErrorReply) -> tuple[tuple[str, str], ...]:
    if error.retry_after is None:
        return ()
    return (("retry-after", seconds_text(error.retry_after)),)


def body_delay(error: ErrorReply) -> float:
    """The delay the error body names: ``retry_after_body``, else ``retry_after``, else 3 s."""
    if error.retry_after_body is not None:
        return error.retry_after_body
    return error.retry_after if error.retry_after is not None else 3.0


def patch_for(tool: WriteFile) -> str:
    """The Codex ``apply_patch`` text that creates ``tool.path`` with ``tool.content``."""
    lines = tool.content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    added = "".join(f"+{line}\n" for line in lines) or "+\n"
    return f"*** Begin Patch\n*** Add File: {tool.path}\n{added}*** End Patch\n"


def raw_args(tool: RawTool) -> dict[str, Any]:
    """A raw tool's input as an object (a string input becomes ``{"input": text}``)."""
    return tool.input if isinstance(tool.input, dict) else {"input": tool.input}


def shell_args(tool: RunShell) -> dict[str, Any]:
    return {"command": tool.command, "description": SHELL_DESCRIPTION}


__all__ = [
    "Answer",
    "Reply",
    "body_delay",
    "new_id",
    "patch_for",
    "raw_args",
    "retry_headers",
    "seconds_text",
    "shell_args",
    "sse",
]
