"""The parsers on lines the recordings do not hold: newer CLI versions, Docker-only texts, edge cases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.agents import get_adapter
from orchestrator.agents.claude import matches_rule
from orchestrator.agents.parsing import JsonDocument, Sightings, classify, http_status, retry_after
from orchestrator.models.events import (
    AgentResult,
    ApiError,
    AuthFailed,
    CliRefused,
    CliRetry,
    EventData,
    PermissionDenied,
    RateLimited,
)


def feed(agent: str, lines: list[tuple[str, Any]], exit_code: int | None = 0) -> list[EventData]:
    """Payloads of ``lines`` (stream, dict or text) fed to a fresh parser, then its end."""
    parser = get_adapter(agent).parser()
    out: list[EventData] = []
    for stream, line in lines:
        out += parser.parse_line(stream, line if isinstance(line, str) else json.dumps(line))
    return out + parser.finish(exit_code)


def kinds(events: list[EventData]) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("exceeded retry limit, last status: 429 Too Many Requests, request id: req_1", RateLimited),
        ("You\u2019ve hit your usage limit. Upgrade to Pro", RateLimited),
        ("Quota exceeded. Check your plan and billing details.", RateLimited),
        ("[API Error: Resource has been exhausted (e.g. check quota).]", RateLimited),
        ("unexpected status 401 Unauthorized: Incorrect API key provided", AuthFailed),
        ("Missing environment variable: `OPENAI_API_KEY`.", AuthFailed),
        ("Not logged in · Please run /login", AuthFailed),
        ("Credit balance is too low", AuthFailed),
        ("Codex ran out of room in the model's context window.", ApiError),
        ("The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", ApiError),
        ("Prompt is too long · the request is ~250000 tokens", ApiError),
        ("unexpected status 503 Service Unavailable: The server is overloaded or not ready yet.", ApiError),
        ("API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)", ApiError),
        ("the assistant said hello", type(None)),
    ],
)
def test_classify(message: str, expected: type) -> None:
    """Error texts of all three CLIs (cli-contracts.md) map to one failure class, by what they say."""
    assert type(classify(message)) is expected


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Codex ran out of room in the model's context window.", "context_overflow"),
        ("unexpected status 503 Service Unavailable: overloaded", "overloaded"),
        ("API Error: 500 Internal server error.", "server_error"),
        ("stream disconnected before completion: stream closed before response.completed", "stream_cut"),
        ("API Error: Connection lost mid-response. The response above may be incomplete.", "stream_cut"),
        ("fetch failed sending request", "other"),
    ],
)
def test_api_error_kinds(message: str, kind: str) -> None:
    """API failures that are neither rate limits nor auth are told apart by kind."""
    found = classify(message)
    assert isinstance(found, ApiError)
    assert found.kind == kind


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 3s.", 3.0),
        ("Please retry in 2.5s.", 2.5),
        ("try again in 1500ms", 1.5),
        ('"retryDelay":"12s"', 12.0),
        ("Suggested retry after 7s.", 7.0),
        ("try again later", None),
    ],
)
def test_retry_after(message: str, seconds: float | None) -> None:
    """The wait a rate-limit text asks for."""
    assert retry_after(message) == seconds


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("last status: 429 Too Many Requests", 429),
        ("API Error: Request rejected (429) ·", 429),
        ('{"error":{"code":401,"message":"x"}}', 401),
        ("Attempt 1 failed with status 503. Retrying", 503),
        ("request id: req_0004290", None),
    ],
)
def test_http_status(message: str, status: int | None) -> None:
    """A status quoted as such, never any three digits in an id."""
    assert http_status(message) == status


def test_sightings_count_each_stream_once_per_fact() -> None:
    """The same denial on stdout and stderr is one; two on one stream are two."""
    seen = Sightings()
    assert [
        seen.new("stdout", "w"),
        seen.new("stderr", "w"),
        seen.new("stdout", "w"),
        seen.new("stderr", "w"),
    ] == [
        True,
        False,
        True,
        False,
    ]


def test_json_document_spanning_lines() -> None:
    """A pretty-printed document is collected line by line; other lines are not part of one."""
    doc = JsonDocument()
    assert [doc.feed("{"), doc.feed('  "a": 1'), doc.feed("}")] == [True, True, {"a": 1}]
    assert doc.feed("plain text") is False


@pytest.mark.parametrize(
    ("tool", "tool_input", "hit"),
    [
        ("Bash", {"command": "git push origin main"}, True),
        ("Bash", {"command": "make test && git push"}, True),
        ("Bash", {"command": "git pushx"}, False),
        ("Bash", {"command": "git status"}, False),
        ("WebFetch", {"url": "https://example.com"}, True),
        ("Write", {"file_path": "x"}, False),
        ("Bash", None, False),
    ],
)
def test_claude_rules(tool: str, tool_input: Any, hit: bool) -> None:
    """The default --disallowedTools rules, matched as Claude does (every sub-command of a shell line)."""
    assert matches_rule(tool, tool_input) is hit


INIT = {"type": "system", "subtype": "init", "session_id": "s-1"}


def test_claude_2_1_332_denial_event_is_reported_once() -> None:
    """2.1.332 names a denial three times (system event, tool_result, result list): one event."""
    events = feed(
        "claude",
        [
            ("stdout", INIT),
            ("stdout", {"type": "assistant", "message": {"content": [
                {"type": "tool_use", "id": "t1", "name": "Write", "input": {"file_path": "/w/x"}}]}}),
            ("stdout", {"type": "system", "subtype": "permission_denied", "tool_name": "Write", "tool_use_id": "t1",
                        "message": "Claude requested permissions to write to /w/x, but you haven't granted it yet."}),
            ("stdout", {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1",
                        "is_error": True, "content": "Claude requested permissions to write to /w/x"}]}}),
            ("stdout", {"type": "result", "subtype": "success", "is_error": False, "result": "done",
                        "stop_reason": "end_turn", "permission_denials": [{"tool_name": "Write", "tool_use_id": "t1"}]}),
        ],
    )  # fmt: skip
    assert [(d.tool, d.by_policy) for d in events if isinstance(d, PermissionDenied)] == [("Write", False)]


def test_claude_denial_of_an_orchestrator_rule_is_by_policy() -> None:
    """A Bash call our --disallowedTools forbids (git push) is denied by_policy, whatever the text says."""
    events = feed(
        "claude",
        [
            ("stdout", {"type": "assistant", "message": {"content": [
                {"type": "tool_use", "id": "t9", "name": "Bash", "input": {"command": "git push origin main"}}]}}),
            ("stdout", {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t9",
                        "is_error": True, "content": "Permission to use Bash with command git push has been denied."}]}}),
        ],
    )  # fmt: skip
    assert [(d.tool, d.by_policy) for d in events if isinstance(d, PermissionDenied)] == [("Bash", True)]


def test_claude_tool_failure_is_not_a_denial() -> None:
    """A failing command's own 'Permission denied' (EACCES) is a failed tool, not a permission rung problem."""
    events = feed(
        "claude",
        [("stdout", {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True, "content": "cat: /root/x: Permission denied"}]}})],
    )  # fmt: skip
    assert [e for e in events if isinstance(e, PermissionDenied)] == []


