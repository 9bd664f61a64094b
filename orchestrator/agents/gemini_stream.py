"""``GeminiParser``: Gemini CLI's ``stream-json`` (and ``json``) output and its stderr as event payloads.

What each line yields (0.61; lines are recognised by their shape):

- ``init`` -> ``cli_session`` (the ``session_id`` for ``--resume``), held back until the model
  answered (an assistant message or a tool call): before that Gemini keeps no chat, and
  ``--resume`` of the id fails (``No previous sessions found``), so a restart must start afresh;
- ``message`` -> ``message`` (assistant deltas are joined until the next non-delta line);
- ``tool_use`` / ``tool_result`` -> ``tool_call`` / ``tool_result``; a ``tool_result`` error of type
  ``tool_not_registered`` for a tool the approval mode withholds (write, edit, shell, web fetch),
  ``policy_violation`` (``by_policy``: no approval mode lifts it) or a path outside the workspace
  -> ``permission_denied``; stderr ``Error executing tool ...`` names the same denial (reported once);
- ``error`` ``Model stream ended without a finish reason.`` -> ``api_error stream_cut`` (the run then
  exits 0 with ``result`` status error);
- ``result`` -> ``usage`` and ``agent_result`` (its ``text`` is the final answer), and for status
  error the failure class of ``error.message``;
- the one-document ``-o json`` answer (stdout) or error (stderr) -> the same payloads;
- stderr ``Attempt N failed ...`` -> ``cli_retry``; ``Invalid auth method selected.`` ->
  ``auth_failed``; the trust gate, and ``Error resuming session`` (``resume_not_found``) ->
  ``cli_refused``;
- ``finish(exit_code)``: an exit code that is an HTTP status mod 256 (173 = 429, 145 = 401,
  244 = 500, 247 = 503, 144 = 400) or a fatal start-up code (41 auth, 55 untrusted) names the failure
  when the stream did not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from orchestrator.agents.base import Stream
from orchestrator.agents.parsing import (
    JsonDocument,
    LoudLines,
    RunLedger,
    Sightings,
    classify,
    clip,
    clip_input,
    count,
    integer,
    load_object,
    mapping,
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
# Tools Gemini withholds below yolo/auto_edit headless: "not found" for one of them is a denial.
GATED_TOOLS: Final = frozenset(
    {"write_file", "replace", "edit", "run_shell_command", "web_fetch", "write_todos", "activate_skill"}
)
_ATTEMPT: Final = re.compile(r"Attempt (\d+) failed")
_TOOL_ERROR: Final = re.compile(r"Error executing tool (\S+?):\s*(.*)")
_AUTH_TEXTS: Final = ("invalid auth method", "please set an auth method")
_REFUSALS: Final[tuple[tuple[str, RefusalReason], ...]] = (
    ("error resuming session", "resume_not_found"),
    ("not running in a trusted directory", "untrusted_workspace"),
    ("erofs", "environment"),
)
_BAD_ARGUMENTS: Final = ("unknown argument", "unknown arguments", "not enough arguments")  # line starts
# Every text ``_text`` looks for (the literal heads of ``_ATTEMPT`` and ``_TOOL_ERROR`` first): a line
# with none of them (nor JSON, nor a colour code) is quiet.
_LOUD: Final = LoudLines(
    "Attempt ", "Error executing tool ", *_AUTH_TEXTS, *(m for m, _ in _REFUSALS), *_BAD_ARGUMENTS
)
_EXIT_CODES: Final[dict[int, EventData]] = {
    41: AuthFailed(detail="gemini exit 41: no usable auth (key, auth type in settings)"),
    42: CliRefused(reason="bad_arguments", detail="gemini exit 42: bad input"),
    44: CliRefused(reason="environment", detail="gemini exit 44: sandbox error"),
    52: CliRefused(reason="environment", detail="gemini exit 52: bad configuration"),
    55: CliRefused(reason="untrusted_workspace", detail="gemini exit 55: untrusted workspace"),
    144: ApiError(kind="other", status=400, detail="gemini exit 144: HTTP 400 from the model API"),
    145: AuthFailed(detail="gemini exit 145: HTTP 401 from the model API"),
    147: AuthFailed(detail="gemini exit 147: HTTP 403 from the model API"),
    173: RateLimited(detail="gemini exit 173: HTTP 429 from the model API"),
    244: ApiError(kind="server_error", status=500, detail="gemini exit 244: HTTP 500 from the model API"),
    247: ApiError(kind="overloaded", status=503, detail="gemini exit 247: HTTP 503 from the model API"),
}


def _denial(tool: str, error_type: str, message: str) -> PermissionDenied | None:
    """A denial from a tool error, or None for an ordinary tool failure."""
    low = message.lower()
    if error_type == "policy_violation" or "denied by policy" in low:
        return PermissionDenied(tool=tool, detail=clip(message), by_policy=True)
    not_registered = error_type == "tool_not_registered" or (not error_type and "not found" in low)
    if (not_registered and tool in GATED_TOOLS) or "path not in workspace" in low:
        return PermissionDenied(tool=tool, detail=clip(message))
    return None


class GeminiParser:
    """Per-run parser of Gemini CLI's output (see the module docstring). Never raises."""

    def __init__(self) -> None:
        self._ledger = RunLedger()
        self._seen = Sightings()
        self._documents = {"stdout": JsonDocument(), "stderr": JsonDocument()}
        self._tools: dict[str, str] = {}
        self._pending: list[str] = []
        self._answer: list[str] = []
        self._session: str | None = None

    # -- the StreamParser protocol -----------------------------------------------------------------

    def parse_line(self, stream: Stream, line: str) -> list[EventData]:
        return safely(lambda: self._line(stream, line))

    def parse_lines(self, stream: Stream, lines: Sequence[str]) -> list[tuple[int, list[EventData]]]:
        return parse_batch(self.parse_line, stream, lines, _LOUD, lambda: self._settled(stream))

    def parse_transcript_line(self, line: str) -> list[EventData]:
        """Gemini's stdout already carries what its chat file holds: nothing to add."""
        return []

    def finish(self, exit_code: int | None) -> list[EventData]:
        out = self._flush()
        if exit_code is not None and exit_code in _EXIT_CODES:
            out += self._ledger.fail(_EXIT_CODES[exit_code])
        return out + self._ledger.unfinished("gemini", exit_code)

    # -- lines ----------------------------------------------------------------------------------------

    def _settled(self, stream: Stream) -> bool:
        """No ``-o json`` document is open on ``stream``: an open one takes every line until it closes."""
        document = self._documents.get(stream)
        return document is None or not document.open

    def _line(self, stream: Stream, line: str) -> list[EventData]:
        document = self._documents[stream]
        if document.open and line[:1] not in (" ", "\t", "}"):
            # Not an indented line of a pretty-printed document: drop what was collected.
            document = self._documents[stream] = JsonDocument()
        fed = document.feed(line)
        if isinstance(fed, dict):
            return self._document(fed)
        if fed is not False:
            return []
        obj = load_object(line)
        if obj is None:
            return self._text(stream, line)
        return self._json(obj)

    def _json(self, obj: dict[str, Any]) -> list[EventData]:
        kind = text(obj, "type")
        if kind == "message":
            said = text(obj, "content")
            answered = self._answered() if text(obj, "role") == "assistant" else []
            if text(obj, "role") == "assistant" and obj.get("delta") is True:
                self._pending.append(said)
                return answered
            out = answered + self._flush()
            if said:
                out.append(Message(role=text(obj, "role") or "assistant", text=said))
                if text(obj, "role") == "assistant":
                    self._answer.append(said)
            return out
        out = self._flush()
        if kind == "init" and text(obj, "session_id"):
            self._session = text(obj, "session_id")
        elif kind == "tool_use":
            tool_id, tool = text(obj, "tool_id"), text(obj, "tool_name") or "unknown"
            self._tools[tool_id] = tool
            self._answer = []
            out += self._answered()
            out.append(ToolCall(tool=tool, input=clip_input(mapping(obj, "parameters")), call_id=tool_id))
        elif kind == "tool_result":
            out += self._tool_result(obj)
        elif kind == "error":
            said = text(obj, "message")
            if "without a finish reason" in said.lower():
                out += self._ledger.fail(ApiError(kind="stream_cut", detail=clip(said)))
            elif text(obj, "severity") == "error":
                out += self._ledger.fail(classify(said))
        elif kind == "result":
            out += self._result(obj)
        return out

    def _answered(self) -> list[EventData]:
        """The held-back session id, once: the model answered, so Gemini now keeps a chat to resume."""
        session, self._session = self._session, None
        return [CliSession(id=session)] if session else []

    def _tool_result(self, obj: dict[str, Any]) -> list[EventData]:
        tool_id, error = text(obj, "tool_id"), mapping(obj, "error")
        tool = self._tools.get(tool_id) or tool_id.split("__", 1)[0] or "unknown"
        ok = text(obj, "status") == "success"
        said = text(obj, "output") or text(error, "message")
        self._answer = []
        out: list[EventData] = [ToolResult(call_id=tool_id, ok=ok, summary=clip(said))]
        denial = None if ok else _denial(tool, text(error, "type"), said)
        if denial is not None and self._seen.new("stdout", tool):
            out.append(denial)
        return out

    def _result(self, obj: dict[str, Any]) -> list[EventData]:
        self._ledger.result = True
        out: list[EventData] = []
        error = mapping(obj, "error")
        if text(obj, "status") == "error" and error:
            said = text(error, "message")
            out += self._ledger.fail(classify(said) or ApiError(kind="other", detail=clip(said)))
        stats = mapping(obj, "stats")
        out += usage_of(
            count(stats, "input_tokens"), count(stats, "output_tokens"), count(stats, "cached"), None
        )
        ok = text(obj, "status") == "success" and self._ledger.failure is None
        answer = "".join(self._answer) or text(error, "message")
        out.append(AgentResult(ok=ok, text=clip(answer, RESULT_CHARS), subtype=text(obj, "status"),
                               duration_ms=integer(stats, "duration_ms")))  # fmt: skip
        return out

    def _document(self, doc: dict[str, Any]) -> list[EventData]:
        """The ``-o json`` document: ``{session_id, response, stats}`` or ``{session_id, error}``."""
        out: list[EventData] = [CliSession(id=text(doc, "session_id"))] if text(doc, "session_id") else []
        tokens = [mapping(m, "tokens") for m in mapping(mapping(doc, "stats"), "models").values()]
        out += usage_of(
            sum(count(t, "prompt") for t in tokens),
            sum(count(t, "candidates") for t in tokens),
            sum(count(t, "cached") for t in tokens),
            None,
        )
        error = mapping(doc, "error")
        if error:
            said = text(error, "message")
            out += self._ledger.fail(classify(said) or _EXIT_CODES.get(integer(error, "code") or 0))
        self._ledger.result = True
        out.append(
            AgentResult(
                ok=not error, text=clip(text(doc, "response") or text(error, "message"), RESULT_CHARS)
            )
        )
        return out

    def _text(self, stream: Stream, raw: str) -> list[EventData]:
        """A line of text. Each text it looks for is in ``_LOUD``, or batches would skip its lines."""
        line = plain(raw)
        low = line.lower()
        attempt = _ATTEMPT.search(line)
        if attempt:
            self._ledger.retry_cause = classify(line) or self._ledger.retry_cause
            return [CliRetry(attempt=int(attempt.group(1)), detail=clip(line))]
        tool_error = _TOOL_ERROR.search(line)
        if tool_error:
            tool, said = tool_error.group(1), tool_error.group(2)
            denial = _denial(tool, "", said)
            return [denial] if denial is not None and self._seen.new(stream, tool) else []
        if any(marker in low for marker in _AUTH_TEXTS):
            return self._ledger.fail(AuthFailed(detail=clip(line)))
        for marker, reason in _REFUSALS:
            if marker in low:
                return self._ledger.fail(CliRefused(reason=reason, detail=clip(line)))
        if low.startswith(_BAD_ARGUMENTS):
            return self._ledger.fail(CliRefused(reason="bad_arguments", detail=clip(line)))
        return []

    def _flush(self) -> list[EventData]:
        """The assistant deltas collected so far, as one message."""
        if not self._pending:
            return []
        said, self._pending = "".join(self._pending), []
        self._answer.append(said)
        return [Message(role="assistant", text=said)] if said else []
