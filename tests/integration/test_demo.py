"""Whole sessions on real Docker with the real CLIs and the scripted model server.

- ``orchestrate demo --json`` as a person runs it: exit 0, three tasks succeeded (the writers
  escalated from rung 0), both files on ``orch/<session>``, ``report.json`` / ``report.md`` written,
  nothing of the session left running and its network gone.
- ``orchestrate demo --scenario`` with a planner whose plan is invalid twice: exit 1, the reason
  in the report.
- Two tasks writing the same file differently (a ``SessionHost`` session against the model server,
  ``--on-pause exit``): the second merge conflicts, the session pauses naming the file, exit 4.
- ``orchestrate run --repo <dirty>``: refused with exit 2 before anything starts.

Containers and networks carry ``orchestrator.session=<id>`` and are removed by it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import Settings
from orchestrator.coordinator import SessionOptions
from orchestrator.errors import SessionPausedExit
from orchestrator.gitwork import git
from orchestrator.models import AgentName
from orchestrator.models import events as ev
from orchestrator.paths import SessionPaths, new_session_id
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.runtime.protocol import SESSION_LABEL
from orchestrator.sessions import SessionHost, network_name
from orchestrator.store import EventReader

ROOT = Path(__file__).resolve().parents[2]
GREETING = 'def greet(name: str) -> str:\n    return f"hello, {name}"\n'
NOTES = "# Notes\n\n- greeting.py provides greet(name).\n- The repository layout was surveyed before any change.\n"
pytestmark = pytest.mark.timeout(600)


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


def leftovers(session: str) -> tuple[list[str], list[str]]:
    """Names of ``session``'s containers and networks that still exist."""
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"})
        nets = client.networks.list(names=[network_name(session)])
        return [c.name for c in found], [n.name for n in nets]
    finally:
        client.close()


def sessions_in(workspace: Path) -> list[str]:
    return (
        [p.name for p in workspace.iterdir() if (p / "events.jsonl").exists()] if workspace.is_dir() else []
    )


@pytest.fixture
def ws(tmp_path: Path, images: dict[str, str]) -> Iterator[Path]:
    """A workspace of the test's own; every session started in it is cleaned up afterwards."""
    path = tmp_path / "ws"
    yield path
    for session in sessions_in(path):
        remove_session(session)


