"""Crash safety and signals on real Docker with the real Codex CLI and the scripted model server.

Each test runs ``orchestrate demo --scenario slow-one-task.toml`` (a planner and one Codex writer
with slow model turns) as a child process, interrupts it while the worker runs, and checks what a
person or a CI job relies on: the exit code, no container left behind (or left on purpose), a
gap-free log that ends with the interruption, and a ``resume`` that finishes the session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.models import lines_of
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "fixtures" / "scenarios" / "slow-one-task.toml"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def env(tmp_path: Path, images: dict[str, str]) -> Iterator[dict[str, str]]:
    """A workspace of its own; writers start on their top rung; no reviews (not under test here)."""
    workspace = tmp_path / "ws"
    values = {
        **os.environ,
        "ORCH_WORKSPACE": str(workspace),
        "ORCH_RECOVERY__WRITER_START_RUNG": "2",
        "ORCH_REVIEW__ENABLED": "false",
        "ORCH_GRACE_PERIOD_S": "5",
    }
    yield values
    for session in _sessions(workspace):
        leftovers = _containers(session, running_only=False)
        if leftovers:
            _docker("rm", "-f", *leftovers)
        subprocess.run(["docker", "network", "rm", f"orch-{session}"], capture_output=True, check=False)


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False).stdout


def _containers(session: str, running_only: bool = True) -> list[str]:
    args = ["ps", "-q", "--filter", f"label=orchestrator.session={session}"]
    if not running_only:
        args.insert(1, "-a")
    return _docker(*args).split()


def _sessions(workspace: Path) -> list[str]:
    if not workspace.is_dir():
        return []
    return [p.name for p in workspace.iterdir() if (p / "events.jsonl").exists()]


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "orchestrator.main", "demo", "--json", "--scenario", str(SCENARIO)]
    return subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_worker(env: dict[str, str], timeout_s: float = 120) -> str:
    """The session id, once the Codex worker's container runs and printed something."""
    workspace = Path(env["ORCH_WORKSPACE"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for session in _sessions(workspace):
            events = list(EventReader(SessionPaths.of(workspace, session)).read())
            if any(lines_of(e.data) and e.worker == "codex-t1" for e in events):
                return session
        time.sleep(0.2)
    raise AssertionError("the Codex worker never printed a line")


def _events(env: dict[str, str], session: str) -> list[object]:
    return list(EventReader(SessionPaths.of(Path(env["ORCH_WORKSPACE"]), session)).read())


def _resume(env: dict[str, str], session: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "orchestrator.main", "resume", session, "--json"]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def _assert_finished(env: dict[str, str], session: str, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [(t["id"], t["status"]) for t in report["tasks"]] == [("t1", "succeeded")]
    seqs = [e.seq for e in _events(env, session)]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(seqs) + 1))
    assert _containers(session) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_workers_records_the_interruption_and_resume_finishes(
    env: dict[str, str], sig: signal.Signals, code: int
) -> None:
    """SIGINT -> 130, SIGTERM -> 143; no container left; the log ends with the interruption."""
    proc = _start(env)
    session = _wait_for_worker(env)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-3000:]
    assert "resume" in err
    assert _containers(session) == []
    events = _events(env, session)
    assert events[-1].type == "session_interrupted"  # type: ignore[attr-defined]
    assert events[-1].data.signal == sig.name  # type: ignore[attr-defined]
    _assert_finished(env, session, _resume(env, session))


def test_a_second_sigint_exits_at_once_and_resume_reattaches_the_running_worker(env: dict[str, str]) -> None:
    """Double Ctrl-C: containers are left running on purpose; resume re-attaches without duplicates."""
    proc = _start(env)
    session = _wait_for_worker(env)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    seen = ""
    while "stopping the workers" not in seen:  # the first is being handled: send the second now
        seen = proc.stderr.readline()
        assert seen, "the orchestrator ended without handling SIGINT"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-3000:]
    assert "keep running" in err
    assert _containers(session) != []
    _assert_finished(env, session, _resume(env, session))
    lines = [text for e in _events(env, session) if e.worker == "codex-t1" for text in lines_of(e.data)]
    assert len(lines) == len(set(lines)), "a line was stored twice"


