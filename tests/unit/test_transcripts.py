"""Every recorded run of the real CLIs goes through its adapter's parser (tests/fixtures/transcripts).

The tables below say what each run must yield; they come from the runs' own README (what the
mock answered, what the CLI printed, its exit code), not from the parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agents import get_adapter
from orchestrator.commands.parse import parse_files
from orchestrator.models.events import (
    AgentResult,
    ApiError,
    AuthFailed,
    CliRefused,
    CliRetry,
    CliSession,
    EventData,
    PermissionDenied,
    RateLimited,
    Usage,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
RUNS = sorted(p.name.removesuffix(".meta.json") for p in FIXTURES.glob("*.meta.json"))

# run -> (the tool named, by_policy) of its one permission denial
DENIALS: dict[str, tuple[str, bool]] = {
    "claude-2.1.197-shell-python-default-denied": ("Bash", False),
    "claude-2.1.197-shellwrite-default-denied": ("Bash", False),
    "claude-2.1.197-write-default-denied": ("Write", False),
    "claude-2.1.197-write-disallowedTools-denied": ("Write", True),
    "claude-2.1.197-write-dontAsk-denied": ("Write", False),
    "codex-0.169.0-shellwrite-default-denied": ("exec_command", False),
    "codex-0.169.0-shellwrite-escalate-approve-for-me-guardian-denied": ("exec_command", False),
    "codex-0.169.0-shellwrite-escalate-denied": ("exec_command", False),
    "codex-0.169.0-write-default-denied": ("apply_patch", False),
    "gemini-0.61.0-shell-ls-default-denied": ("run_shell_command", False),
    "gemini-0.61.0-shellwrite-default-denied": ("run_shell_command", False),
    "gemini-0.61.0-shellwrite-yolo-policy-denied": ("run_shell_command", True),
    "gemini-0.61.0-write-default-denied": ("write_file", False),
    "gemini-0.61.0-write-default-json-denied": ("write_file", False),
}
# A denial the run's name does not announce: auto_edit withholds the shell (README: tool_not_registered).
DENIED_DESPITE_NAME: dict[str, tuple[str, bool]] = {
    "gemini-0.61.0-shellwrite-auto_edit": ("run_shell_command", False),
}

# run -> (payload type, its kind / reason) of the run's failure class; every other run has none
FAILURES: dict[str, tuple[type[EventData], str]] = {
    "claude-2.1.197-authfail": (AuthFailed, ""),  # killed while retrying: the retry cause
    "claude-2.1.197-authfail-maxretries2": (AuthFailed, ""),
    "claude-2.1.197-overloaded-529": (ApiError, "overloaded"),
    "claude-2.1.197-ratelimit-always": (RateLimited, ""),
    "claude-2.1.197-ratelimit-always-maxretries2": (RateLimited, ""),
    "claude-2.1.197-ratelimit-always-maxretries2-text": (RateLimited, ""),
    "claude-2.1.197-servererror-500": (ApiError, "server_error"),
    "claude-2.1.197-servererror-500-maxretries2": (ApiError, "server_error"),
    "claude-2.1.197-streamcut-abort": (ApiError, "stream_cut"),
    "claude-2.1.197-streamcut-abort-first1": (ApiError, "stream_cut"),
    "claude-2.1.197-streamcut-eof": (ApiError, "stream_cut"),  # "success" without message_stop
    "claude-2.1.197-streamcut-eof-first1": (ApiError, "stream_cut"),
    "claude-2.1.197-write-skipperms-root-refused": (CliRefused, "root_bypass"),
    "codex-0.169.0-authfail": (AuthFailed, ""),
    "codex-0.169.0-ratelimit-always": (RateLimited, ""),
    "codex-0.169.0-ratelimit-always-retries0": (RateLimited, ""),
    "codex-0.169.0-ratelimit-always-text": (RateLimited, ""),
    "codex-0.169.0-servererror-500": (ApiError, "server_error"),
    "codex-0.169.0-streamcut-abort": (ApiError, "stream_cut"),
    "codex-0.169.0-streamcut-eof": (ApiError, "stream_cut"),
    "codex-0.169.0-write-full-auto-flag-removed": (CliRefused, "bad_arguments"),
    "gemini-0.61.0-authfail": (AuthFailed, ""),
    "gemini-0.61.0-gateway-auth-invalid": (AuthFailed, ""),
    "gemini-0.61.0-overloaded-503": (ApiError, "overloaded"),
    "gemini-0.61.0-overloaded-503-model-pinned-maxattempts2": (ApiError, "overloaded"),
    "gemini-0.61.0-ratelimit-always": (RateLimited, ""),
    "gemini-0.61.0-ratelimit-always-maxattempts2": (RateLimited, ""),
    "gemini-0.61.0-ratelimit-always-maxattempts2-text": (RateLimited, ""),
    "gemini-0.61.0-servererror-500": (ApiError, "server_error"),
    "gemini-0.61.0-servererror-500-maxattempts2": (ApiError, "server_error"),
    "gemini-0.61.0-streamcut-abort": (ApiError, "stream_cut"),
    "gemini-0.61.0-streamcut-abort-first1": (ApiError, "stream_cut"),
    "gemini-0.61.0-streamcut-eof": (ApiError, "stream_cut"),  # exit 0 after "no finish reason"
    "gemini-0.61.0-untrusted-dir-refused": (CliRefused, "untrusted_workspace"),
}
# Runs that end without an ok result although no API failure happened.
NOT_OK_WITHOUT_FAILURE = {
    "claude-2.1.197-planner-json-json-schema-invalid",  # error_max_structured_output_retries
    "codex-0.169.0-planner-json-output-schema-text",  # text mode: stdout is the bare answer, no events
}
FAILURE_TYPES = (AuthFailed, RateLimited, ApiError, CliRefused)


def meta(run: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{run}.meta.json").read_text())
    return loaded


def parse_run(run: str) -> list[EventData]:
    """All payloads of a recorded run: stdout, stderr, the rollout if there is one, the end."""
    rollout = FIXTURES / f"{run}.rollout.jsonl"
    return list(
        parse_files(
            get_adapter(run.split("-", maxsplit=1)[0]).parser(),
            FIXTURES / f"{run}.stdout.jsonl",
            FIXTURES / f"{run}.stderr.txt",
            rollout if rollout.exists() else None,
            meta(run)["exit_code"],
        )
    )


def of(events: list[EventData], kind: type[EventData]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_every_recorded_family_is_present() -> None:
    """The fixtures hold all three CLIs' runs (a clean clone needs nothing outside the repo)."""
    assert {agent: sum(r.startswith(agent) for r in RUNS) for agent in ("claude", "codex", "gemini")} == {
        "claude": 35,
        "codex": 30,
        "gemini": 30,
    }


