"""``CodexParser``: ``codex exec --json`` events, its stderr and its rollout file as event payloads.

What each line yields (0.169; lines are recognised by their shape):

- ``thread.started`` -> ``cli_session`` (the ``thread_id`` for ``exec resume``);
- ``item.started`` of a command / file change / MCP call / web search -> ``tool_call``;
  ``item.completed`` of one -> ``tool_result``; ``agent_message`` / ``reasoning`` -> ``message``;
- a ``command_execution`` that is ``declined``, or failed with a sandbox text (``bwrap:``,
  ``Read-only file system``, ``Operation not permitted``) -> ``permission_denied``;
- ``error`` ``Reconnecting... N/M (reason)`` -> ``cli_retry``; any other ``error`` and ``turn.failed``
  -> the failure class once (``auth_failed``, ``rate_limited``, ``api_error``), ``turn.failed`` also
  ``agent_result ok=False``; ``turn.completed`` -> ``usage`` and ``agent_result ok=True``;
- stderr ``ERROR codex_core::tools::router: error=patch rejected ...`` / ``approval policy is Never``
  -> ``permission_denied`` (the only trace of those denials); clap and start-up errors -> ``cli_refused``.

A command the sandbox blocked on a host where bubblewrap works leaves no trace on stdout or stderr
(Codex hides sandbox-classified failures from ``--json``): only the rollout file shows its output,
which ``parse_transcript_line`` reads. A denial seen on two of the three sources is reported once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from orchestrator.agents.base import Stream
from orchestrator.agents.parsing import (
    LoudLines,
    RunLedger,
    Sightings,
    classify,
    clip,
    clip_input,
    count,
    integer,
    items,
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
    CliRefused,
    CliRetry,
    CliSession,
    EventData,
    Message,
    PermissionDenied,
    RefusalReason,
    ToolCall,
    ToolResult,
)

SHELL: Final = "exec_command"
PATCH: Final = "apply_patch"
RESULT_CHARS: Final = 200_000
_RECONNECT: Final = re.compile(r"Reconnecting\.\.\.\s*(?:(\d+)/\d+)?\s*(.*)$", re.DOTALL)
_SANDBOX: Final = ("bwrap:", "read-only file system", "operation not permitted")
# stderr / tool-output texts of a refusal by the sandbox or the approval policy, and the tool refused
_REFUSED_TOOL: Final = (
    ("patch rejected", PATCH),
    ("failed to write file", PATCH),
    ("approval policy is never", SHELL),
    ("sandbox denied exec", SHELL),
    ("exec command rejected", SHELL),
    ("writing is blocked by read-only sandbox", PATCH),
    ("writing outside of the project", PATCH),
)
_REFUSALS: Final[tuple[tuple[str, RefusalReason], ...]] = (
    ("error: unexpected argument", "bad_arguments"),
    ("error: invalid value", "bad_arguments"),
    ("error: unrecognized subcommand", "bad_arguments"),
    ("error: the argument", "bad_arguments"),
    ("is no longer supported", "bad_arguments"),
    ("not inside a trusted directory", "untrusted_workspace"),
    ("no rollout found for thread id", "resume_not_found"),
    ("thread/resume failed", "resume_not_found"),  # its session log is empty: stopped before a turn
    ("error finding codex home", "environment"),
    ("failed to initialize in-process app-server", "environment"),
)
# Every text ``_text`` looks for: a line with none of them (nor JSON, nor a colour code) is quiet.
_LOUD: Final = LoudLines(
    "failed to write file", "codex_core::", "ERROR: ", "Error: ", *(m for m, _ in _REFUSALS)
)


def _sandbox_line(output: str) -> str:
    """The first line of ``output`` that says the sandbox refused, or ''."""
    for line in output.splitlines():
        if any(marker in line.lower() for marker in _SANDBOX):
            return line
    return ""


class CodexParser:
    """Per-run parser of Codex CLI's output (see the module docstring). Never raises."""

    def __init__(self) -> None:
        self._ledger = RunLedger()
        self._seen = Sightings()
        self._started: set[str] = set()
        self._calls: dict[str, str] = {}
        self._last_message = ""

    # -- the StreamParser protocol -----------------------------------------------------------------

    def parse_line(self, stream: Stream, line: str) -> list[EventData]:
        obj = load_object(line)
        if obj is None:
            return safely(lambda: self._text(stream, line))
        return safely(lambda: self._json(obj))

    def parse_lines(self, stream: Stream, lines: Sequence[str]) -> list[tuple[int, list[EventData]]]:
        return parse_batch(self.parse_line, stream, lines, _LOUD)

    def parse_transcript_line(self, line: str) -> list[EventData]:
        """A rollout line (``{"type":"response_item","payload":{...}}``): only denials stdout hid."""
        obj = load_object(line)
        if obj is None or text(obj, "type") != "response_item":
            return []
        return safely(lambda: self._rollout(mapping(obj, "payload")))

    def finish(self, exit_code: int | None) -> list[EventData]:
        return self._ledger.unfinished("codex", exit_code)

    # -- stdout ---------------------------------------------------------------------------------------

    def _json(self, obj: dict[str, Any]) -> list[EventData]:
        kind = text(obj, "type")
        if kind == "thread.started" and text(obj, "thread_id"):
            return [CliSession(id=text(obj, "thread_id"))]
        if kind == "item.started":
            return self._call(mapping(obj, "item"))
        if kind == "item.completed":
            return self._completed(mapping(obj, "item"))
        if kind == "error":
            return self._error(text(obj, "message"))
        if kind == "turn.failed":
            said = text(mapping(obj, "error"), "message") or "the turn failed"
            out = self._ledger.fail(classify(said) or ApiError(kind="other", detail=clip(said)))
            self._ledger.result = True
            return [*out, AgentResult(ok=False, text=clip(said, RESULT_CHARS), subtype="turn.failed")]
        if kind == "turn.completed":
            usage = mapping(obj, "usage")
            self._ledger.result = True
            spent = usage_of(
                count(usage, "input_tokens"),
                count(usage, "output_tokens"),
                count(usage, "cached_input_tokens"),
                None,
            )
            return [
                *spent,
                AgentResult(ok=True, text=clip(self._last_message, RESULT_CHARS), subtype="turn.completed"),
            ]
        return []

    def _call(self, item: dict[str, Any]) -> list[EventData]:
        item_id, kind = text(item, "id"), text(item, "type")
        tool_input: dict[str, Any]
        if kind == "command_execution":
            tool, tool_input = SHELL, {"command": text(item, "command")}
        elif kind == "file_change":
            tool, tool_input = PATCH, {"changes": items(item, "changes")}
        elif kind == "mcp_tool_call":
            tool, tool_input = f"mcp:{text(item, 'server')}/{text(item, 'tool')}", mapping(item, "arguments")
        elif kind == "web_search":
            tool, tool_input = "web_search", {"query": text(item, "query")}
        else:
            return []
        if item_id in self._started:
            return []
        self._started.add(item_id)
        self._calls[item_id] = tool
        return [ToolCall(tool=tool, input=clip_input(tool_input), call_id=item_id)]

    def _completed(self, item: dict[str, Any]) -> list[EventData]:
        kind, status = text(item, "type"), text(item, "status")
        if kind == "agent_message":
            self._last_message = text(item, "text")
            return [Message(role="assistant", text=self._last_message)] if self._last_message else []
        if kind == "reasoning":
            return [Message(role="reasoning", text=text(item, "text"))] if text(item, "text") else []
        out = self._call(item)
        if kind not in ("command_execution", "file_change", "mcp_tool_call", "web_search"):
            return out
        item_id, tool = text(item, "id"), self._calls.get(text(item, "id"), SHELL)
        output = text(item, "aggregated_output") or text(mapping(item, "error"), "message")
        exit_code = integer(item, "exit_code")
        ok = status == "completed" and exit_code in (None, 0)
        out.append(ToolResult(call_id=item_id, ok=ok, summary=clip(output or status)))
        if status == "declined":
            out += self._denied("stdout", tool, f"declined: {text(item, 'command') or tool}")
        elif not ok and (evidence := _sandbox_line(output)):
            out += self._denied("stdout", tool, evidence)
        return out

    def _error(self, said: str) -> list[EventData]:
        retry = _RECONNECT.match(said)
        if retry:
            reason = retry.group(2).strip().removeprefix("(").removesuffix(")")
            self._ledger.retry_cause = classify(reason)
            attempt = int(retry.group(1)) if retry.group(1) else None
            return [CliRetry(attempt=attempt, detail=clip(reason))]
        return self._ledger.fail(classify(said) or ApiError(kind="other", detail=clip(said)))

    # -- stderr (and text mode) -----------------------------------------------------------------------

    def _text(self, stream: Stream, raw: str) -> list[EventData]:
        """A line of text. Each text it looks for is in ``_LOUD``, or batches would skip its lines."""
        line = plain(raw)
        low = line.lower()
        if low.startswith("failed to write file"):
            # the last line of a multi-line router error: apply_patch on rung 1, whose sandbox
            # cannot start inside Docker ("error=Exit code: 1", "Output:", this line)
            return self._denied(stream, PATCH, line)
        if "codex_core::" in line and " error" in low:  # a tool refused by the router
            for marker, tool in _REFUSED_TOOL:
                if marker in low:
                    return self._denied(stream, tool, line)
            if "bwrap:" in low:
                return self._denied(stream, PATCH if "patch" in low else SHELL, line)
            return []
        for marker, reason in _REFUSALS:
            if marker in low:
                return self._ledger.fail(CliRefused(reason=reason, detail=clip(line)))
        if line.startswith("ERROR: "):  # text mode prints its retries and the give-up on stderr
            return self._error(line.removeprefix("ERROR: ").strip())
        if line.startswith("Error: "):  # a fatal error; only a known failure class is worth a payload
            return self._ledger.fail(classify(line.removeprefix("Error: ")))
        return []

    # -- rollout ----------------------------------------------------------------------------------------

    def _rollout(self, payload: dict[str, Any]) -> list[EventData]:
        kind = text(payload, "type")
        if kind in ("function_call", "custom_tool_call", "local_shell_call"):
            self._calls[text(payload, "call_id")] = text(payload, "name") or SHELL
            return []
        if kind not in ("function_call_output", "custom_tool_call_output"):
            return []
        raw = payload.get("output")
        output = raw if isinstance(raw, str) else text(raw, "content")
        tool = self._calls.get(text(payload, "call_id"), SHELL)
        low = output.lower()
        for marker, _tool in _REFUSED_TOOL:
            if marker in low:
                return self._denied("transcript", tool, clip(output.strip()))
        evidence = _sandbox_line(output)
        return self._denied("transcript", tool, evidence) if evidence else []

    def _denied(self, source: str, tool: str, evidence: str) -> list[EventData]:
        if not self._seen.new(source, tool):
            return []
        return [PermissionDenied(tool=tool, detail=clip(evidence))]
