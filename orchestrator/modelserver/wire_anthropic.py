"""The Anthropic Messages API as Claude Code 2.1.197 consumed it from the recorded mock.

Stream: ``message_start``, per content block ``content_block_start`` / ``_delta`` (``text_delta``
or ``input_json_delta``) / ``_stop``, ``message_delta`` (``stop_reason``, ``usage.output_tokens``),
``message_stop``. Tools: ``Write`` {file_path (absolute), content}, ``Bash`` {command, description}.
A ``json`` answer to a request that declares the ``StructuredOutput`` tool (``claude --json-schema``)
is sent as that tool's call, which is how the CLI expects structured output.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.modelserver.incoming import Incoming
from orchestrator.modelserver.scenario import ErrorReply, RawTool, RunShell, WriteFile
from orchestrator.modelserver.wire import Answer, Reply, new_id, raw_args, retry_headers, shell_args, sse

STRUCTURED_TOOL = "StructuredOutput"
_RATE_LIMIT = (
    "This request would exceed the rate limit for your organization (modelserver-org) of 50 requests "
    "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the "
    "response headers for current usage. Please reduce the prompt length or the maximum tokens "
    "requested, or try again later."
)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "modelserver: scripted bad request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", _RATE_LIMIT),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def blocks(answer: Answer, request: Incoming) -> list[dict[str, Any]]:
    """The assistant message's content blocks, with tool inputs complete."""
    out: list[dict[str, Any]] = []
    structured = isinstance(answer.data, dict) and STRUCTURED_TOOL in request.tools
    text = None if structured else answer.body_text
    if text is not None:
        out.append({"type": "text", "text": text})
    if structured:
        out.append(_tool_use(STRUCTURED_TOOL, answer.data))
    tool = answer.tool
    if isinstance(tool, WriteFile):
        out.append(_tool_use("Write", {"file_path": answer.absolute(tool.path), "content": tool.content}))
    elif isinstance(tool, RunShell):
        out.append(_tool_use("Bash", shell_args(tool)))
    elif isinstance(tool, RawTool):
        out.append(_tool_use(tool.name, raw_args(tool)))
    return out


def _tool_use(name: str, tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": new_id("toolu"), "name": name, "input": tool_input}


def message(answer: Answer, request: Incoming) -> Reply:
    """The answer as an SSE stream (``stream: true``) or one message object."""
    content = blocks(answer, request)
    stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    usage = answer.usage
    start_usage = {
        "input_tokens": usage.input,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached,
    }
    head = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": request.model,
    }
    headers = (("request-id", new_id("req")),)
    if not request.stream:
        final = {
            **head,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**start_usage, "output_tokens": usage.output},
        }
        return Reply.json(200, final, headers)
    message_start: dict[str, Any] = {
        **head,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    frames = [sse({"type": "message_start", "message": message_start}, "message_start")]
    for index, block in enumerate(content):
        frames.extend(_block_frames(index, block, answer))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": usage.output},
    }
    frames.append(sse(delta, "message_delta"))
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return Reply.stream(frames, headers)


def _block_frames(index: int, block: dict[str, Any], answer: Answer) -> list[bytes]:
    if block["type"] == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in answer.pieces(block["text"])]
    else:
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
    frames = [
        sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")
    ]
    frames.extend(
        sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
        for d in deltas
    )
    frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    return frames


def error(spec: ErrorReply, request: Incoming | None = None) -> Reply:
    """The Anthropic error body ``{"type": "error", "error": {type, message}, "request_id"}``."""
    status = spec.status or 529
    kind, default = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", "Error"))
    request_id = new_id("req")
    body = {
        "type": "error",
        "error": {"type": kind, "message": spec.message or default},
        "request_id": request_id,
    }
    headers = [("request-id", request_id), *retry_headers(spec)]
    if status == 429:
        headers += [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ]
    return Reply.json(status, body, tuple(headers))


def count_tokens(body: dict[str, Any]) -> Reply:
    """``/v1/messages/count_tokens``: a rough count (4 characters a token) of the request."""
    return Reply.json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
