"""Review request ids are unique within a session, also across a resume (a new process counts from 1)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.models import events as ev
from orchestrator.models.review import OrchestratorDecision, ReviewResponse
from orchestrator.paths import SessionPaths
from orchestrator.reviews import ReviewRunner
from orchestrator.store import EventWriter


def runner_over(writer: EventWriter) -> ReviewRunner:
    supervisor: Any = SimpleNamespace(writer=writer)
    return ReviewRunner(supervisor=supervisor, policy=None, timeout_s=1.0)  # type: ignore[arg-type]


def test_a_fresh_session_numbers_reviews_from_one(tmp_path: Path) -> None:
    with EventWriter.open(SessionPaths.of(tmp_path, "review01")) as writer:
        runner = runner_over(writer)
        assert [runner.next_id("t1"), runner.next_id("t2")] == ["review-t1-1", "review-t2-2"]


def test_a_resumed_session_skips_the_ids_its_log_already_holds(tmp_path: Path) -> None:
    """The process that resumes the session starts counting at 1: ids decided or answered before are skipped."""
    paths = SessionPaths.of(tmp_path, "review02")
    with EventWriter.open(paths) as writer:
        writer.emit(
            "orchestrator",
            ev.Decision(decision=OrchestratorDecision(action="CONTINUE", rule=4, request_id="review-t1-1")),
            "t1",
        )
        answer = ReviewResponse(request_id="review-t1-2", reviewer="codex", verdict="approve", severity="none",
                                confidence=0.9, findings=[], summary="ok")  # fmt: skip
        writer.emit("reviewer-codex-t1-1", ev.ReviewReceived(response=answer), "t1")
    with EventWriter.open(paths) as writer:
        assert runner_over(writer).next_id("t1") == "review-t1-3"
