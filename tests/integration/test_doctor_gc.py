"""``orchestrate doctor`` and ``gc`` on a real engine: orphans of a killed session are found and removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.paths import SessionPaths
from orchestrator.store import EventWriter

ROOT = Path(__file__).resolve().parents[2]


def _cli(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")} | {
        "ORCH_WORKSPACE": str(workspace)
    }
    return subprocess.run([sys.executable, "-m", "orchestrator.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_doctor_lists_and_gc_removes_the_containers_of_a_session_no_process_runs(
    tmp_path: Path, images: dict[str, str]
) -> None:
    """A container left by a killed orchestrator is an orphan; a live session's container is not."""
    workspace = tmp_path / "ws"
    dead, live = "orphan000001", "livesess0001"
    for session in (dead, live):
        with EventWriter.open(SessionPaths.of(workspace, session)):
            pass
    started = []
    for session in (dead, live):
        run = subprocess.run(
            ["docker", "run", "-d", "--label", "orchestrator.managed=true", "--label", f"orchestrator.session={session}",
             "--label", "orchestrator.worker=codex-t1", images["base"], "sleep", "300"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        started.append(run.stdout.strip())
    holder = EventWriter.open(SessionPaths.of(workspace, live))  # this process runs the live session
    try:
        doctor = _cli(workspace, "doctor")
        assert dead in doctor.stdout
        assert live not in doctor.stdout.split("orphaned containers:")[1]
        gc = _cli(workspace, "gc")
        assert gc.returncode == 0, gc.stderr
        assert dead in gc.stdout and live not in gc.stdout
        running = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True, check=True
        ).stdout
        assert started[0] not in running
        assert started[1] in running
    finally:
        holder.close()
        subprocess.run(["docker", "rm", "-f", *started], capture_output=True, check=False)


def test_doctor_names_the_fix_for_each_missing_credential(tmp_path: Path) -> None:
    """No keys: each agent's line says which variable or folder to set."""
    doctor = _cli(tmp_path / "ws", "doctor")
    for agent in ("CLAUDE", "CODEX", "GEMINI"):
        assert f"ORCH_{agent}__API_KEY" in doctor.stdout


def test_gc_removes_the_host_firewall_rule_of_a_bridge_that_is_gone(tmp_path: Path) -> None:
    """A crash can leave a session's INPUT rule behind after its bridge went away: gc removes it."""
    rule = [
        "INPUT",
        "-i",
        "orchgone00001",
        "-m",
        "comment",
        "--comment",
        "meta-orchestrator session",
        "-j",
        "REJECT",
    ]
    subprocess.run(["iptables", "-w", "5", "-I", *rule], check=True)
    try:
        gc = _cli(tmp_path / "ws", "gc")
        assert "orchgone00001" in gc.stdout
        left = subprocess.run(
            ["iptables", "-w", "5", "-S", "INPUT"], capture_output=True, text=True, check=True
        )
        assert "orchgone00001" not in left.stdout
    finally:
        subprocess.run(["iptables", "-w", "5", "-D", *rule], capture_output=True, check=False)
