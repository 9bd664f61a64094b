"""The dashboard in a real browser: Debian's Chromium driven by Playwright's Python package.

The app runs under a real uvicorn on a free loopback port, in the test's event loop, with the API's
own ``FakeSessionRunner``: the test scripts a session by recording events into its ``events.jsonl``
(through the runner's ``EventWriter``) while the page is open, the way the coordinator would. The
page follows them over SSE. Screenshots (desktop and phone size) go to ``test-artifacts/``, which CI
keeps. No browser is downloaded: ``/usr/bin/chromium`` comes from apt (scripts/setup), and every host
name but loopback resolves to nothing inside it, so no request leaves the machine.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright, expect
from pydantic import SecretStr

from api.app import create_app
from api.testing import FakeSessionRunner, serve
from orchestrator.config import Settings
from orchestrator.models import (
    AgentName,
    Decision,
    DecisionAction,
    DirSpec,
    HumanDecision,
    OrchestratorDecision,
    Output,
    PlanReady,
    SessionPaused,
    SubTask,
    TaskBreakdown,
    TaskFinished,
    Usage,
    WorkerExited,
    WorkerStarted,
)
from orchestrator.paths import SessionPaths
from orchestrator.store import EventReader
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Playwright adds --headless, --no-sandbox and its background-networking flags by itself; passing our
# own --disable-features would replace its list (tooling-spike.md §1).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
TOKEN = "browser-test-token-0123456789"


def chromium() -> str:
    """Debian's Chromium, or a failure naming the fix under CI (a skip with the reason elsewhere)."""
    if shutil.which(CHROMIUM) is not None:
        return CHROMIUM
    message = f"{CHROMIUM} is missing: scripts/setup installs it (apt-get install chromium)"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


# One browser for the module (a launch costs about 2 s), hence one event loop for the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium shared by this module's tests, closed afterwards."""
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def open_page(browser: Browser, viewport: ViewportSize = DESKTOP) -> AsyncIterator[Page]:
    """A page in a fresh context (no shared storage between tests), closed before the server stops."""
    context = await browser.new_context(viewport=viewport)
    try:
        yield await context.new_page()
    finally:
        await context.close()


def watch_for_errors(page: Page) -> list[str]:
    """Collect uncaught page errors and console errors (a CSP violation is one) into a list."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    def console(message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        # The browser asks for /favicon.ico by itself; that 404 is not the page's doing.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            errors.append(f"console: {message.text} at {url}")

    page.on("console", console)
    return errors


PLAN = TaskBreakdown(
    goal="Add a /health endpoint with a test",
    tasks=[
        SubTask(id="t1", title="Write the endpoint", description="Add GET /health to src/app.py",
                agent=AgentName.CLAUDE, dirs=[DirSpec(path="src", mode="rw")]),
        SubTask(id="t2", title="Test the endpoint", description="Add tests/test_health.py",
                agent=AgentName.CODEX, dirs=[DirSpec(path="tests", mode="rw")], depends_on=["t1"]),
    ],
)  # fmt: skip


async def run_task(
    runner: FakeSessionRunner, session_id: str, agent: AgentName, task: str, lines: list[str]
) -> None:
    """One worker's life, as its adapter records it: started, output, usage, exited, task finished."""
    worker = f"{agent.value}-{task}"
    started = WorkerStarted(agent=agent, image=f"meta-orchestrator-{agent.value}:test", container_id=f"c-{task}",
                            argv=[agent.value, "-p", "..."], attempt=1)  # fmt: skip
    await runner.emit(session_id, worker, started, task)
    for line in lines:
        await runner.emit(session_id, worker, Output(stream="stdout", line=line), task)
    await runner.emit(session_id, worker, Usage(input_tokens=1200, output_tokens=300, cost_usd=0.0125), task)
    await runner.emit(session_id, worker, WorkerExited(exit_code=0, reason="finished"), task)
    await runner.emit(session_id, worker, TaskFinished(status="succeeded", summary=f"{task} done"), task)


