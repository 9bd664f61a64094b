"""Scenario files: what the scripted model server answers, turn by turn.

A scenario is a list of *scripts*. A script has an optional matcher (``agent``, ``prompt``,
``system``) and a list of turns consumed in order. A request is served by the first script, in
file order, that matches it and still has turns left. Top-level ``[[turn]]`` tables form one more
script, named ``main``, that matches every request and is tried last. The format is documented with
examples in ``README.md`` next to this module; ``scenario_toml.load_scenario`` reads a file and
validates it strictly, raising ``ScenarioError`` naming the file, the script, the turn and the key.

Standard library only: this package runs in an image that has nothing but python3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AGENTS = ("claude", "codex", "gemini")
ERROR_NAMES: dict[str, int] = {
    "bad_request": 400,
    "auth": 401,
    "forbidden": 403,
    "rate_limit": 429,
    "server": 500,
    # 529 for the Anthropic API, 503 for OpenAI and Gemini: resolved by the wire module.
    "overloaded": 0,
}
BUILTIN_VARS = ("cwd",)
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CutMode = Literal["abort", "eof"]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, the place and the fix."""


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``path``: Claude ``Write``, Codex ``apply_patch``, Gemini ``write_file``."""

    path: str
    content: str


@dataclass(frozen=True)
class RunShell:
    """Run ``command``: Claude ``Bash``, Codex ``exec_command``, Gemini ``run_shell_command``."""

    command: str


@dataclass(frozen=True)
class RawTool:
    """A tool call passed through as is: ``input`` is the arguments (or Codex custom-tool text)."""

    name: str
    input: dict[str, Any] | str


ToolCall = WriteFile | RunShell | RawTool


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error with the vendor's body. ``status`` 0 means "overloaded" (529 or 503)."""

    status: int
    retry_after: float | None = None
    retry_after_body: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class Usage:
    input: int = 10
    output: int = 20
    cached: int = 0


@dataclass(frozen=True)
class Turn:
    """One scripted answer. ``hang``/``error`` replace the answer; the rest build one message.

    ``retry_failed`` (tool-call turns only): while the CLI reports that this turn's tool call
    failed, the script serves this turn again instead of its next one, at most that many times,
    each time after ``retry_delay`` seconds.
    """

    number: int
    text: str | None = None
    json: Any = None
    tool: ToolCall | None = None
    error: ErrorReply | None = None
    hang: float | None = None
    cut: CutMode | None = None
    cut_after: int | None = None
    delay: float = 0.0
    repeat: int | None = 1
    chunks: int | None = None
    usage: Usage = field(default_factory=Usage)
    capture: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    retry_failed: int = 0
    retry_delay: float = 0.0

    @property
    def kind(self) -> str:
        """A short label for logs: error:429, hang, tool:write, json, text (+ :cut-abort)."""
        if self.error is not None:
            return f"error:{self.error.status or 'overloaded'}"
        if self.hang is not None:
            return "hang"
        if self.tool is not None:
            tool = self.tool
            name = (
                tool.name
                if isinstance(tool, RawTool)
                else "write"
                if isinstance(tool, WriteFile)
                else "shell"
            )
            label = f"tool:{name}"
        else:
            label = "json" if self.json is not None else "text"
        return f"{label}:cut-{self.cut}" if self.cut else label


@dataclass(frozen=True)
class Script:
    """Turns for the requests that match ``agent`` and contain ``prompt``/``system``."""

    name: str
    turns: tuple[Turn, ...]
    agent: str | None = None
    prompt: str | None = None
    system: str | None = None


@dataclass(frozen=True)
class Scenario:
    scripts: tuple[Script, ...]
    description: str = ""
    cwd: str | None = None
    auto_side_requests: bool = True
    source: str = "<memory>"
