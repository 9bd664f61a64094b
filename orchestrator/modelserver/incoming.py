"""What the server needs to know about a model request, read from the JSON body of each API family.

``Incoming.of(family, model, body)`` pulls out the user-authored text (the ``prompt`` matcher), the
system prompt (the ``system`` matcher), the agent's working directory (to make Claude's file paths
absolute), the tool names (and kinds) the CLI declared, the tool result the request ends with (recorded
as seen), whether the conversation's latest tool result reports a failure (``tool_error``), which tool
calls the conversation carries a result for (``result_ids``; both read by ``retry_failed`` turns) and
whether the request is a Gemini side request (router/next-speaker classifier).

What counts as a failed tool result, per family (the recorded transcripts show each form):

- Anthropic: the ``tool_result`` block has ``"is_error": true`` (a denial, a refused command).
- OpenAI (Codex): the ``*_call_output`` text states a non-zero exit code (``Process exited with code
  1``, ``Exit code: 1``) or, stating none, says the call was rejected, denied, blocked, failed or
  aborted (``patch rejected: writing is blocked by read-only sandbox``). ``aborted`` is the whole
  output Codex sends for a call it never finished: stopped while a call ran (or just after the call
  arrived), ``codex exec resume`` replays the call with that stand-in. The call did not run, so it
  counts as failed and a ``retry_failed`` turn issues it again.
- Gemini: the ``functionResponse.response`` has an ``error`` key (a tool not offered, a policy
  denial) or its output states a non-zero ``Exit Code``.

A call cut short by a stop is not always sent back as a failed result. Claude Code 2.1.197 (``claude
--resume``) and Gemini CLI 0.61 (``gemini --resume``) leave it out of the resumed conversation: Claude
drops the ``tool_use`` it logged, Gemini never logged the ``functionCall`` (it logs a call once it has
finished); only the text said with the call remains, and the request carries no result for it. The
latest tool result is then an older one, or none. ``result_ids`` (the ``tool_use_id`` / ``call_id`` /
``functionResponse.id`` of every result, else the result's position) lets ``state`` see that no new
result came back. Gemini also repeats an older ``functionResponse`` (same id) on resume, so a count of
results would be fooled where the ids are not.
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
_EXIT_CODE = re.compile(r"(?:exited with code|exit code:?)\s*(-?\d+)", re.IGNORECASE)
_FAILURE_WORDS = re.compile(r"\b(?:reject(?:ed)?|denied|blocked|failed|aborted)\b", re.IGNORECASE)


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
    tool_error: bool | None = None
    result_ids: frozenset[str] = frozenset()
    side: bool = False

    @property
    def agent(self) -> str:
        return AGENT_OF[self.family]

    @classmethod
    def of(cls, family: Family, model: str, body: dict[str, Any], stream: bool | None = None) -> Incoming:
        """Read ``body`` of ``family``; ``stream`` overrides the body's flag (Gemini has it in the path)."""
        reader = {"anthropic": _anthropic, "openai": _openai, "gemini": _gemini}[family]
        user, system, tools, result, failed, ids, side = reader(body)
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
            tool_error=failed,
            result_ids=ids,
            side=side,
        )


# user text, system text, declared tools, the closing tool result, latest result failed?, the ids of
# all results, side request
Parts = tuple[str, str, dict[str, str], str | None, bool | None, frozenset[str], bool]


def output_failed(text: str) -> bool:
    """Whether a tool output text reports a failure: a stated exit code decides, else the words
    (``aborted`` included: Codex's output for a call cut short by a stop)."""
    code = _EXIT_CODE.search(text)
    if code is not None:
        return int(code.group(1)) != 0
    return _FAILURE_WORDS.search(text) is not None


def _ids(results: list[dict[str, Any]], key: str) -> frozenset[str]:
    """The call id of each result (``key``), or ``#n`` (its position) when it has none."""
    return frozenset(
        value if isinstance(value := result.get(key), str) and value else f"#{n}"
        for n, result in enumerate(results)
    )


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
    latest = [
        block
        for message in messages
        if message.get("role") == "user"
        for block in _dicts(message.get("content"))
        if block.get("type") == "tool_result"
    ]
    failed = bool(latest[-1].get("is_error")) if latest else None
    return "\n".join(user), "\n".join(system), tools, result, failed, _ids(latest, "tool_use_id"), False


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
    outputs = [item for item in listed if str(item.get("type", "")).endswith("_output")]
    failed = output_failed(_flatten(outputs[-1].get("output"))) if outputs else None
    return "\n".join(user), "\n".join(system), tools, result, failed, _ids(outputs, "call_id"), False


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
    latest = [
        part["functionResponse"]
        for content in contents
        for part in _dicts(content.get("parts"))
        if isinstance(part.get("functionResponse"), dict)
    ]
    failed = _gemini_failed(latest[-1].get("response")) if latest else None
    config = body.get("generationConfig")
    side = isinstance(config, dict) and (
        config.get("responseMimeType") == "application/json"
        or "responseJsonSchema" in config
        or "responseSchema" in config
    )
    return "\n".join(user), "\n".join(system), tools, result, failed, _ids(latest, "id"), side


def _gemini_failed(response: Any) -> bool:
    if isinstance(response, dict) and "error" in response:
        return True
    code = _EXIT_CODE.search(_flatten_gemini(response))
    return code is not None and int(code.group(1)) != 0


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
