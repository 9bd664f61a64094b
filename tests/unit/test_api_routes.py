"""The routes of API_SPEC.md: status codes, bodies and error bodies, with a ``FakeSessionRunner``.

The fake writes real event logs; the API reads them back from the files, as it does for sessions
run by the coordinator in this process or by ``orchestrate run`` in another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.listing import PROMPT_CUT
from api.testing import FakeSessionRunner
from orchestrator.config import Settings
from orchestrator.errors import DirtyRepository, UnsafeMount
from orchestrator.models import (
    Output,
    PlanReady,
    SessionCreated,
    SessionInterrupted,
    SessionPaused,
    SubTask,
    TaskBreakdown,
    Usage,
    WorkerStarted,
)
from orchestrator.paths import SessionPaths
from orchestrator.store import EventWriter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def runner(settings: Settings) -> FakeSessionRunner:
    return FakeSessionRunner(settings)


@pytest.fixture
def app(settings: Settings, runner: FakeSessionRunner) -> FastAPI:
    return create_app(settings, runner)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def error_of(response: httpx.Response) -> tuple[int, str]:
    """``(status, code)`` of an error answer, after checking it has exactly the error shape."""
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def running_session(runner: FakeSessionRunner, prompt: str = "build the thing") -> str:
    """A session with a plan of one codex task whose worker runs."""
    sid = await runner.create(prompt)
    task = SubTask(id="t1", title="do", description="do it", agent="codex")  # type: ignore[arg-type]
    await runner.emit(sid, "planner", PlanReady(breakdown=TaskBreakdown(goal="g", tasks=[task])))
    await runner.emit(sid, "codex-t1", WorkerStarted(agent="codex", image="img", container_id="c1", argv=["codex"],
                                                     attempt=1), "t1")  # type: ignore[arg-type]  # fmt: skip
    return sid


# ---- health, list, start ---------------------------------------------------------------------


async def test_health_reports_version_and_engine(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """``/api/health`` answers ok with the runner's view of the container engine."""
    runner.docker = False
    body = (await client.get("/api/health")).json()
    assert body == {"status": "ok", "docker": False, "version": "0.1.0"}


async def test_health_without_a_runner_says_no_engine(settings: Settings) -> None:
    """A read-only server (no runner) is healthy but reports no engine."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/api/health")).json()["docker"] is False


async def test_list_is_empty_for_an_empty_workspace(client: httpx.AsyncClient) -> None:
    """No sessions: an empty page without a cursor."""
    response = await client.get("/api/sessions")
    assert (response.status_code, response.json()) == (200, {"sessions": [], "next_cursor": None})


async def test_list_is_newest_first_with_cut_prompt_cost_and_workers(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """Each line has the cut prompt, status, worker count and the cost from the totals."""
    old = await runner.create("first")
    new = await running_session(runner, "x" * 500)
    await runner.emit(new, "codex-t1", Usage(input_tokens=10, output_tokens=5, cost_usd=0.25), "t1")
    await runner.emit(new, "codex-t1", Usage(input_tokens=1, output_tokens=1, cost_usd=0.5), "t1")
    sessions = (await client.get("/api/sessions")).json()["sessions"]
    assert [new, old] == [s["id"] for s in sessions]
    top = sessions[0]
    assert (
        top["prompt"], top["status"], top["workers"], top["cost_usd"], top["input_tokens"]
    ) == ("x" * (PROMPT_CUT - 1) + "…", "running", 1, 0.75, 11)  # fmt: skip


async def test_list_pages_with_a_cursor_and_filters_by_status(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """Pages of 2 cover every session once, in order; ``?status=`` keeps only that status."""
    ids = [await runner.create(f"p{n}") for n in range(5)]
    await runner.finish(ids[1])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/sessions", params=params)).json()
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    finished = (await client.get("/api/sessions", params={"status": "succeeded"})).json()["sessions"]
    assert list(reversed(ids)) == seen
    assert [ids[1]] == [s["id"] for s in finished]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"cursor": "not-a-cursor"}, (422, "validation")),
        ({"cursor": "2026~../../etc"}, (422, "validation")),
        ({"limit": 0}, (422, "validation")),
        ({"limit": 10_000}, (422, "validation")),
        ({"limit": "ten"}, (422, "validation")),
        ({"status": "sleeping"}, (422, "validation")),
        ({"cursor": "c" * 600}, (422, "validation")),
    ],
)
async def test_list_refuses_bad_parameters(client: httpx.AsyncClient, params: dict[str, Any],
                                           expected: tuple[int, str]) -> None:  # fmt: skip
    """A cursor that is not a position and an out-of-range parameter are 422s."""
    assert expected == error_of(await client.get("/api/sessions", params=params))


async def test_start_answers_202_with_the_id_and_the_session_is_readable(client: httpx.AsyncClient) -> None:
    """``POST /api/sessions`` records the session before answering; its state is readable at once."""
    body = {
        "prompt": "add a test",
        "repo": "/srv/repo",
        "agents": ["codex"],
        "max_parallel": 2,
        "options": {},
    }
    response = await client.post("/api/sessions", json=body)
    sid = response.json()["session_id"]
    state = (await client.get(f"/api/sessions/{sid}")).json()
    assert (response.status_code, response.json()["status"]) == (202, "planning")
    assert ("add a test", "/srv/repo", sid) == (state["prompt"], state["repo"], state["session_id"])


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UnsafeMount("/etc", "outside the allowed roots"), (400, "unsafe_mount")),
        (DirtyRepository("the repository has uncommitted changes"), (409, "dirty_repository")),
    ],
)
async def test_start_maps_runner_errors_to_their_status(settings: Settings, error: Exception,
                                                       expected: tuple[int, str]) -> None:  # fmt: skip
    """An error of the tree raised by the runner answers its own status and code."""
    app = create_app(settings, FakeSessionRunner(settings, fail_start=error))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/api/sessions", json={"prompt": "p", "repo": "/r"})
    assert expected == error_of(response)


async def test_changes_need_a_runner(settings: Settings) -> None:
    """A server without a runner reads sessions but answers 503 to a change."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/api/sessions", json={"prompt": "p", "repo": "/r"})
    assert error_of(response) == (503, "environment")