def test_claude_open_message_at_the_end_is_a_cut_stream() -> None:
    """With partial messages, a message_start never closed by message_stop is a cut stream."""
    events = feed(
        "claude",
        [("stdout", INIT), ("stdout", {"type": "stream_event", "event": {"type": "message_start", "message": {"id": "m1"}}})],
        exit_code=None,
    )  # fmt: skip
    assert kinds(events) == ["CliSession", "ApiError", "AgentResult"]
    assert isinstance(events[1], ApiError)
    assert events[1].kind == "stream_cut"


def test_claude_prompt_too_long() -> None:
    """terminal_reason prompt_too_long is a context overflow (give up: the plan should split the task)."""
    events = feed(
        "claude",
        [("stdout", {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 400,
                     "terminal_reason": "prompt_too_long", "result": "Prompt is too long · the request is ~250000"})],
        exit_code=1,
    )  # fmt: skip
    assert [(e.kind, e.status) for e in events if isinstance(e, ApiError)] == [("context_overflow", 400)]


def test_claude_silent_empty_run_is_not_ok() -> None:
    """2.1.197 with an unwritable TMPDIR exits 0 with no output at all: not a success."""
    assert [
        AgentResult(ok=False, subtype="no_result", text="claude exited 0 without a final result")
    ] == feed("claude", [])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("No conversation found with session ID: 0fcb6490-f29e", "resume_not_found"),
        ("Error: When using --print, --output-format=stream-json requires --verbose", "bad_arguments"),
        ("EROFS: read-only file system, mkdir '/tmp/claude-1000'", "environment"),
    ],
)
def test_claude_refusals(line: str, reason: str) -> None:
    """Start-up refusals on stderr are cli_refused with their reason."""
    events = feed("claude", [("stderr", line)], exit_code=1)
    assert [reason] == [e.reason for e in events if isinstance(e, CliRefused)]


BWRAP = (
    "bwrap: No permissions to create a new namespace, likely because the kernel does not allow "
    "non-privileged user namespaces."
)


def test_codex_bwrap_failure_in_docker_is_a_denial() -> None:
    """Inside Docker, a sandboxed command fails visibly with the bwrap text: a denial of exec_command."""
    item = {"id": "item_0", "type": "command_execution", "command": "/bin/bash -lc ls",
            "aggregated_output": BWRAP + "\n", "exit_code": 1, "status": "failed"}  # fmt: skip
    events = feed(
        "codex",
        [("stdout", {"type": "item.started", "item": {**item, "status": "in_progress"}}),
         ("stdout", {"type": "item.completed", "item": item})],
    )  # fmt: skip
    assert [(d.tool, d.detail) for d in events if isinstance(d, PermissionDenied)] == [
        ("exec_command", BWRAP)
    ]


