"""The Docker engine restarted during a session: a clear error, a whole log, and resume finishes it.

Runs last (``zz``): it stops and starts the machine's Docker engine (``scripts/docker-engine``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.models import lines_of
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "fixtures" / "scenarios" / "slow-one-task.toml"
pytestmark = pytest.mark.timeout(900)


def _restart_engine() -> None:
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
    for _ in range(60):
        if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, check=False).returncode != 0:
            break
        time.sleep(1)
    subprocess.run([str(ROOT / "scripts" / "docker-engine")], check=True, timeout=180)


def test_an_engine_restart_mid_session_fails_clearly_and_resume_finishes(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """The run ends (never hangs) with the engine error named; the log is gap-free; resume succeeds."""
    workspace = tmp_path / "ws"
    env = {**os.environ, "ORCH_WORKSPACE": str(workspace), "ORCH_RECOVERY__WRITER_START_RUNG": "2",
           "ORCH_REVIEW__ENABLED": "false", "ORCH_GRACE_PERIOD_S": "3"}  # fmt: skip
    argv = [sys.executable, "-m", "orchestrator.main", "demo", "--json", "--scenario", str(SCENARIO)]
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    session = ""
    deadline = time.monotonic() + 180
    while not session and time.monotonic() < deadline:
        for folder in workspace.glob("*/events.jsonl"):
            events = list(EventReader(SessionPaths.of(workspace, folder.parent.name)).read())
            if any(lines_of(e.data) and e.worker == "codex-t1" for e in events):
                session = folder.parent.name
        time.sleep(0.2)
    assert session, "the worker never started"
    try:
        _restart_engine()
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert proc.returncode not in (0, None)
    assert "error" in err.lower()
    seqs = [e.seq for e in EventReader(SessionPaths.of(workspace, session)).read()]
    assert seqs == list(range(1, len(seqs) + 1))
    resumed = subprocess.run([sys.executable, "-m", "orchestrator.main", "resume", session, "--json"], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [t["status"] for t in json.loads(resumed.stdout)["tasks"]] == ["succeeded"]
