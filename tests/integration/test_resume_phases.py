"""Crashes at the later points of a session: during a review, and during the merge.

Both run ``orchestrate demo`` with a one-task scenario (a Gemini writer, two reviewers) as a child
process; the crash is a real ``kill -9`` (review) or the log cut right after the decision while the
branch was already merged (the merge: its ref update and its event are not one step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from orchestrator.gitwork import git
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ORCH_WORKSPACE": str(tmp_path / "ws"), "ORCH_RECOVERY__WRITER_START_RUNG": "2"}


def _demo(env: dict[str, str], scenario: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "orchestrator.main", "demo", "--json", "--scenario",
            str(ROOT / "tests" / "fixtures" / "scenarios" / scenario)]  # fmt: skip
    return subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _resume(env: dict[str, str], session: str) -> dict[str, object]:
    argv = [sys.executable, "-m", "orchestrator.main", "resume", session, "--json"]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _merged_files(report: dict[str, object]) -> list[str]:
    repo = Path(str(report["repo"]))
    return git(repo, "ls-tree", "--name-only", f"orch/{report['session_id']}").stdout.split()


def test_kill_9_during_the_review_then_resume_reviews_and_merges(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """Killed while the reviewers run: resume reviews again and merges; the log stays gap-free, and
    the reviewers' containers of the killed process are removed too."""
    env = _env(tmp_path)
    proc = _demo(env, "review-slow.toml")
    workspace = tmp_path / "ws"
    session, deadline = "", time.monotonic() + 240
    while not session and time.monotonic() < deadline:
        for events in workspace.glob("*/events.jsonl"):
            found = list(EventReader(SessionPaths.of(workspace, events.parent.name)).read())
            if any(e.type == "review_requested" for e in found):
                session = events.parent.name
        time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=30)
    assert session, "no review started"
    report = _resume(env, session)
    assert [t["status"] for t in report["tasks"]] == ["succeeded"]  # type: ignore[index, union-attr]
    assert "hello.py" in _merged_files(report)
    seqs = [e.seq for e in EventReader(SessionPaths.of(workspace, session)).read()]
    assert seqs == list(range(1, len(seqs) + 1))
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": f"orchestrator.session={session}"})
    finally:
        client.close()
    assert [c.name for c in left] == []


def test_a_crash_between_the_merge_and_its_event_resumes_without_merging_twice(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """The branch was merged but the log ends at the decision: resume finishes with one merge."""
    env = _env(tmp_path)
    proc = _demo(env, "review-approve.toml")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out)
    session = str(report["session_id"])
    paths = SessionPaths.of(tmp_path / "ws", session)
    lines = paths.events.read_bytes().splitlines(keepends=True)
    cut = next(i for i, raw in enumerate(lines) if b'"type":"decision"' in raw) + 1
    paths.events.write_bytes(b"".join(lines[:cut]))  # the process died right after the decision
    paths.snapshot.unlink(missing_ok=True)
    tip = git(Path(str(report["repo"])), "rev-parse", f"orch/{session}").stdout.strip()
    again = _resume(env, session)
    assert [t["status"] for t in again["tasks"]] == ["succeeded"]  # type: ignore[index, union-attr]
    assert git(Path(str(report["repo"])), "rev-parse", f"orch/{session}").stdout.strip() == tip
    assert "hello.py" in _merged_files(again)