def test_codex_ordinary_failure_is_not_a_denial() -> None:
    """A command that fails for its own reasons is a failed tool_result only."""
    item = {"id": "item_0", "type": "command_execution", "command": "ls /nope",
            "aggregated_output": "ls: cannot access '/nope': No such file or directory\n", "exit_code": 2,
            "status": "failed"}  # fmt: skip
    events = feed("codex", [("stdout", {"type": "item.completed", "item": item})])
    assert kinds(events) == ["ToolCall", "ToolResult", "AgentResult"]


def test_codex_denial_on_two_sources_is_reported_once() -> None:
    """The stderr router line and the rollout's tool output name one apply_patch denial."""
    parser = get_adapter("codex").parser()
    stderr = parser.parse_line(
        "stderr",
        "ERROR codex_core::tools::router: error=patch rejected: writing is blocked by read-only sandbox",
    )
    rollout = [
        json.dumps({"type": "response_item", "payload": {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch"}}),
        json.dumps({"type": "response_item", "payload": {"type": "custom_tool_call_output", "call_id": "c1",
                    "output": "patch rejected: writing is blocked by read-only sandbox"}}),
    ]  # fmt: skip
    later = [e for line in rollout for e in parser.parse_transcript_line(line)]
    assert ([d.tool for d in stderr if isinstance(d, PermissionDenied)], later) == (["apply_patch"], [])


def test_codex_waiting_for_network_is_a_retry() -> None:
    """Offline Codex retries forever: each notice is a cli_retry; the orchestrator's timeout decides."""
    events = feed(
        "codex",
        [("stdout", {"type": "error", "message": "Reconnecting... waiting for network (Connection failed)"})],
        exit_code=None,
    )
    assert isinstance(events[0], CliRetry)
    assert (events[0].attempt, kinds(events)[1]) == (None, "ApiError")


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [(173, "RateLimited"), (145, "AuthFailed"), (41, "AuthFailed"), (244, "ApiError"), (247, "ApiError"),
     (55, "CliRefused"), (1, None), (0, None)],
)  # fmt: skip
def test_gemini_exit_code_names_the_failure(exit_code: int, expected: str | None) -> None:
    """When the stream said nothing, Gemini's exit code (HTTP status mod 256, or a fatal code) does."""
    failures = [k for k in kinds(feed("gemini", [], exit_code)) if k != "AgentResult"]
    assert ([expected] if expected else []) == failures


def test_gemini_our_policy_denial_is_by_policy() -> None:
    """A deny rule of our policy file (its deny_message) is a by_policy denial of the shell."""
    events = feed(
        "gemini",
        [("stdout", {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "r1", "parameters": {"command": "git push"}}),
         ("stdout", {"type": "tool_result", "tool_id": "r1", "status": "error",
                     "output": "Tool execution denied by policy. Denied by the orchestrator's sandbox policy.",
                     "error": {"type": "policy_violation", "message": "Tool execution denied by policy."}})],
    )  # fmt: skip
    assert [(d.tool, d.by_policy) for d in events if isinstance(d, PermissionDenied)] == [
        ("run_shell_command", True)
    ]


def test_gemini_unknown_tool_the_model_made_up_is_not_a_denial() -> None:
    """'not found' for a tool no approval mode offers is the model's mistake, not a rung problem."""
    events = feed(
        "gemini",
        [("stdout", {"type": "tool_result", "tool_id": "frobnicate__1", "status": "error",
                     "output": 'Tool "frobnicate" not found.', "error": {"type": "tool_not_registered"}})],
    )  # fmt: skip
    assert [e for e in events if isinstance(e, PermissionDenied)] == []


def test_gemini_path_outside_the_workspace_is_a_denial() -> None:
    """A write outside the workspace roots is denied (--include-directories would allow it)."""
    events = feed(
        "gemini",
        [("stdout", {"type": "tool_result", "tool_id": "write_file__1", "status": "error",
                     "output": 'Path not in workspace: Attempted path "/out/g.txt" resolves outside',
                     "error": {"type": "invalid_tool_params"}})],
    )  # fmt: skip
    assert [d.tool for d in events if isinstance(d, PermissionDenied)] == ["write_file"]


def test_gemini_json_mode_error_document_on_stderr() -> None:
    """``-o json`` prints a fatal error as a pretty document on stderr: its failure class and a failed result."""
    lines = ["{", '  "session_id": "g-1",', '  "error": {', '    "type": "Error",',
             '    "message": "Please set an Auth method in your settings.json",', '    "code": 41', "  }", "}"]  # fmt: skip
    events = feed("gemini", [("stderr", line) for line in lines], exit_code=41)
    assert kinds(events) == ["CliSession", "AuthFailed", "AgentResult"]


def test_gemini_interrupted_document_does_not_swallow_later_lines() -> None:
    """A stray '{' line starts a document; an unindented line ends it and is parsed on its own."""
    events = feed(
        "gemini", [("stderr", "{"), ("stderr", "Attempt 1 failed with status 503. Retrying")], exit_code=None
    )
    assert kinds(events) == ["CliRetry", "ApiError", "AgentResult"]