async def test_an_unexpected_failure_is_a_500_without_details(settings: Settings) -> None:
    """A bug in a runner answers 500 ``internal`` with no traceback in the body."""

    class Broken(FakeSessionRunner):
        async def start(self, request: Any) -> str:
            raise ZeroDivisionError("secret internals")

    app = create_app(settings, Broken(settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/api/sessions", json={"prompt": "p", "repo": "/r"})
    assert error_of(response) == (500, "internal")
    assert "secret" not in response.text


# ---- one session -----------------------------------------------------------------------------


async def test_state_of_a_session_started_by_another_process(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """A session written by someone else's ``EventWriter`` is served from its files."""
    paths = SessionPaths.of(settings.workspace, "elsewhere01")
    with EventWriter.open(paths) as writer:
        writer.emit("orchestrator", SessionCreated(prompt="from the CLI", repo="/r"))
        writer.flush()
    state = (await client.get("/api/sessions/elsewhere01")).json()
    assert (state["prompt"], state["status"], state["last_seq"]) == ("from the CLI", "planning", 1)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/sessions/nosuchsession", (404, "not_found")),
        ("/api/sessions/short", (400, "invalid_id")),
        ("/api/sessions/" + "a" * 65, (400, "invalid_id")),
        ("/api/sessions/bad!id!bad", (400, "invalid_id")),
        ("/api/sessions/..%2F..%2Fetc", (400, "invalid_id")),
        ("/api/sessions/..%2Fxxxxxxxxxx/events", (400, "invalid_id")),
        ("/api/sessions/%00%00%00%00%00%00%00%00", (400, "invalid_id")),
        ("/api/sessions/nosuchsession/events", (404, "not_found")),
        ("/api/sessions/nosuchsession/report", (404, "not_found")),
        ("/api/sessions/nosuchsession/stream", (404, "not_found")),
        ("/api/nothing-here", (404, "not_found")),
    ],
)
async def test_unknown_and_malformed_ids(
    client: httpx.AsyncClient, path: str, expected: tuple[int, str]
) -> None:
    """An unknown session is a 404; an id that is not a safe path segment a 400 ``invalid_id``."""
    assert expected == error_of(await client.get(path))


async def test_wrong_method_is_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    """A method a route does not have answers 405 with the error body."""
    assert error_of(await client.delete("/api/sessions")) == (405, "method_not_allowed")


async def test_event_pages_filter_by_worker_and_type(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """``?after=&limit=&worker=&type=`` select a page of events in order, with the next ``after``."""
    sid = await running_session(runner)
    for n in range(6):
        await runner.emit(sid, "codex-t1", Output(stream="stdout", line=f"l{n}"), "t1")
    url = f"/api/sessions/{sid}/events"
    first = (await client.get(url, params={"type": "output", "limit": 4})).json()
    rest = (await client.get(url, params={"type": "output", "after": first["next_after"]})).json()
    planner = (await client.get(url, params={"worker": "planner"})).json()
    assert [e["data"]["line"] for e in first["events"]] == ["l0", "l1", "l2", "l3"]
    assert ([e["data"]["line"] for e in rest["events"]], rest["next_after"]) == (["l4", "l5"], None)
    assert [e["type"] for e in planner["events"]] == ["plan_ready"]


@pytest.mark.parametrize(
    "params",
    [
        {"type": "nonsense"},
        {"worker": "../etc"},
        {"after": -1},
        {"limit": 0},
        {"after": "x"},
        {"worker": "w" * 81},
    ],
)
async def test_event_pages_refuse_bad_parameters(client: httpx.AsyncClient, runner: FakeSessionRunner,
                                                 params: dict[str, Any]) -> None:  # fmt: skip
    """Unknown types, unsafe worker names and negative positions are 422s."""
    sid = await runner.create()
    assert error_of(await client.get(f"/api/sessions/{sid}/events", params=params)) == (422, "validation")


# ---- steering --------------------------------------------------------------------------------


async def test_decision_only_for_a_paused_session(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """A decision on a running session is a 409; on a paused one it is recorded and answers the status."""
    sid = await running_session(runner)
    url = f"/api/sessions/{sid}/decision"
    refused = await client.post(url, json={"action": "continue"})
    await runner.emit(sid, "orchestrator", SessionPaused(reason="reviewers disagree"))
    accepted = await client.post(url, json={"action": "continue", "note": "looks fine"})
    assert error_of(refused) == (409, "conflict")
    assert (accepted.status_code, accepted.json()["status"]) == (200, "running")


async def test_decision_stop_finishes_the_session(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """``stop`` on a paused session finishes it as stopped."""
    sid = await running_session(runner)
    await runner.emit(sid, "orchestrator", SessionPaused(reason="risky"))
    response = await client.post(f"/api/sessions/{sid}/decision", json={"action": "stop"})
    assert (response.status_code, response.json()["status"]) == (200, "stopped")


async def test_resume_rules(client: httpx.AsyncClient, runner: FakeSessionRunner) -> None:
    """Resume: 409 while it runs here, 202 once interrupted, 409 once finished."""
    sid = await running_session(runner)
    url = f"/api/sessions/{sid}/resume"
    while_running = await client.post(url)
    await runner.emit(sid, "orchestrator", SessionInterrupted(signal="SIGTERM"))
    runner.writers.pop(sid).close()  # the process that ran it is gone
    resumed = await client.post(url)
    await runner.finish(sid)
    after_finish = await client.post(url)
    assert error_of(while_running) == (409, "conflict")
    assert (resumed.status_code, resumed.json()["status"]) == (202, "running")
    assert error_of(after_finish) == (409, "session_finished")


async def test_stop_finishes_the_session_and_a_second_stop_is_a_conflict(
    client: httpx.AsyncClient, runner: FakeSessionRunner
) -> None:
    """Stop answers 202 with the session stopped; stopping a finished session is a 409."""
    sid = await running_session(runner)
    first = await client.post(f"/api/sessions/{sid}/stop")
    second = await client.post(f"/api/sessions/{sid}/stop")
    state = (await client.get(f"/api/sessions/{sid}")).json()
    assert (first.status_code, first.json()["status"]) == (202, "stopped")
    assert error_of(second) == (409, "session_finished")
    assert state["workers"]["codex-t1"]["status"] == "stopped"


async def test_stop_one_worker(client: httpx.AsyncClient, runner: FakeSessionRunner) -> None:
    """A running worker stops (202); an unknown one is a 404, a bad name a 400, a stopped one a 409."""
    sid = await running_session(runner)
    base = f"/api/sessions/{sid}/workers"
    unknown = await client.post(f"{base}/gemini-t9/stop")
    bad = await client.post(f"{base}/bad%20name/stop")
    stopped = await client.post(f"{base}/codex-t1/stop")
    again = await client.post(f"{base}/codex-t1/stop")
    worker = (await client.get(f"/api/sessions/{sid}")).json()["workers"]["codex-t1"]
    assert error_of(unknown) == (404, "not_found")
    assert error_of(bad) == (400, "invalid_id")
    assert stopped.status_code == 202
    assert error_of(again) == (409, "conflict")
    assert (worker["status"], worker["stopped_by_person"]) == ("stopped", True)


async def test_report_only_once_finished(client: httpx.AsyncClient, runner: FakeSessionRunner,
                                         settings: Settings) -> None:  # fmt: skip
    """The report is a 409 before the end and until written, then ``report.json`` as written."""
    sid = await running_session(runner)
    url = f"/api/sessions/{sid}/report"
    before = await client.get(url)
    await runner.finish(sid)
    not_written = await client.get(url)
    report = {"session_id": sid, "status": "succeeded", "tasks": [{"id": "t1"}]}
    SessionPaths.of(settings.workspace, sid).report_json.write_bytes(orjson.dumps(report))
    written = await client.get(url)
    assert error_of(before) == (409, "conflict")
    assert error_of(not_written) == (409, "conflict")
    assert (200, report) == (written.status_code, written.json())


async def test_a_corrupt_report_is_a_store_error(client: httpx.AsyncClient, runner: FakeSessionRunner,
                                                 settings: Settings) -> None:  # fmt: skip
    """A ``report.json`` that is not a JSON object answers 500 ``store``, naming the file."""
    sid = await runner.create()
    await runner.finish(sid)
    SessionPaths.of(settings.workspace, sid).report_json.write_text("[1, 2")
    response = await client.get(f"/api/sessions/{sid}/report")
    assert error_of(response) == (500, "store")
    assert "report.json" in response.json()["error"]["message"]
