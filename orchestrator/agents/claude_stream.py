"""``ClaudeParser``: Claude Code's ``stream-json`` (and ``json``/text) output as event payloads.

What each line yields (2.1.x; lines are recognised by their shape, never by version):

- ``system/init`` -> ``cli_session`` (the ``session_id`` for ``--resume``);
- ``system/api_retry`` -> ``cli_retry`` (the CLI retries by itself);
- ``assistant`` text / ``tool_use`` blocks -> ``message`` / ``tool_call``;
- a synthetic ``assistant`` message (model ``<synthetic>``, an ``error`` field) -> its failure class:
  ``auth_failed``, ``rate_limited``, ``api_error`` (``server_error``, ``overloaded``, ``stream_cut``,
  ``context_overflow``, ``other``);
- ``user`` ``tool_result`` -> ``tool_result``, plus ``permission_denied`` when its text is a denial;
  ``system/permission_denied`` (2.1.332) and ``result.permission_denials`` name the same denials,
  reported once per ``tool_use_id``;
- ``result`` -> ``usage`` and ``agent_result``. A ``result`` that says ``success`` while its
  ``stop_reason`` is null (the turn never got ``message_delta``/``message_stop``) is a cut stream:
  ``api_error stream_cut`` and ``agent_result ok=False``;
- stderr refusals -> ``cli_refused`` (bypass as root, unknown resume id, bad arguments, no writable TMPDIR).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from orchestrator.agents.base import Stream
from orchestrator.agents.parsing import (
    LoudLines,
    RunLedger,
    classify,
    clip,
    clip_input,
    count,
    integer,
    items,
    load_object,
    mapping,
    number,
    parse_batch,
    plain,
    safely,
    text,
    usage_of,
)
from orchestrator.models.events import (
    AgentResult,
    ApiError,
    AuthFailed,
    CliRefused,
    CliRetry,
    CliSession,
    EventData,
    Message,
    PermissionDenied,
    RateLimited,
    RefusalReason,
    ToolCall,
    ToolResult,
)

RESULT_CHARS: Final = 200_000
_DENIALS: Final = (
    "requested permissions to", "requires approval", "needs approval", "was blocked. for security",
    "has been denied", "was denied", "not enabled in this context", "is disabled for this session",
    "denied by your permission settings",
)  # fmt: skip
# Texts of rules the orchestrator set itself (--disallowedTools); no permission mode lifts them.
_POLICY: Final = ("not enabled in this context", "is disabled for this session", "denied by your rule")
_REFUSALS: Final[tuple[tuple[str, RefusalReason], ...]] = (
    ("cannot be used with root/sudo privileges", "root_bypass"),
    ("no conversation found with session id", "resume_not_found"),
    ("is already in use", "bad_arguments"),
    ("requires --verbose", "bad_arguments"),
    ("error: unknown option", "bad_arguments"),
    ("error: option", "bad_arguments"),
    ("erofs", "environment"),
)
_TEXT_ERRORS: Final = (
    "API Error:",
    "Invalid API key",
    "Not logged in",
    "Prompt is too long",
    "Credit balance",
)
# Every text ``_text`` looks for: a line with none of them (nor JSON, nor a colour code) is quiet.
_LOUD: Final = LoudLines(*(m for m, _ in _REFUSALS), *_TEXT_ERRORS)
_ERROR_CODES: Final[dict[str, Callable[[str], EventData]]] = {
    "authentication_failed": lambda d: AuthFailed(detail=d),
    "oauth_org_not_allowed": lambda d: AuthFailed(detail=d),
    "account_on_hold": lambda d: AuthFailed(detail=d),
    "verification_required": lambda d: AuthFailed(detail=d),
    "billing_error": lambda d: AuthFailed(detail=d),
    "cloud_credential_error": lambda d: AuthFailed(detail=d),
    "rate_limit": lambda d: RateLimited(detail=d),
    "overloaded": lambda d: ApiError(kind="overloaded", detail=d),
    "server_error": lambda d: ApiError(kind="server_error", detail=d),
}

PolicyRule = Callable[[str, Any], bool]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [text(block, "text") for block in content] if isinstance(content, list) else []
    return "\n".join(p for p in parts if p)


class ClaudeParser:
    """Per-run parser of Claude Code's output (see the module docstring). Never raises."""

    def __init__(self, policy_rule: PolicyRule = lambda _tool, _input: False) -> None:
        self._policy_rule = policy_rule
        self._ledger = RunLedger()
        self._tools: dict[str, tuple[str, Any]] = {}
        self._denied: set[str] = set()
        self._open: set[str] = set()
        self._retry_delay_s: float | None = None

    # -- the StreamParser protocol -----------------------------------------------------------------

    def parse_line(self, stream: Stream, line: str) -> list[EventData]:
        obj = load_object(line)
        if obj is None:
            return safely(lambda: self._text(line))
        return safely(lambda: self._json(obj))

    def parse_lines(self, stream: Stream, lines: Sequence[str]) -> list[tuple[int, list[EventData]]]:
        return parse_batch(self.parse_line, stream, lines, _LOUD)

    def parse_transcript_line(self, line: str) -> list[EventData]:
        """Claude's stdout already carries everything its session log holds: nothing to add."""
        return []

    def finish(self, exit_code: int | None) -> list[EventData]:
        out: list[EventData] = []
        if self._open and not self._ledger.result:
            out += self._ledger.fail(ApiError(kind="stream_cut", detail="a message never got message_stop"))
        return out + self._ledger.unfinished("claude", exit_code)

    # -- lines ----------------------------------------------------------------------------------------

    def _text(self, raw: str) -> list[EventData]:
        """A line of text. Each text it looks for is in ``_LOUD``, or batches would skip its lines."""
        line = plain(raw)
        low = line.lower()
        for marker, reason in _REFUSALS:
            if marker in low:
                return self._ledger.fail(CliRefused(reason=reason, detail=clip(line)))
        if line.startswith(_TEXT_ERRORS):  # --output-format text: the give-up is the only stdout line
            return self._ledger.fail(self._classify(line, None, ""))
        return []

    def _json(self, obj: dict[str, Any]) -> list[EventData]:
        kind = text(obj, "type")
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        if kind == "stream_event":
            event = mapping(obj, "event")
            message_id = text(mapping(event, "message"), "id") or "current"
            if text(event, "type") == "message_start":
                self._open.add(message_id)
            elif text(event, "type") == "message_stop":
                self._open.clear()
        return []

    def _system(self, obj: dict[str, Any]) -> list[EventData]:
        subtype = text(obj, "subtype")
        if subtype == "init" and text(obj, "session_id"):
            return [CliSession(id=text(obj, "session_id"))]
        if subtype == "api_retry":
            status, error = integer(obj, "error_status"), text(obj, "error")
            delay = number(obj, "retry_delay_ms")
            self._retry_delay_s = delay / 1000 if delay is not None and status == 429 else None
            self._ledger.retry_cause = self._classify(f"{error} (HTTP {status})", status, error)
            wait = f"; next try in {delay / 1000:.1f}s" if delay is not None else ""
            return [
                CliRetry(attempt=integer(obj, "attempt"), detail=f"{error or 'error'} {status or ''}{wait}")
            ]
        if subtype == "permission_denied":
            return self._denial(text(obj, "tool_use_id"), text(obj, "tool_name"), text(obj, "message"))
        return []

    def _assistant(self, obj: dict[str, Any]) -> list[EventData]:
        message = mapping(obj, "message")
        blocks = items(message, "content")
        if text(message, "model") == "<synthetic>" or text(obj, "error"):
            said = _content_text(blocks)
            status = integer(obj, "api_error_status")
            return self._ledger.fail(self._classify(said, status, text(obj, "error")))
        out: list[EventData] = []
        for block in blocks:
            kind = text(block, "type")
            if kind == "text" and text(block, "text"):
                out.append(Message(role="assistant", text=text(block, "text")))
            elif kind == "tool_use":
                call_id, name, tool_input = text(block, "id"), text(block, "name"), mapping(block, "input")
                self._tools[call_id] = (name, tool_input)
                out.append(ToolCall(tool=name or "unknown", input=clip_input(tool_input), call_id=call_id))
        return out

    def _user(self, obj: dict[str, Any]) -> list[EventData]:
        out: list[EventData] = []
        for block in items(mapping(obj, "message"), "content"):
            if text(block, "type") != "tool_result":
                continue
            call_id, said = text(block, "tool_use_id"), _content_text(block.get("content"))
            failed = block.get("is_error") is True
            out.append(ToolResult(call_id=call_id, ok=not failed, summary=clip(said)))
            if failed and any(marker in said.lower() for marker in _DENIALS):
                out += self._denial(call_id, self._tools.get(call_id, ("", None))[0], said)
        return out

    def _result(self, obj: dict[str, Any]) -> list[EventData]:
        self._ledger.result = True
        out: list[EventData] = []
        usage = mapping(obj, "usage")
        cached = count(usage, "cache_read_input_tokens")
        fresh = count(usage, "input_tokens") + count(usage, "cache_creation_input_tokens")
        out += usage_of(fresh + cached, count(usage, "output_tokens"), cached, number(obj, "total_cost_usd"))
        for entry in items(obj, "permission_denials"):
            if isinstance(entry, dict):
                tool_input = mapping(entry, "tool_input")
                name = text(entry, "tool_name")
                self._tools.setdefault(text(entry, "tool_use_id"), (name, tool_input))
                out += self._denial(
                    text(entry, "tool_use_id"), name, "listed in the result's permission_denials"
                )
        subtype, is_error = text(obj, "subtype"), obj.get("is_error") is True
        said = text(obj, "result") or "; ".join(e for e in items(obj, "errors") if isinstance(e, str))
        if text(obj, "terminal_reason") == "prompt_too_long":
            out += self._ledger.fail(
                ApiError(kind="context_overflow", status=integer(obj, "api_error_status"), detail=clip(said))
            )
        elif is_error and subtype in ("success", ""):  # an API failure reported as a "successful" run
            out += self._ledger.fail(self._classify(said, integer(obj, "api_error_status"), ""))
        cut = not is_error and (("stop_reason" in obj and obj["stop_reason"] is None) or bool(self._open))
        if cut:
            out += self._ledger.fail(
                ApiError(
                    kind="stream_cut",
                    detail="the model's turn ended without message_stop; its tool calls were lost",
                )
            )
        structured = obj.get("structured_output")
        out.append(
            AgentResult(
                ok=subtype == "success" and not is_error and not cut,
                text=clip(said, RESULT_CHARS),
                subtype=subtype,
                duration_ms=integer(obj, "duration_ms"),
                structured=structured if isinstance(structured, dict) else None,
            )
        )
        return out

    # -- helpers --------------------------------------------------------------------------------------

    def _denial(self, call_id: str, tool: str, said: str) -> list[EventData]:
        key = call_id or f"{tool}:{said}"
        if key in self._denied:
            return []
        self._denied.add(key)
        name, tool_input = self._tools.get(call_id, (tool, None))
        name = name or tool or "unknown"
        by_policy = any(m in said.lower() for m in _POLICY) or self._policy_rule(name, tool_input)
        return [PermissionDenied(tool=name, detail=clip(said), by_policy=by_policy)]

    def _classify(self, said: str, status: int | None, code: str) -> EventData:
        """The failure class of a give-up: what the text says first, then Claude's error code."""
        found = classify(said, status)
        if found is None and code in _ERROR_CODES:
            found = _ERROR_CODES[code](clip(said))
        if found is None:
            found = ApiError(kind="other", status=status, detail=clip(said))
        if isinstance(found, RateLimited) and found.retry_after_s is None and self._retry_delay_s is not None:
            # Claude does not quote Retry-After; its own last wait honoured it (transcripts: 3 s, 45 s).
            found = RateLimited(retry_after_s=self._retry_delay_s, detail=found.detail)
        return found