async def test_a_session_is_followed_live_paused_continued_and_finished(
    browser: Browser, settings: Settings
) -> None:
    """The page shows the plan, each worker's state and output as the events arrive; on a pause it
    offers Continue, which reaches the runner's ``decide`` (a ``human_decision`` event with the note);
    the session then finishes and the page says so. Screenshots: paused, finished, phone size."""
    runner = FakeSessionRunner(settings)
    async with serve(create_app(settings, runner)) as url, open_page(browser) as page:
        errors = watch_for_errors(page)
        session_id = await runner.create(prompt="Add a /health endpoint and its test", repo="/srv/repos/shop")
        await page.goto(f"{url}/#/s/{session_id}")
        await expect(page.locator("#conn")).to_contain_text("live")

        await runner.emit(session_id, "orchestrator", PlanReady(breakdown=PLAN))
        await expect(page.get_by_text("Add a /health endpoint with a test")).to_be_visible()
        first = ["reading src/app.py", "writing GET /health", "ran: pytest -q (3 passed)"]
        await run_task(runner, session_id, AgentName.CLAUDE, "t1", first)
        output = page.locator("pre.out")
        for line in first:
            await expect(output).to_contain_text(line)
        claude_row = page.locator("tbody tr", has_text="claude-t1")
        await expect(claude_row.locator(".badge")).to_have_text("succeeded")

        review = OrchestratorDecision(action=DecisionAction.PAUSE, rule=2, request_id="r-1",
                                      reasons=["codex asked for changes (confidence 0.80)"])  # fmt: skip
        await runner.emit(session_id, "orchestrator", Decision(decision=review))
        await runner.emit(session_id, "orchestrator", SessionPaused(reason="a reviewer asked for changes"))
        await expect(page.get_by_text("a reviewer asked for changes", exact=True)).to_be_visible()
        await expect(page.locator("ul.plain li", has_text="rule 2")).to_contain_text("PAUSE")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "dashboard-paused.png", full_page=True)
        await page.get_by_placeholder("note (optional)").fill("the change is fine, go on")
        async with page.expect_response(lambda r: r.url.endswith("/decision")) as answer:
            await page.get_by_role("button", name="Continue").click()
        assert (await answer.value).status == 200
        events = EventReader(SessionPaths.of(settings.workspace, session_id)).read()
        decided = [(e.data.action, e.data.note) for e in events if isinstance(e.data, HumanDecision)]
        assert decided == [("continue", "the change is fine, go on")]
        await expect(page.locator(".banner")).to_be_hidden()

        second = ["writing tests/test_health.py", "ran: pytest -q (4 passed)"]
        await run_task(runner, session_id, AgentName.CODEX, "t2", second)
        await runner.finish(session_id, "succeeded")
        await expect(page.locator("#conn")).to_contain_text("finished")
        await expect(page.locator("#view .badge").first).to_have_text("succeeded")
        codex_row = page.locator("tbody tr", has_text="codex-t2")
        await expect(codex_row.locator(".badge")).to_have_text("succeeded")
        await page.get_by_role("button", name="codex-t2").click()
        await expect(output).to_contain_text("ran: pytest -q (4 passed)")

        await page.screenshot(path=ARTIFACTS / "dashboard-desktop.png", full_page=True)
        await page.set_viewport_size(PHONE)
        await expect(page.get_by_role("button", name="codex-t2")).to_be_visible()
        await page.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)
        assert errors == []


async def test_an_unknown_session_shows_the_servers_message(browser: Browser, settings: Settings) -> None:
    """A well-formed id that names no session: the view shows the API's 404 message, nothing breaks."""
    async with serve(create_app(settings, FakeSessionRunner(settings))) as url, open_page(browser) as page:
        await page.goto(f"{url}/#/s/nosuchsession0000")
        await expect(page.locator("#view .error")).to_contain_text("nosuchsession0000")


@pytest.mark.parametrize(
    "fragment", ["#/s/../../etc/passwd", "#/s/<img src=x onerror=alert(1)>", "#/s/a", "#/x"]
)
async def test_a_garbage_address_shows_the_start_view(
    browser: Browser, settings: Settings, fragment: str
) -> None:
    """Anything after ``#/s/`` that is not a session id opens no session and runs no injected markup."""
    async with serve(create_app(settings, FakeSessionRunner(settings))) as url, open_page(browser) as page:
        errors = watch_for_errors(page)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        await page.goto(f"{url}/{fragment}")
        await expect(page.get_by_text("Pick a session on the left, or start one.")).to_be_visible()
        assert (dialogs, errors) == ([], [])


async def test_a_server_with_a_token_asks_for_it_then_lists_sessions(
    browser: Browser, settings: Settings
) -> None:
    """Without the token the page shows the token form; with a wrong one it keeps asking; with the
    right one the session list loads."""
    secured = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    runner = FakeSessionRunner(secured)
    async with serve(create_app(secured, runner)) as url, open_page(browser) as page:
        session_id = await runner.create(prompt="a session behind a token")
        await page.goto(f"{url}/")
        card = page.locator("#token-card")
        await expect(card).to_be_visible()
        await page.locator("#token").fill("wrong-token-wrong-token")
        await page.get_by_role("button", name="Use").click()
        await expect(page.locator("#list-error")).to_contain_text("wrong")
        await expect(card).to_be_visible()
        await page.locator("#token").fill(TOKEN)
        await page.get_by_role("button", name="Use").click()
        await expect(page.locator("#sessions")).to_contain_text("a session behind a token")
        await expect(card).to_be_hidden()
        assert session_id
