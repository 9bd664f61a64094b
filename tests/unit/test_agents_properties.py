"""Properties of the parsers that must hold for every input: garbage never raises and never crashes.

Each parser guards itself with ``safely`` (a parser bug becomes a logged warning, the line is kept
raw); these tests also assert that the guard never fired, i.e. bad input is handled on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from orchestrator.agents import ADAPTERS, get_adapter
from orchestrator.models.events import TYPE_OF, AgentResult, EventData

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
AGENTS = [a.value for a in ADAPTERS]
REAL_LINES = sorted(
    {
        line
        for path in FIXTURES.glob("*.stdout.jsonl")
        for line in path.read_text().splitlines()
        if line.strip()
    }
    | {
        line
        for path in FIXTURES.glob("*.stderr.txt")
        for line in path.read_text().splitlines()
        if line.strip()
    }
)
KEYS = ["type", "subtype", "message", "content", "item", "items", "usage", "error", "stats", "status", "result",
        "session_id", "thread_id", "tool_use_id", "tool_name", "tool_id", "is_error", "stop_reason", "delta",
        "role", "text", "id", "input", "parameters", "output", "aggregated_output", "exit_code", "payload",
        "permission_denials", "structured_output", "event", "api_error_status", "retry_delay_ms", "models",
        "tokens", "call_id", "name", "changes", "severity", "total_cost_usd", "terminal_reason"]  # fmt: skip
TYPES = ["system", "assistant", "user", "result", "stream_event", "init", "message", "tool_use", "tool_result",
         "error", "thread.started", "turn.started", "item.started", "item.completed", "turn.completed",
         "turn.failed", "response_item", "rate_limit_event", "brand_new_type"]  # fmt: skip
SUBTYPES = ["init", "api_retry", "permission_denied", "success", "error_max_turns", "compact_boundary"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=15,
)
shaped_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "subtype": st.sampled_from(SUBTYPES),
        **{k: json_values for k in KEYS if k not in ("type", "subtype")},
    },
)


def run_all(agent: str, lines: list[tuple[str, str]], exit_code: int | None) -> list[EventData]:
    """Feed ``lines`` and end the run, asserting that no parser guard fired."""
    parser = get_adapter(agent).parser()
    with capture_logs() as logs:
        out: list[EventData] = []
        for stream, line in lines:
            out += parser.parse_line(stream, line)  # type: ignore[arg-type]
            out += parser.parse_transcript_line(line)
        out += parser.finish(exit_code)
    assert [entry for entry in logs if entry.get("event") == "agent_parser_failed"] == []
    assert all(type(e) in TYPE_OF for e in out)
    return out


streams = st.sampled_from(["stdout", "stderr"])


@settings(max_examples=150, deadline=None)
@given(agent=st.sampled_from(AGENTS), lines=st.lists(st.tuples(streams, st.text(max_size=200)), max_size=8))
def test_random_text_never_raises(agent: str, lines: list[tuple[str, str]]) -> None:
    """Arbitrary text lines on either stream: some payloads or none, never an exception."""
    run_all(agent, lines, 0)


@settings(max_examples=100, deadline=None)
@given(agent=st.sampled_from(AGENTS), data=st.lists(st.binary(max_size=200), max_size=6))
def test_random_bytes_never_raise(agent: str, data: list[bytes]) -> None:
    """Undecodable bytes (decoded with replacement, as the runtime does) are just text."""
    run_all(agent, [("stdout", b.decode("utf-8", "replace")) for b in data], 1)


@settings(max_examples=120, deadline=None)
@given(agent=st.sampled_from(AGENTS), objects=st.lists(shaped_objects, min_size=1, max_size=6))
def test_known_event_shapes_with_wrong_field_types_never_raise(
    agent: str, objects: list[dict[str, Any]]
) -> None:
    """Real event types with missing, extra or mistyped fields (numbers for text, lists for objects ...)."""
    run_all(agent, [("stdout", json.dumps(o)) for o in objects], None)


@settings(max_examples=200, deadline=None)
@given(agent=st.sampled_from(AGENTS), line=st.sampled_from(REAL_LINES), cut=st.integers(min_value=0))
def test_truncated_real_lines_never_raise(agent: str, line: str, cut: int) -> None:
    """Any recorded line cut anywhere (a torn write) is parsed or kept raw, in any agent's parser."""
    run_all(agent, [("stdout", line[: cut % (len(line) + 1)]), ("stderr", line[: cut % (len(line) + 1)])], 0)


@settings(max_examples=40, deadline=None)
@given(agent=st.sampled_from(AGENTS), exit_code=st.none() | st.integers(min_value=-(2**31), max_value=2**31))
def test_a_run_always_ends_in_exactly_one_result(agent: str, exit_code: int | None) -> None:
    """Whatever the exit code, a run without output ends in one failed agent_result."""
    results = [e for e in run_all(agent, [], exit_code) if isinstance(e, AgentResult)]
    assert [r.ok for r in results] == [False]


def test_huge_lines() -> None:
    """A 16 MB line and a 1 MB JSON message are handled (kept raw, or parsed) without trouble."""
    huge_text = "x" * (16 * 1024 * 1024)
    big_message = json.dumps(
        {"type": "item.completed", "item": {"type": "agent_message", "text": "y" * 1_000_000}}
    )
    for agent in AGENTS:
        run_all(agent, [("stdout", huge_text), ("stderr", huge_text), ("stdout", "{" + huge_text)], 0)
        run_all(agent, [("stdout", big_message)], 0)


def test_deeply_nested_json() -> None:
    """JSON nested deeper than any parser walks is no problem."""
    nested: Any = "leaf"
    for level in range(200):
        nested = {"content": [nested]} if level % 2 else {"input": nested}
    line = json.dumps({"type": "assistant", "message": {"content": [{"type": "tool_use", "input": nested}]}})
    for agent in AGENTS:
        run_all(agent, [("stdout", line)], 0)
