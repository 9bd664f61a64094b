"""Peer review end to end on real Docker: the real CLIs as authors and reviewers, the scripted model.

Each test runs ``orchestrate demo --scenario tests/fixtures/scenarios/review-*.toml --json`` as a
person runs it (a child process; writers start on their top rung, so permission recovery stays out
of the way) and checks what the review decided, what it did about it and what is left afterwards:

1. both reviewers approve: CONTINUE (rule 4), the file is on ``orch/<session>``;
2. request_changes: WARN (rule 3), the author's own CLI session is resumed with the findings (one
   fix round), the second review approves: CONTINUE, merged (with each CLI as the author); a
   writer escalated from rung 0 gets its fix round on the rung its work reached;
3. one reject of two: PAUSE (rule 2); ``--on-pause exit`` exits 4; ``orchestrate decide ID
   continue`` then ``orchestrate resume ID`` merges, exit 0; deciding again is refused (exit 2);
4. a critical security finding: STOP (rule 1), exit 3, nothing merged, nothing of the session left;
5. a risky ``git push`` by the author: its container is frozen (``docker pause``) while the
   reviewers run, their critical answers STOP the session: exit 3;
6. reviewers answering garbage twice: WARN (rule 3) "unreviewed", the work is kept and merged.

Containers and the network of every session are removed by label afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import docker
import pytest

from orchestrator.gitwork import git
from orchestrator.models import AgentEvent, DecisionAction
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths
from orchestrator.runtime.protocol import SESSION_LABEL
from orchestrator.sessions import network_name
from orchestrator.store import EventReader

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "fixtures" / "scenarios"
RESUME_FLAG = {"claude": "--resume", "codex": "resume", "gemini": "--resume"}
FINDING = "FINDING-STRIP-7Q"
FIXED = 'def greet(name: str) -> str:\n    return f"hello, {name.strip()}"\n'  # only the fix script writes it
T = TypeVar("T")
pytestmark = pytest.mark.timeout(600)


# -- helpers ----------------------------------------------------------------------------------------


def sessions_in(workspace: Path) -> list[str]:
    if not workspace.is_dir():
        return []
    return [p.name for p in workspace.iterdir() if (p / "events.jsonl").exists()]


def leftovers(session: str, running_only: bool = False) -> tuple[list[str], list[str]]:
    """Names of ``session``'s containers (all, or only running ones) and of its network, if any."""
    client = docker.from_env()
    try:
        found = client.containers.list(all=not running_only, filters={"label": f"{SESSION_LABEL}={session}"})
        nets = client.networks.list(names=[network_name(session)])
        return sorted(c.name for c in found), [n.name for n in nets]
    finally:
        client.close()


def remove_session(session: str) -> None:
    """Every container and the network of ``session``, by label."""
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"}):
            container.remove(force=True)
        for network in client.networks.list(names=[network_name(session)]):
            network.remove()
    finally:
        client.close()


@pytest.fixture
def ws(tmp_path: Path, images: dict[str, str]) -> Iterator[Path]:
    """A workspace of the test's own; every session started in it is removed afterwards."""
    path = tmp_path / "ws"
    yield path
    for session in sessions_in(path):
        remove_session(session)


def environment(workspace: Path, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "ORCH_WORKSPACE": str(workspace),
        "ORCH_GRACE_PERIOD_S": "3",
        "ORCH_RECOVERY__WRITER_START_RUNG": "2",  # permissions are not under test (unless overridden)
        **env,
    }


def orchestrate(*args: str, workspace: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``orchestrate ARGS`` as a child process with its own workspace."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.main", *args], env=environment(workspace, **env), cwd=ROOT,
        capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip


def demo(scenario: Path, workspace: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return orchestrate("demo", "--json", "--scenario", str(scenario), *extra, workspace=workspace, **env)


def only_session(workspace: Path) -> str:
    found = sessions_in(workspace)
    assert len(found) == 1, found
    return found[0]


def read_events(workspace: Path, session: str) -> list[AgentEvent]:
    return list(EventReader(SessionPaths.of(workspace, session)).read())


@dataclass(frozen=True)
class Seen(Generic[T]):
    """One stored event with its payload typed."""

    seq: int
    worker: str
    data: T


def of_type(events: list[AgentEvent], kind: type[T]) -> list[Seen[T]]:
    """The events whose payload is a ``kind``, in log order."""
    return [Seen(e.seq, e.worker, e.data) for e in events if isinstance(e.data, kind)]


def decisions(events: list[AgentEvent]) -> list[tuple[DecisionAction, int]]:
    return [(e.data.decision.action, e.data.decision.rule) for e in of_type(events, ev.Decision)]


def repo_of(workspace: Path, session: str) -> Path:
    return workspace / "demo-repos" / session


def on_branch(repo: Path, session: str, file: str) -> str | None:
    """``file`` on ``orch/<session>``, or None when the branch does not have it."""
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", f"orch/{session}:{file}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout if shown.returncode == 0 else None


def task_summary(report: dict[str, Any]) -> list[tuple[str, str, str | None, list[str]]]:
    return [(t["id"], t["status"], t["review"], t["files_changed"]) for t in report["tasks"]]


# -- 1. approve -------------------------------------------------------------------------------------


def test_two_approvals_continue_and_the_work_is_merged(ws: Path) -> None:
    """Gemini writes hello.py, Claude and Codex approve: CONTINUE (rule 4), merged, nothing left."""
    done = demo(SCENARIOS / "review-approve.toml", ws)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    assert task_summary(report) == [("t1", "succeeded", "CONTINUE (rule 4)", ["hello.py"])]
    events = read_events(ws, session)
    requested = [e.data.request for e in of_type(events, ev.ReviewRequested)]
    assert [(r.trigger, sorted(r.reviewers)) for r in requested] == [("task_finished", ["claude", "codex"])]
    assert sorted(e.data.response.verdict for e in of_type(events, ev.ReviewReceived)) == ["approve"] * 2
    assert decisions(events) == [(DecisionAction.CONTINUE, 4)]
    decided, merged = of_type(events, ev.Decision)[0], of_type(events, ev.Merged)
    assert [m.data.tasks for m in merged] == [["t1"]]
    assert decided.seq < merged[0].seq  # the decision is recorded before anything acts on it
    assert on_branch(repo_of(ws, session), session, "hello.py") == 'def hello() -> str:\n    return "hello"\n'
    assert leftovers(session) == ([], [])


# -- 2. request_changes: one fix round ----------------------------------------------------------------


def fix_round_scenario(author: str, folder: Path) -> Path:
    """The fix-round scenario with ``author`` writing (the lines marked ``# author``)."""
    text = (SCENARIOS / "review-fix-round.toml").read_text()
    swapped, count = re.subn(r'agent = "\w+"  # author', f'agent = "{author}"  # author', text)
    assert count == 3
    path = folder / f"review-fix-round-{author}.toml"
    path.write_text(swapped)
    return path


@pytest.mark.parametrize("author", ["codex", "claude", "gemini"])
def test_request_changes_gets_one_fix_round_in_the_authors_resumed_session(
    ws: Path, tmp_path: Path, author: str
) -> None:
    """WARN (rule 3) -> the author's CLI resumed with the findings -> approve (rule 4) -> merged.

    The fixed greet.py comes from the scenario's "fix" script, which answers only a request whose
    user text carries the finding: it being merged shows that the model server saw the findings.
    """
    done = demo(fix_round_scenario(author, tmp_path), ws)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    assert task_summary(report) == [("t1", "succeeded", "CONTINUE (rule 4)", ["greet.py"])]
    events = read_events(ws, session)
    worker = f"{author}-t1"
    assert decisions(events) == [(DecisionAction.WARN, 3), (DecisionAction.CONTINUE, 4)]
    warn, approve = of_type(events, ev.Decision)
    assert any("requests changes" in r for r in warn.data.decision.reasons), warn.data.decision.reasons
    starts = [e for e in of_type(events, ev.WorkerStarted) if e.worker == worker]
    assert len(starts) == 2, [e.data.argv[:4] for e in starts]
    first, fix = starts
    sessions = [e.data.id for e in of_type(events, ev.CliSession) if e.worker == worker and e.seq < fix.seq]
    assert sessions, f"{worker} printed no session id before the fix round"
    argv = fix.data.argv
    assert RESUME_FLAG[author] in argv, argv
    assert argv[argv.index(RESUME_FLAG[author]) + 1] == sessions[-1]
    assert RESUME_FLAG[author] not in first.data.argv
    assert any(FINDING in a and "Peer reviewers asked for changes" in a for a in argv), argv
    merged = of_type(events, ev.Merged)
    assert warn.seq < fix.seq < approve.seq < merged[0].seq
    assert on_branch(repo_of(ws, session), session, "greet.py") == FIXED
    assert leftovers(session) == ([], [])


def test_a_fix_round_resumes_the_author_on_the_rung_its_work_reached(ws: Path) -> None:
    """Codex starts on rung 0 and is escalated to rung 2 to write; its fix round starts on rung 2
    (not on rung 0 again, where its spent escalations would make recovery give up), and is merged."""
    done = demo(SCENARIOS / "review-fix-round.toml", ws, ORCH_RECOVERY__WRITER_START_RUNG="0")
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    events = read_events(ws, session)
    warn = of_type(events, ev.Decision)[0]
    rungs = [
        (e.data.rung, e.seq > warn.seq) for e in of_type(events, ev.WorkerStarted) if e.worker == "codex-t1"
    ]
    assert rungs == [(0, False), (1, False), (2, False), (2, True)]
    assert decisions(events) == [(DecisionAction.WARN, 3), (DecisionAction.CONTINUE, 4)]
    assert task_summary(report) == [("t1", "succeeded", "CONTINUE (rule 4)", ["greet.py"])]
    assert on_branch(repo_of(ws, session), session, "greet.py") == FIXED


# -- 3. one reject: PAUSE, decide, resume --------------------------------------------------------------


def test_one_reject_pauses_a_person_continues_and_resume_merges(ws: Path) -> None:
    """PAUSE (rule 2) exits 4 with ``--on-pause exit``; decide continue + resume merge it: exit 0."""
    paused = demo(SCENARIOS / "review-reject.toml", ws, "--on-pause", "exit")
    assert paused.returncode == 4, paused.stderr[-4000:]
    session = only_session(ws)
    assert f"session {session} is paused" in paused.stderr
    assert "rejects" in paused.stderr
    events = read_events(ws, session)
    assert decisions(events) == [(DecisionAction.PAUSE, 2)]
    assert len(of_type(events, ev.SessionPaused)) == 1
    assert (of_type(events, ev.Merged), on_branch(repo_of(ws, session), session, "hello.py")) == ([], None)
    assert leftovers(session, running_only=True) == ([], [])

    garbage = orchestrate("decide", session, "maybe", workspace=ws)
    assert garbage.returncode == 2, garbage.stderr
    assert "'maybe' is not one of: continue, stop" in garbage.stderr
    decided = orchestrate("decide", session, "continue", "--note", "read it myself", workspace=ws)
    assert decided.returncode == 0, decided.stderr
    assert decided.stdout.strip() == f"decision continue recorded for session {session}"

    resumed = orchestrate("resume", session, "--json", workspace=ws)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    report = json.loads(resumed.stdout)
    assert (report["status"], report["exit_code"]) == ("succeeded", 0)
    assert task_summary(report) == [("t1", "succeeded", "PAUSE (rule 2)", ["hello.py"])]
    events = read_events(ws, session)
    people = [e.data for e in of_type(events, ev.HumanDecision)]
    assert [(d.action, d.note) for d in people] == [("continue", "read it myself")]
    assert decisions(events) == [(DecisionAction.PAUSE, 2)]  # not reviewed again
    written = 'def hello() -> str:\n    return "hello"\n\n\nprint(hello())\n'
    assert on_branch(repo_of(ws, session), session, "hello.py") == written
    assert leftovers(session) == ([], [])

    again = orchestrate("decide", session, "continue", workspace=ws)
    assert again.returncode == 2, again.stderr
    assert f"session {session} is succeeded, not paused: nothing to decide" in again.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("decide", "01nosuchsession000", "continue"), "01nosuchsession000"),
        (("decide", "../escape", "continue"), "../escape"),
        (
            ("demo", "--on-pause", "sometimes"),
            "--on-pause 'sometimes': choose one of exit, stop, continue, wait",
        ),
    ],
)
def test_garbage_on_the_review_commands_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    """An unknown session, a path as an id, an unknown ``--on-pause``: exit 2 naming the bad value."""
    done = orchestrate(*args, workspace=tmp_path / "ws")
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert sessions_in(tmp_path / "ws") == []


