"""The OpenAI Responses API as Codex 0.169.0 consumed it from the recorded mock.

Stream: ``response.created``, per output item ``response.output_item.added`` (the whole item),
``response.output_text.delta`` pieces for a message, ``response.output_item.done``, then
``response.completed`` with ``usage``. Every event carries ``sequence_number``. Codex 0.169.0
declares ``apply_patch`` as a *custom* (freeform) tool and ``exec_command`` {cmd} as its shell; the
renderer follows what the request declares (a function ``apply_patch``, a ``shell`` function or a
``local_shell`` tool) so older or newer Codex versions get a call they offered.
"""

from __future__ import annotations

import json
import time
from typing import Any

from orchestrator.modelserver.incoming import Incoming
from orchestrator.modelserver.scenario import ErrorReply, RawTool, RunShell, WriteFile
from orchestrator.modelserver.wire import (
    Answer,
    Reply,
    body_delay,
    new_id,
    patch_for,
    retry_headers,
    seconds_text,
    sse,
)

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "modelserver: scripted bad request"),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: dummy. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


def items(answer: Answer, request: Incoming) -> list[dict[str, Any]]:
    """The response's output items: a message for text, then the tool call."""
    out: list[dict[str, Any]] = []
    text = answer.body_text
    if text is not None:
        part = {"type": "output_text", "text": text, "annotations": []}
        out.append(
            {
                "type": "message",
                "role": "assistant",
                "id": new_id("msg"),
                "status": "completed",
                "content": [part],
            }
        )
    tool = answer.tool
    if isinstance(tool, WriteFile):
        patch = patch_for(tool)
        if request.tools.get("apply_patch") == "function":
            out.append(_function("apply_patch", {"input": patch}))
        else:
            out.append(_custom("apply_patch", patch))
    elif isinstance(tool, RunShell):
        out.append(_shell(tool.command, request))
    elif isinstance(tool, RawTool):
        raw = tool.input
        out.append(_custom(tool.name, raw) if isinstance(raw, str) else _function(tool.name, raw))
    return out


def _function(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "status": "completed",
        "call_id": new_id("call"),
        "name": name,
        "arguments": json.dumps(args),
    }


def _custom(name: str, text: str) -> dict[str, Any]:
    return {
        "type": "custom_tool_call",
        "id": new_id("ctc"),
        "status": "completed",
        "call_id": new_id("call"),
        "name": name,
        "input": text,
    }


def _shell(command: str, request: Incoming) -> dict[str, Any]:
    tools = request.tools
    if "exec_command" in tools or not tools:
        return _function("exec_command", {"cmd": command})
    if "shell" in tools:
        return _function("shell", {"command": ["bash", "-lc", command]})
    if "local_shell" in tools.values():
        return {
            "type": "local_shell_call",
            "id": new_id("lsh"),
            "call_id": new_id("call"),
            "status": "completed",
            "action": {"type": "exec", "command": ["bash", "-lc", command]},
        }
    return _function("exec_command", {"cmd": command})


def message(answer: Answer, request: Incoming) -> Reply:
    """The answer as an SSE stream (``stream: true``) or one response object."""
    output = items(answer, request)
    usage = answer.usage
    head = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "model": request.model,
    }
    final = {
        **head,
        "status": "completed",
        "output": output,
        "usage": {
            "input_tokens": usage.input,
            "input_tokens_details": {"cached_tokens": usage.cached},
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input + usage.output,
        },
    }
    headers = (("x-request-id", new_id("req")),)
    if not request.stream:
        return Reply.json(200, final, headers)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**head, "status": "in_progress", "output": []}}
    ]
    for index, item in enumerate(output):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item["type"] == "message":
            for piece in answer.pieces(item["content"][0]["text"]):
                events.append(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": piece,
                    }
                )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": final})
    frames = [sse({"type": e["type"], "sequence_number": n, **e}, e["type"]) for n, e in enumerate(events)]
    return Reply.stream(frames, headers)


def error(spec: ErrorReply, request: Incoming | None = None) -> Reply:
    """The OpenAI error body ``{"error": {message, type, param, code}}``."""
    status = spec.status or 503
    request_id = new_id("req")
    headers = [("x-request-id", request_id), *retry_headers(spec)]
    code: str | None
    if status == 429:
        model = request.model if request else "gpt-5.5"
        delay = seconds_text(body_delay(spec))
        kind, code = "requests", "rate_limit_exceeded"  # the real API's shape for an RPM limit
        default = (
            f"Rate limit reached for {model} in organization org-modelserver on requests per min (RPM): "
            f"Limit 500, Used 500, Requested 1. Please try again in {delay}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers += [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", f"{delay}s"),
        ]
    else:
        fallback = ("server_error" if status >= 500 else "invalid_request_error", None, "Error")
        kind, code, default = _ERRORS.get(status, fallback)
    body = {"error": {"message": spec.message or default, "type": kind, "param": None, "code": code}}
    return Reply.json(status, body, tuple(headers))