def test_the_denial_table_lists_exactly_the_runs_named_denied() -> None:
    """Every run whose name says 'denied' has an expected denial, and no other run is in the table."""
    assert sorted(r for r in RUNS if "denied" in r) == sorted(DENIALS)


@pytest.mark.parametrize("run", RUNS)
def test_permission_denials(run: str) -> None:
    """A denied run yields one permission_denied naming the tool (by_policy for our own rules); no other run does."""
    expected = (
        [DENIALS[run]] if run in DENIALS else [DENIED_DESPITE_NAME[run]] if run in DENIED_DESPITE_NAME else []
    )
    assert expected == [(d.tool, d.by_policy) for d in of(parse_run(run), PermissionDenied)]


@pytest.mark.parametrize("run", RUNS)
def test_failure_class(run: str) -> None:
    """Rate limits, auth failures, server errors, overload, cut streams and refused starts are told apart."""
    failures = [e for e in parse_run(run) if isinstance(e, FAILURE_TYPES)]
    expected = FAILURES.get(run)
    actual = [(type(f), getattr(f, "kind", getattr(f, "reason", ""))) for f in failures]
    assert ([expected] if expected else []) == actual


@pytest.mark.parametrize("run", RUNS)
def test_one_final_result(run: str) -> None:
    """Every run ends in exactly one agent_result, ok only when the run really succeeded."""
    results = of(parse_run(run), AgentResult)
    ok = run not in FAILURES and run not in NOT_OK_WITHOUT_FAILURE and meta(run)["exit_code"] == 0
    assert [ok] == [r.ok for r in results]


@pytest.mark.parametrize(
    ("run", "session"),
    [
        ("claude-2.1.197-write-default-denied", "0fcb6490-f29e-499a-8905-4dc08c29295a"),
        ("claude-2.1.197-authfail-maxretries2", "36e336cb-26a7-4739-9fee-7672b6f4d41b"),
        ("codex-0.169.0-authfail", "01a2157f-5808-7511-8cb3-42b03aaf806d"),
        ("codex-0.169.0-multistep-bypass", "01a2158e-75c4-7f33-a666-926a7b1c695f"),
        ("gemini-0.61.0-write-default-denied", "e1f2d0a1-28b8-4a32-badd-ad8195a0984b"),
        ("gemini-0.61.0-write-default-json-denied", "73a4313a-1807-4e33-b5e2-d7992918a276"),
    ],
)
def test_session_id(run: str, session: str) -> None:
    """The id to resume with: Claude's init session_id, Codex's thread_id, Gemini's session_id."""
    assert [session] == [s.id for s in of(parse_run(run), CliSession)]


