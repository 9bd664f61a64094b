"""What the server needs to know about a model request, read from the JSON body of each API family.

``Incoming.of(family, model, body)`` pulls out the user-authored text (the ``prompt`` matcher), the
system prompt (the ``system`` matcher), the agent's working directory (to make Claude's file paths
absolute), the tool names (and kinds) the CLI declared, the last tool result (recorded, never interpreted) and
whether the request is a Gemini side request (router/next-speaker classifier).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["anthropic", "openai", "gemini"]
AGENT_OF: dict[str, str] = {"anthropic": "claude", "openai": "codex", "gemini": "gemini"}

# Where each CLI states its working directory (see the recorded requests in the transcripts).
_CWD_PATTERNS = (
    re.compile(r"Primary working directory: (\S+)"),  # Claude Code system prompt
    re.compile(r"<cwd>([^<]+)</cwd>"),  # Codex environment_context
    re.compile(r"Workspace Directories:\*\*\s*\n\s*- (\S+)"),  # Gemini session_context
)
_RESULT_LIMIT = 500


@dataclass(frozen=True)
class Incoming:
    family: Family
    model: str
    stream: bool
    user_text: str = ""
    system_text: str = ""
    cwd: str | None = None
    tools: Mapping[str, str] = field(default_factory=dict)
    tool_result: str | None = None
    side: bool = False

    @property
    def agent(self) -> str:
        return AGENT_OF[self.family]

    @classmethod
    def of(cls, family: Family, model: str, body: dict[str, Any], stream: bool | None = None) -> Incoming:
        """Read ``body`` of ``family``; ``stream`` overrides the body's flag (Gemini has it in the path)."""
        reader = {"anthropic": _anthropic, "openai": _openai, "gemini": _gemini}[family]
        user, system, tools, result, side = reader(body)
        cwd = _find_cwd(system + "\n" + user)
        streaming = bool(body.get("stream", False)) if stream is None else stream
        return cls(
            family=family,
            model=str(body.get("model") or model),
            stream=streaming,
            user_text=user,
            system_text=system,
            cwd=cwd,
            tools=tools,
            tool_result=result[:_RESULT_LIMIT] if result is not None else None,
            side=side,
        )


Parts = tuple[str, str, dict[str, str], str | None, bool]


def _texts(content: Any, kinds: tuple[str, ...] = ("text", "input_text")) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type", "text") in kinds and "text" in part
    ]


def _flatten(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_flatten(part.get("text", part.get("content", ""))) for part in _dicts(content))
    return "" if content is None else str(content)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _anthropic(body: dict[str, Any]) -> Parts:
    messages = _dicts(body.get("messages"))
    system = _texts(body.get("system"))
    user: list[str] = []
    for message in messages:
        if message.get("role") == "system":
            system.extend(_texts(message.get("content")))
        elif message.get("role") == "user":
            user.extend(_texts(message.get("content"), kinds=("text",)))
    tools = {str(t.get("name")): "function" for t in _dicts(body.get("tools")) if t.get("name")}
    result = None
    if messages and messages[-1].get("role") == "user":
        results = [b for b in _dicts(messages[-1].get("content")) if b.get("type") == "tool_result"]
        if results:
            result = _flatten(results[-1].get("content"))
    return "\n".join(user), "\n".join(system), tools, result, False


def _openai(body: dict[str, Any]) -> Parts:
    items = body.get("input")
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    user: list[str] = []
    if isinstance(items, str):
        user.append(items)
    for item in _dicts(items):
        if item.get("type", "message") != "message":
            continue
        role = item.get("role")
        if role in ("system", "developer"):
            system.extend(_texts(item.get("content")))
        elif role == "user":
            user.extend(_texts(item.get("content")))
    tools = {
        str(t.get("name") or t.get("type")): str(t.get("type", "function")) for t in _dicts(body.get("tools"))
    }
    result = None
    listed = _dicts(items)
    if listed and str(listed[-1].get("type", "")).endswith("_output"):
        result = _flatten(listed[-1].get("output"))
    return "\n".join(user), "\n".join(system), tools, result, False


def _gemini(body: dict[str, Any]) -> Parts:
    instruction = body.get("systemInstruction")
    system = _texts(instruction.get("parts")) if isinstance(instruction, dict) else _texts(instruction)
    contents = _dicts(body.get("contents"))
    user: list[str] = []
    for content in contents:
        if content.get("role", "user") == "user":
            user.extend(str(p["text"]) for p in _dicts(content.get("parts")) if "text" in p)
    tools: dict[str, str] = {}
    for group in _dicts(body.get("tools")):
        for decl in _dicts(group.get("functionDeclarations")):
            if decl.get("name"):
                tools[str(decl["name"])] = "function"
    result = None
    if contents and contents[-1].get("role", "user") == "user":
        responses = [
            p["functionResponse"] for p in _dicts(contents[-1].get("parts")) if "functionResponse" in p
        ]
        if responses and isinstance(responses[-1], dict):
            result = _flatten_gemini(responses[-1].get("response"))
    config = body.get("generationConfig")
    side = isinstance(config, dict) and (
        config.get("responseMimeType") == "application/json"
        or "responseJsonSchema" in config
        or "responseSchema" in config
    )
    return "\n".join(user), "\n".join(system), tools, result, side


def _flatten_gemini(response: Any) -> str:
    if isinstance(response, dict):
        for key in ("output", "error", "llmContent"):
            if key in response:
                return _flatten(response[key])
    return _flatten(response)


def _find_cwd(text: str) -> str | None:
    for pattern in _CWD_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1).strip()
    return None