# -- 4. a critical finding: STOP ----------------------------------------------------------------------


def test_a_critical_security_finding_stops_the_session_and_merges_nothing(ws: Path) -> None:
    """STOP (rule 1): exit 3, the task stopped, config.py not merged, no container or network left."""
    done = demo(SCENARIOS / "review-critical.toml", ws)
    assert done.returncode == 3, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    assert (report["status"], report["exit_code"]) == ("stopped", 3)
    assert task_summary(report) == [("t1", "stopped", "STOP (rule 1)", [])]
    events = read_events(ws, session)
    assert decisions(events) == [(DecisionAction.STOP, 1)]
    reasons = of_type(events, ev.Decision)[0].data.decision.reasons
    assert any("critical" in r and "CRITICAL-TOKEN-9X" in r for r in reasons), reasons
    assert of_type(events, ev.Merged) == []
    assert on_branch(repo_of(ws, session), session, "config.py") is None
    assert leftovers(session) == ([], [])


# -- 5. a risky tool call: the container is frozen during the review ----------------------------------


def paused_during_review(workspace: Path, worker: str, proc: subprocess.Popen[str]) -> list[bool]:
    """While the risky action's reviewers run: is ``worker``'s container paused? One answer per look."""
    seen: list[bool] = []
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.25)
        found = sessions_in(workspace)
        if not found:
            continue
        events = read_events(workspace, found[0])
        if of_type(events, ev.Decision):
            break
        requested = [
            e for e in of_type(events, ev.ReviewRequested) if e.data.request.trigger == "risky_action"
        ]
        reviewing = [e for e in of_type(events, ev.WorkerStarted) if e.worker.startswith("reviewer-")]
        if not requested or not reviewing:
            continue
        container = [e.data.container_id for e in of_type(events, ev.WorkerStarted) if e.worker == worker][-1]
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{.State.Paused}}", container],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if not of_type(read_events(workspace, found[0]), ev.Decision):  # still under review when looked at
            seen.append(state.stdout.split() == ["paused", "true"])
    return seen