def orchestrate(*args: str, workspace: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``orchestrate ARGS`` as a child process with its own workspace."""
    values = {**os.environ, "ORCH_WORKSPACE": str(workspace), "ORCH_GRACE_PERIOD_S": "3", **env}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.main", *args],
        env=values, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip


def test_the_demo_runs_three_tasks_with_recovery_reviews_and_merges(ws: Path) -> None:
    """Exit 0; t1 (Gemini, read-only), t2 (Codex) and t3 (Claude) succeed; both files are merged."""
    done = orchestrate("demo", "--json", workspace=ws)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    session = report["session_id"]
    paths = SessionPaths.of(ws, session)
    tasks = {t["id"]: t for t in report["tasks"]}
    assert (report["status"], report["exit_code"], report["branch"]) == ("succeeded", 0, f"orch/{session}")
    assert {(t["id"], t["agent"], t["status"]) for t in report["tasks"]} == {
        ("t1", "gemini", "succeeded"), ("t2", "codex", "succeeded"), ("t3", "claude", "succeeded"),
    }  # fmt: skip
    escalations = [
        r for t in report["tasks"] for r in t["recoveries"] if r.startswith("escalate_permissions")
    ]
    assert len(escalations) >= 2, tasks  # both writers start on rung 0
    assert (tasks["t2"]["files_changed"], tasks["t3"]["files_changed"]) == (["greeting.py"], ["NOTES.md"])
    assert [tasks[t]["review"] for t in ("t1", "t2", "t3")] == [
        None,
        "CONTINUE (rule 4)",
        "CONTINUE (rule 4)",
    ]
    repo = Path(report["repo"])
    branch = f"orch/{session}"
    assert git(repo, "show", f"{branch}:greeting.py").stdout == GREETING
    assert git(repo, "show", f"{branch}:NOTES.md").stdout == NOTES
    assert git(repo, "status", "--porcelain").stdout == ""
    assert json.loads(paths.report_json.read_text()) == report
    markdown = paths.report_md.read_text()
    assert markdown.startswith(f"# Session {session}: succeeded\n")
    assert f"- Merged branch: `{branch}`" in markdown
    assert leftovers(session) == ([], [])


INVALID_PLAN = """
description = "a planner whose plan has a dependency cycle, every time"

[[script]]
name = "planner"
agent = "claude"
prompt = "You are the planner of a team of coding agents"

[[script.turn]]
repeat = "forever"
json = { goal = "loop", rationale = "r", tasks = [
  { id = "t1", title = "a", description = "a", agent = "codex", dirs = [{ path = ".", mode = "rw" }], depends_on = ["t2"], acceptance = [] },
  { id = "t2", title = "b", description = "b", agent = "codex", dirs = [{ path = ".", mode = "rw" }], depends_on = ["t1"], acceptance = [] },
] }
"""


def test_a_plan_invalid_twice_fails_the_demo_with_the_reason(ws: Path, tmp_path: Path) -> None:
    """Both planner answers have a cycle: one retry, then exit 1 and the error in the report; no task ran."""
    scenario = tmp_path / "invalid-plan.toml"
    scenario.write_text(INVALID_PLAN)
    done = orchestrate("demo", "--json", "--scenario", str(scenario), workspace=ws)
    assert done.returncode == 1, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert (report["status"], report["exit_code"], report["tasks"]) == ("failed", 1, [])
    assert any("invalid twice" in e and "cycle" in e for e in report["errors"]), report["errors"]
    events = list(EventReader(SessionPaths.of(ws, report["session_id"])).read())
    assert [e.worker for e in events if e.type == "worker_started"] == ["planner", "planner"]


CONFLICT = """
description = "two writers create greeting.py with different content"

[[script]]
name = "planner"
agent = "claude"
prompt = "You are the planner of a team of coding agents"

[[script.turn]]
repeat = "forever"
json = { goal = "greet", rationale = "two takes", tasks = [
  { id = "t1", title = "greeting by claude", description = "Claude writes greeting.py", agent = "claude", dirs = [{ path = ".", mode = "rw" }], depends_on = [], acceptance = [] },
  { id = "t2", title = "greeting by codex", description = "Codex writes greeting.py", agent = "codex", dirs = [{ path = ".", mode = "rw" }], depends_on = [], acceptance = [] },
] }

[[script]]
name = "claude-writer"
agent = "claude"
prompt = "Claude writes greeting.py"

[[script.turn]]
write = { path = "greeting.py", content = "print('hello from claude')\\n" }

[[script.turn]]
text = "Wrote greeting.py."

[[script]]
name = "codex-writer"
agent = "codex"
prompt = "Codex writes greeting.py"

[[script.turn]]
write = { path = "greeting.py", content = "print('hello from codex')\\n" }

[[script.turn]]
text = "Wrote greeting.py."
"""


def example_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("# example\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "init")
    return path


def test_two_tasks_writing_one_file_pause_the_session_naming_it(ws: Path, tmp_path: Path) -> None:
    """The second merge conflicts in greeting.py: ``merge_conflict`` and ``session_paused`` name it;
    with ``--on-pause exit`` the session exits 4 (resumable), the first task's file merged."""
    scenario = tmp_path / "conflict.toml"
    scenario.write_text(CONFLICT)
    repo = example_repo(tmp_path / "repo")
    settings = Settings(  # writers start on their top rung: permissions are not under test here
        _env_file=None, workspace=ws, grace_period_s=3.0,
        recovery={"writer_start_rung": 2}, review={"enabled": False},
    )  # fmt: skip
    session = new_session_id()
    host = SessionHost(settings, DockerRuntime())
    options = SessionOptions(repo=repo, agents=(AgentName.CLAUDE, AgentName.CODEX), on_pause="exit")

    async def main() -> Any:
        async with host.model_server(session, scenario) as scripted:
            return await SessionHost(scripted, host.runtime).run("greet", options, session)

    try:
        with pytest.raises(SessionPausedExit) as paused:
            asyncio.run(main())
        events = list(EventReader(SessionPaths.of(ws, session)).read())
    finally:
        remove_session(session)
    assert paused.value.exit_code == 4
    conflicts = [e.data for e in events if isinstance(e.data, ev.MergeConflict)]
    pauses = [e.data for e in events if isinstance(e.data, ev.SessionPaused)]
    assert [c.files for c in conflicts] == [["greeting.py"]]
    assert len(pauses) == 1 and "greeting.py" in pauses[0].reason
    merged = [e.data for e in events if isinstance(e.data, ev.Merged)]
    assert len(merged) == 1
    content = git(repo, "show", f"orch/{session}:greeting.py").stdout
    assert content in ("print('hello from claude')\n", "print('hello from codex')\n")


def test_a_dirty_repository_is_refused_with_exit_2(ws: Path, tmp_path: Path) -> None:
    """Uncommitted changes: exit 2 and a message naming the file and the fix; no session folder."""
    repo = example_repo(tmp_path / "dirty")
    (repo / "README.md").write_text("# changed\n")
    keys = {f"ORCH_{a.upper()}__API_KEY": "dummy-key-not-used" for a in ("claude", "codex", "gemini")}
    done = orchestrate("run", "do something", "--repo", str(repo), "--json", workspace=ws, **keys)
    assert done.returncode == 2, done.stderr
    assert "uncommitted changes (README.md)" in done.stderr
    assert "--allow-dirty" in done.stderr
    assert (done.stdout, sessions_in(ws)) == ("", [])
