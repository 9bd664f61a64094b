"""The Gemini API (``generateContent`` / ``streamGenerateContent?alt=sse``) as Gemini CLI 0.61.0 used it.

Stream: one ``data:`` chunk per text piece (no ``finishReason``), the last chunk carries the
``functionCall`` part if any, ``finishReason: "STOP"`` and the full ``usageMetadata``. Tools:
``write_file`` {file_path, content}, ``run_shell_command`` {command, description}. Side requests
(the CLI's router / next-speaker classifiers: ``generateContent`` asking for a JSON answer) get
``SIDE_ANSWER``, which satisfies every such schema the CLI sent, without using a scenario turn.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.modelserver.incoming import Incoming
from orchestrator.modelserver.scenario import ErrorReply, RawTool, RunShell, Usage, WriteFile
from orchestrator.modelserver.wire import (
    Answer,
    Reply,
    body_delay,
    new_id,
    raw_args,
    retry_headers,
    seconds_text,
    shell_args,
    sse,
)

SIDE_ANSWER = {
    "reasoning": "modelserver",
    "next_speaker": "user",
    "model_choice": "flash",
    "complexity_reasoning": "modelserver",
    "complexity_score": 1,
}
_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "The model was not found."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def parts(answer: Answer) -> tuple[list[str], dict[str, Any] | None]:
    """The text pieces and the function call of the answer."""
    text = answer.body_text
    pieces = answer.pieces(text) if text is not None else []
    tool = answer.tool
    call: dict[str, Any] | None = None
    if isinstance(tool, WriteFile):
        call = {"name": "write_file", "args": {"file_path": tool.path, "content": tool.content}}
    elif isinstance(tool, RunShell):
        call = {"name": "run_shell_command", "args": shell_args(tool)}
    elif isinstance(tool, RawTool):
        call = {"name": tool.name, "args": raw_args(tool)}
    return pieces, call


def _usage(usage: Usage, final: bool) -> dict[str, int]:
    if not final:
        return {"promptTokenCount": usage.input, "totalTokenCount": usage.input + usage.output}
    return {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": usage.output,
        "cachedContentTokenCount": usage.cached,
        "totalTokenCount": usage.input + usage.output,
    }


def _chunk(
    request: Incoming, content_parts: list[dict[str, Any]], usage: Usage, final: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": content_parts}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(usage, final),
        "modelVersion": request.model,
        "responseId": new_id("gresp"),
    }


def message(answer: Answer, request: Incoming) -> Reply:
    """The answer as SSE chunks (``streamGenerateContent``) or one response (``generateContent``)."""
    pieces, call = parts(answer)
    text_parts: list[dict[str, Any]] = [{"text": piece} for piece in pieces]
    call_parts: list[dict[str, Any]] = [{"functionCall": call}] if call else []
    if not request.stream:
        return Reply.json(200, _chunk(request, text_parts + call_parts, answer.usage, final=True))
    chunks = [[part] for part in text_parts]
    if call_parts:
        chunks.append(call_parts)
    chunks = chunks or [[{"text": ""}]]
    frames = [
        sse(_chunk(request, chunk, answer.usage, final=i == len(chunks) - 1))
        for i, chunk in enumerate(chunks)
    ]
    return Reply.stream(frames)


def side(request: Incoming) -> Reply:
    """The automatic answer to a classifier side request."""
    return Reply.json(200, _chunk(request, [{"text": json.dumps(SIDE_ANSWER)}], Usage(), final=True))


def error(spec: ErrorReply, request: Incoming | None = None) -> Reply:
    """The Google RPC error body ``{"error": {code, message, status, details?}}``."""
    status = spec.status or 503
    model = request.model if request else "gemini"
    details: list[dict[str, Any]] = []
    if status == 429:
        delay = seconds_text(body_delay(spec))
        name, default = (
            "RESOURCE_EXHAUSTED",
            (
                "You exceeded your current quota, please check your plan and billing details. "
                "\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, "
                f"limit: 10, model: {model}\nPlease retry in {delay}s."
            ),
        )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"},
        ]
    else:
        name, default = _STATUS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", "Error"))
        if status == 401:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
    body: dict[str, Any] = {"code": status, "message": spec.message or default, "status": name}
    if details:
        body["details"] = details
    return Reply.json(status, {"error": body}, retry_headers(spec))
