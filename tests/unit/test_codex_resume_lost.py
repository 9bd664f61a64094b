"""A Codex session stopped before its first turn cannot be resumed: that is a lost session, not an API error."""

from __future__ import annotations

from orchestrator.agents import get_adapter
from orchestrator.models import events as ev

LINE = (
    "Error: thread/resume: thread/resume failed: failed to read thread: thread-store internal error: failed to "
    "read session metadata /home/agent/.codex/sessions/2026/11/26/rollout-x.jsonl: rollout at "
    "/home/agent/.codex/sessions/2026/11/26/rollout-x.jsonl is empty (code -32603)"
)


def test_an_empty_rollout_on_resume_is_a_lost_session() -> None:
    """The recovery engine restarts a lost session fresh instead of resuming it again."""
    payloads = get_adapter("codex").parser().parse_line("stderr", LINE)
    refused = [p for p in payloads if isinstance(p, ev.CliRefused)]
    assert [r.reason for r in refused] == ["resume_not_found"]