def test_kill_9_loses_nothing_the_worker_printed(env: dict[str, str]) -> None:
    """SIGKILL of the orchestrator: resume stores exactly the lines `docker logs` shows, once each."""
    proc = _start(env)
    session = _wait_for_worker(env)
    proc.kill()
    proc.communicate(timeout=30)
    worker = [c for c in _containers(session, running_only=False)
              if "codex-t1" in _docker("inspect", "-f", "{{.Name}}", c)]  # fmt: skip
    assert len(worker) == 1
    subprocess.run(["docker", "wait", worker[0]], capture_output=True, timeout=120, check=False)
    logged = subprocess.run(["docker", "logs", worker[0]], capture_output=True, text=True, check=False)
    printed = [line for line in (logged.stdout + logged.stderr).splitlines() if line.strip()]
    _assert_finished(env, session, _resume(env, session))
    first_attempt: list[str] = []
    attempts = 0
    for event in _events(env, session):
        if event.worker == "codex-t1" and event.type == "worker_started":  # type: ignore[attr-defined]
            attempts += 1
        elif event.worker == "codex-t1" and attempts == 1:
            first_attempt += lines_of(event.data)
    assert sorted(first_attempt) == sorted(printed)
    assert len(first_attempt) == len(set(first_attempt))


def test_two_resumes_at_once_run_exactly_one(env: dict[str, str]) -> None:
    """The second resume is refused (exit 2, the lock names the holder); the first finishes."""
    proc = _start(env)
    session = _wait_for_worker(env)
    proc.kill()
    proc.communicate(timeout=30)
    argv = [sys.executable, "-m", "orchestrator.main", "resume", session, "--json"]
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(1.5)
    second = _resume(env, session)
    out, err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "being run by pid" in second.stderr
    _assert_finished(env, session, subprocess.CompletedProcess(argv, first.returncode, out, err))


def test_a_finished_session_cannot_be_resumed(env: dict[str, str]) -> None:
    """Resume of a finished session: a clear error, exit 2."""
    proc = _start(env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    session = json.loads(out)["session_id"]
    again = _resume(env, session)
    assert again.returncode == 2
    assert "has finished" in again.stderr


def test_a_worker_container_removed_while_down_is_relaunched_resuming_its_cli_session(
    env: dict[str, str],
) -> None:
    """kill -9, then the worker's container disappears: resume starts a new one with the CLI's resume id."""
    proc = _start(env)
    session = _wait_for_worker(env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        e.type == "cli_session" and e.worker == "codex-t1"
        for e in _events(env, session)  # type: ignore[attr-defined]
    ):
        time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=30)
    workers = [
        c
        for c in _containers(session, running_only=False)
        if "codex-t1" in _docker("inspect", "-f", "{{.Name}}", c)
    ]
    _docker("rm", "-f", *workers)
    _assert_finished(env, session, _resume(env, session))
    started = [e for e in _events(env, session) if e.type == "worker_started" and e.worker == "codex-t1"]  # type: ignore[attr-defined]
    thread = next(
        e.data.id for e in _events(env, session) if e.type == "cli_session" and e.worker == "codex-t1"
    )  # type: ignore[attr-defined]
    assert len(started) >= 2
    assert "resume" in started[1].data.argv and thread in started[1].data.argv  # type: ignore[attr-defined]


def test_kill_9_during_planning_then_resume_plans_and_finishes(env: dict[str, str]) -> None:
    """Killed before the plan was recorded: resume plans again and finishes the session."""
    proc = _start(env)
    workspace = Path(env["ORCH_WORKSPACE"])
    deadline = time.monotonic() + 120
    session = ""
    while not session and time.monotonic() < deadline:
        for found in _sessions(workspace):
            if any(e.worker == "planner" and e.type == "worker_started" for e in _events(env, found)):  # type: ignore[attr-defined]
                session = found
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=30)
    assert session
    planned_before = any(e.type == "plan_ready" for e in _events(env, session))  # type: ignore[attr-defined]
    _assert_finished(env, session, _resume(env, session))
    plans = [e for e in _events(env, session) if e.type == "plan_ready"]  # type: ignore[attr-defined]
    assert len(plans) == 1 or not planned_before