def test_a_risky_push_freezes_the_author_during_the_review_and_a_critical_verdict_stops_it(ws: Path) -> None:
    """``git push origin main``: paused while Codex and Gemini review; STOP (rule 1), exit 3."""
    watch = subprocess.Popen(
        ["docker", "events", "--filter", "event=pause", "--filter", "event=unpause", "--format", "{{json .}}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    argv = [sys.executable, "-m", "orchestrator.main", "demo", "--json", "--scenario",
            str(SCENARIOS / "review-risky-push.toml")]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=environment(ws), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        looks = paused_during_review(ws, "claude-t1", proc)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        watch.terminate()
        seen_events, _ = watch.communicate(timeout=30)
    assert proc.returncode == 3, err[-4000:]
    assert looks and all(looks), looks  # at least one look during the review, and always paused
    report = json.loads(out)
    session = report["session_id"]
    assert (report["status"], task_summary(report)) == ("stopped", [("t1", "stopped", "STOP (rule 1)", [])])
    events = read_events(ws, session)
    push = [e for e in of_type(events, ev.ToolCall) if "git push" in json.dumps(e.data.input)]
    requested = of_type(events, ev.ReviewRequested)
    assert [r.data.request.trigger for r in requested] == ["risky_action"]
    assert len(push) == 1 and push[0].worker == "claude-t1" and push[0].seq < requested[0].seq
    assert decisions(events) == [(DecisionAction.STOP, 1)]
    author = [e for e in of_type(events, ev.WorkerStarted) if e.worker == "claude-t1"]
    container = author[-1].data.container_id
    actions = [json.loads(line)["Action"] for line in seen_events.splitlines() if container in line]
    assert actions[:1] == ["pause"], actions
    exits = [e.data.reason for e in of_type(events, ev.WorkerExited) if e.worker == "claude-t1"]
    assert exits == ["stopped"]
    assert of_type(events, ev.Merged) == []
    assert on_branch(repo_of(ws, session), session, "CHANGES.md") is None
    assert leftovers(session) == ([], [])


# -- 6. garbage reviews: the work is kept, unreviewed ------------------------------------------------


def test_reviewers_answering_garbage_twice_leave_the_work_unreviewed_but_merged(ws: Path) -> None:
    """Prose, then JSON that is no review, from both: WARN (rule 3) "unreviewed", no fix round, merged."""
    done = demo(SCENARIOS / "review-garbage.toml", ws)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    assert task_summary(report) == [("t1", "succeeded", "WARN (rule 3)", ["hello.py"])]
    events = read_events(ws, session)
    assert decisions(events) == [(DecisionAction.WARN, 3)]
    decision = of_type(events, ev.Decision)[0].data.decision
    assert decision.reviews == []
    assert any("unreviewed" in r for r in decision.reasons), decision.reasons
    invalid = sorted(
        (e.worker.split("-")[1], "no JSON object" in e.data.message)
        for e in of_type(events, ev.Error)
        if e.data.message.startswith("invalid review answer")
    )
    assert invalid == [("claude", False), ("claude", True), ("codex", False), ("codex", True)]
    assert of_type(events, ev.ReviewReceived) == []
    assert len([e for e in of_type(events, ev.WorkerStarted) if e.worker == "gemini-t1"]) == 1
    assert on_branch(repo_of(ws, session), session, "hello.py") == 'def hello() -> str:\n    return "hello"\n'
    assert git(repo_of(ws, session), "status", "--porcelain").stdout == ""
    assert leftovers(session) == ([], [])
