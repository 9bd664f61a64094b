"""The coordinator on the FakeRuntime: planning, scheduling, isolation, review, merge, report."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.coordinator import SessionOptions
from orchestrator.errors import DirtyRepository
from orchestrator.gitwork import git
from orchestrator.models import AgentName
from orchestrator.paths import SessionPaths
from orchestrator.runtime import FakeLine, FakeProcess, FakeRuntime
from orchestrator.sessions import SessionHost
from orchestrator.store import EventReader
from tests.support.fake_agents import FakeAgents, codex_lines, plan, task
from tests.support.repos import make_repo

IMAGES = {n: f"img-{n}:1" for n in ("base", "claude", "codex", "gemini", "modelserver")}


class Host(SessionHost):
    def images(self) -> dict[str, str]:
        return IMAGES


def _settings(tmp_path: Path, **extra: object) -> Settings:
    base: dict[str, object] = {"workspace": tmp_path / "ws", "flush_interval_s": 0.001, "network": "none"}
    base.update(extra)
    settings = Settings(_env_file=None, **base)  # type: ignore[call-arg]
    keys = {
        a: settings.agent(a).model_copy(update={"api_key": SecretStr("test-key-123456")})
        for a in ("claude", "codex", "gemini")
    }
    return settings.model_copy(update=keys)


def _run(settings: Settings, script: FakeAgents, repo: Path, **options: object) -> tuple[object, FakeRuntime]:
    runtime = FakeRuntime(script=script)
    host = Host(settings, runtime)
    report = asyncio.run(host.run("do the thing", SessionOptions(repo=repo, **options), "sess0001"))  # type: ignore[arg-type]
    return report, runtime


DEMO_PLAN = plan(task("t1", "gemini", writes=False), task("t2", "codex"), task("t3", "claude", deps=("t1",)))


def test_a_session_plans_runs_reviews_merges_and_reports(tmp_path: Path) -> None:
    """Three tasks succeed; the two writers' files land on orch/<session>; the report says so."""
    repo = make_repo(tmp_path)
    agents = FakeAgents(
        [DEMO_PLAN], files={"codex-t2": {"greeting.py": "x\n"}, "claude-t3": {"NOTES.md": "n\n"}}
    )
    report, _ = _run(_settings(tmp_path), agents, repo)
    assert (report.status, report.exit_code) == ("succeeded", 0)  # type: ignore[attr-defined]
    assert [t.status for t in report.tasks] == ["succeeded"] * 3  # type: ignore[attr-defined]
    assert git(repo, "ls-tree", "--name-only", "orch/sess0001").stdout.split() == [
        "NOTES.md",
        "app.py",
        "greeting.py",
    ]
    assert git(repo, "status", "--porcelain").stdout == ""
    reviewed = [t.review for t in report.tasks]  # type: ignore[attr-defined]
    assert reviewed == [None, "CONTINUE (rule 4)", "CONTINUE (rule 4)"]
    paths = SessionPaths.of(tmp_path / "ws", "sess0001")
    assert paths.report_json.exists() and paths.report_md.exists()
    seqs = [e.seq for e in EventReader(paths).read()]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_dependant_starts_after_its_dependency_and_parallelism_is_bounded(tmp_path: Path) -> None:
    """t3 waits for t1; with max_parallel=1 no two workers overlap."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([DEMO_PLAN], files={"codex-t2": {"a.txt": "a\n"}, "claude-t3": {"b.txt": "b\n"}})
    report, _runtime = _run(_settings(tmp_path, review={"enabled": False}), agents, repo, max_parallel=1)
    events = list(EventReader(SessionPaths.of(tmp_path / "ws", "sess0001")).read())
    spans: dict[str, list[int]] = {}
    for event in events:
        if event.type in ("worker_started", "worker_exited") and event.worker != "planner":
            spans.setdefault(event.worker, []).append(event.seq)
    ordered = sorted(spans.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ordered))
    assert spans["gemini-t1"][1] < spans["claude-t3"][0]
    assert report.exit_code == 0  # type: ignore[attr-defined]


def test_a_failed_dependency_skips_its_dependants_and_fails_the_session(tmp_path: Path) -> None:
    """t1 fails beyond recovery (auth): t3 is skipped, never started; exit 1."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([DEMO_PLAN], files={"codex-t2": {"a.txt": "a\n"}},
                        fail={"gemini-t1": FakeProcess(lines=[], exit_code=41)})  # fmt: skip
    report, _ = _run(_settings(tmp_path, review={"enabled": False}), agents, repo)
    statuses = {t.id: t.status for t in report.tasks}  # type: ignore[attr-defined]
    assert statuses == {"t1": "failed", "t2": "succeeded", "t3": "skipped"}
    assert "claude-t3" not in agents.started
    assert report.exit_code == 1  # type: ignore[attr-defined]


def test_a_plan_invalid_twice_fails_the_session_with_the_reason(tmp_path: Path) -> None:
    """A cycle in both answers: one retry carrying the error, then exit 1 with the error reported."""
    repo = make_repo(tmp_path)
    cyclic = plan(task("t1", "codex", deps=("t2",)), task("t2", "codex", deps=("t1",)))
    agents = FakeAgents([cyclic, cyclic])
    report, _ = _run(_settings(tmp_path), agents, repo)
    assert agents.started.count("planner") == 2
    assert report.exit_code == 1  # type: ignore[attr-defined]
    assert any("cycle" in e for e in report.errors)  # type: ignore[attr-defined]