@pytest.mark.parametrize("run", RUNS)
def test_at_most_one_session_id(run: str) -> None:
    """A run names at most one CLI session."""
    assert len({s.id for s in of(parse_run(run), CliSession)}) <= 1


@pytest.mark.parametrize(
    ("run", "usage"),
    [
        ("claude-2.1.197-multistep-acceptEdits-nobody", Usage(input_tokens=123774, output_tokens=375,
                                                                cached_input_tokens=120000, cost_usd=0.0929325)),
        ("codex-0.169.0-multistep-bypass", Usage(input_tokens=76500, output_tokens=480, cached_input_tokens=62500)),
        ("gemini-0.61.0-multistep-yolo", Usage(input_tokens=74000, output_tokens=425, cached_input_tokens=30000)),
        ("gemini-0.61.0-write-default-json-denied", Usage(input_tokens=30, output_tokens=60)),
    ],
)  # fmt: skip
def test_usage(run: str, usage: Usage) -> None:
    """Tokens (cache reads included in the input) and cost when the CLI reports one, once per run."""
    assert [usage] == of(parse_run(run), Usage)


@pytest.mark.parametrize(
    ("run", "retries"),
    [
        ("claude-2.1.197-ratelimit-first2", 2),
        ("claude-2.1.197-ratelimit-always", 9),
        ("codex-0.169.0-ratelimit-always", 5),
        ("codex-0.169.0-streamcut-eof-first1", 1),
        ("gemini-0.61.0-ratelimit-first2", 2),
        ("gemini-0.61.0-write-yolo", 0),
    ],
)
def test_cli_retries(run: str, retries: int) -> None:
    """Each retry the CLI makes by itself is one cli_retry (recorded, not acted on)."""
    assert retries == len(of(parse_run(run), CliRetry))


@pytest.mark.parametrize(
    ("run", "retry_after_s"),
    [
        ("claude-2.1.197-ratelimit-always-maxretries2", 3.0),  # the CLI waited the Retry-After header
        ("gemini-0.61.0-ratelimit-always-maxattempts2", 3.0),  # "Please retry in 3s."
        ("codex-0.169.0-ratelimit-always", None),  # Codex does not quote it
    ],
)
def test_retry_after(run: str, retry_after_s: float | None) -> None:
    """The wait a rate limit asks for, when the CLI's output says it."""
    assert [retry_after_s] == [r.retry_after_s for r in of(parse_run(run), RateLimited)]


PLAN_TASKS = ["t1", "t2", "t3"]


@pytest.mark.parametrize(
    "run",
    [
        "claude-2.1.197-planner-json-stream-json",
        "claude-2.1.197-planner-json-json-schema",
        "claude-2.1.197-planner-json-json-schema-stream-json",
        "claude-2.1.197-planner-json-output-json",
        "codex-0.169.0-planner-json",
        "codex-0.169.0-planner-json-output-schema",
        "gemini-0.61.0-planner-json-stream-json",
        "gemini-0.61.0-planner-json-output-json",
    ],
)
def test_planner_answer_is_the_final_text(run: str) -> None:
    """The final answer (the plan as JSON text) is the agent_result's text, whole, for every CLI."""
    (result,) = of(parse_run(run), AgentResult)
    assert [t["id"] for t in json.loads(result.text)["tasks"]] == PLAN_TASKS


def test_claude_json_schema_gives_the_object() -> None:
    """With --json-schema, Claude's result carries the object itself: agent_result.structured."""
    (result,) = of(parse_run("claude-2.1.197-planner-json-json-schema-stream-json"), AgentResult)
    assert result.structured is not None
    assert json.loads(result.text) == result.structured


def test_claude_json_schema_ignored_by_the_model_has_no_object() -> None:
    """A model that answers text despite --json-schema: ok, but no structured object to trust."""
    (result,) = of(parse_run("claude-2.1.197-planner-json-json-schema-model-ignores-tool"), AgentResult)
    assert (result.ok, result.structured) == (True, None)


def test_codex_rollout_is_the_only_trace_of_a_hidden_sandbox_denial() -> None:
    """Without the rollout file, Codex's sandbox-blocked shell write leaves no denial on stdout/stderr."""
    run = "codex-0.169.0-shellwrite-default-denied"
    without = parse_files(
        get_adapter("codex").parser(),
        FIXTURES / f"{run}.stdout.jsonl",
        FIXTURES / f"{run}.stderr.txt",
        None,
        0,
    )
    assert of(list(without), PermissionDenied) == []
    assert [d.detail for d in of(parse_run(run), PermissionDenied)] == [
        "/bin/bash: line 1: hello.txt: Read-only file system"
    ]