def test_a_plan_fixed_on_retry_is_used(tmp_path: Path) -> None:
    """The planner's second answer, after the validation error, is the plan."""
    repo = make_repo(tmp_path)
    agents = FakeAgents(["no json here", plan(task("t1", "gemini", writes=False))])
    report, _ = _run(_settings(tmp_path), agents, repo)
    assert report.exit_code == 0  # type: ignore[attr-defined]


def test_a_dirty_repository_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Uncommitted changes: DirtyRepository (exit 2), no container started."""
    repo = make_repo(tmp_path)
    (repo / "app.py").write_text("changed\n")
    agents = FakeAgents([DEMO_PLAN])
    with pytest.raises(DirtyRepository) as info:
        _run(_settings(tmp_path), agents, repo)
    assert info.value.exit_code == 2
    assert agents.started == []


def test_a_critical_review_stops_the_session_and_nothing_is_merged(tmp_path: Path) -> None:
    """STOP: exit 3, the session stopped, the integration branch unchanged."""
    repo = make_repo(tmp_path)
    bad = '{"request_id":"x","reviewer":"x","verdict":"reject","severity":"critical","confidence":0.9,"findings":[],"summary":"no"}'
    agents = FakeAgents([plan(task("t1", "codex"))], files={"codex-t1": {"a.txt": "a\n"}}, review_answer=bad)
    report, runtime = _run(_settings(tmp_path), agents, repo)
    assert (report.status, report.exit_code) == ("stopped", 3)  # type: ignore[attr-defined]
    assert git(repo, "ls-tree", "--name-only", "orch/sess0001").stdout.split() == ["app.py"]
    assert all(not c.running for c in asyncio.run(runtime.find({"orchestrator.session": "sess0001"})))


def test_cancelling_a_session_stops_every_container(tmp_path: Path) -> None:
    """A cancelled run (a signal, a crash of the caller) leaves no container running."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([plan(task("t1", "codex"), task("t2", "claude"))],
                        fail={"codex-t1": FakeProcess(hang=True), "claude-t2": FakeProcess(hang=True)})  # fmt: skip
    runtime = FakeRuntime(script=agents)
    host = Host(_settings(tmp_path), runtime)

    async def scenario() -> None:
        running = asyncio.ensure_future(host.run("x", SessionOptions(repo=repo), "sess0001"))
        for _ in range(200):
            if {"codex-t1", "claude-t2"} <= set(agents.started):
                break
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert [c.name for c in await runtime.find({"orchestrator.session": "sess0001"}) if c.running] == []

    asyncio.run(scenario())


def test_agents_outside_the_allowed_set_are_refused_in_the_plan(tmp_path: Path) -> None:
    """--agents gemini,claude: a plan using codex is sent back, then fails."""
    repo = make_repo(tmp_path)
    agents = FakeAgents([plan(task("t1", "codex"))] * 2)
    report, _ = _run(_settings(tmp_path), agents, repo, agents=(AgentName.GEMINI, AgentName.CLAUDE))
    assert report.exit_code == 1  # type: ignore[attr-defined]
    assert any("not allowed" in e for e in report.errors)  # type: ignore[attr-defined]


PUSH = [
    '{"type":"thread.started","thread_id":"th1"}',
    '{"type":"item.started","item":{"id":"i2","type":"command_execution","command":"git push origin main",'
    '"aggregated_output":"","exit_code":null,"status":"in_progress"}}',
]


def test_a_risky_tool_call_freezes_the_worker_until_the_review_stops_the_session(tmp_path: Path) -> None:
    """`git push`: the container is paused, reviewed; a critical verdict stops it: exit 3."""
    repo = make_repo(tmp_path)
    critical = '{"request_id":"x","reviewer":"x","verdict":"reject","severity":"critical","confidence":0.9,"findings":[],"summary":"no push"}'
    agents = FakeAgents([plan(task("t1", "codex"))], review_answer=critical,
                        fail={"codex-t1": FakeProcess(lines=PUSH, hang=True)})  # fmt: skip
    report, runtime = _run(_settings(tmp_path), agents, repo)
    calls = [c for c in runtime.calls if c[0] in ("pause", "stop", "unpause")]
    assert [c[0] for c in calls][:1] == ["pause"]
    assert (report.status, report.exit_code) == ("stopped", 3)  # type: ignore[attr-defined]
    assert all(not c.running for c in asyncio.run(runtime.find({"orchestrator.session": "sess0001"})))
    events = list(EventReader(SessionPaths.of(tmp_path / "ws", "sess0001")).read())
    requested = [e.data.request.trigger for e in events if e.type == "review_requested"]  # type: ignore[union-attr]
    assert requested == ["risky_action"]


def test_a_risky_tool_call_approved_by_the_reviewers_thaws_the_worker(tmp_path: Path) -> None:
    """CONTINUE: the container is unpaused and the task goes on to succeed."""
    repo = make_repo(tmp_path)
    lines = [*PUSH, *(FakeLine(line, after_s=0.3) for line in codex_lines("pushed nothing, done")[1:])]
    agents = FakeAgents([plan(task("t1", "codex"))], fail={"codex-t1": FakeProcess(lines=lines)})
    report, runtime = _run(_settings(tmp_path), agents, repo)
    kinds = [c[0] for c in runtime.calls]
    assert "pause" in kinds and "unpause" in kinds[kinds.index("pause") :]
    assert report.exit_code == 0  # type: ignore[attr-defined]
