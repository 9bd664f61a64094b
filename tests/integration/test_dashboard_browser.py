"""The dashboard in a real browser: Debian's Chromium driven by Playwright's Python package.

The app runs under a real uvicorn on a free loopback port, in the test's event loop. Two tests watch
**real** sessions there: the coordinator's ``ServerRunner`` on Docker runs the credential-free demo
(the real CLIs against the scripted model server), and a scenario whose reviewers disagree
(``tests/fixtures/scenarios/dashboard-pause.toml``) pauses until the page's Continue. The other tests
use the API's ``FakeSessionRunner`` (no containers). Screenshots (desktop, phone, paused) go to
``test-artifacts/``, which CI keeps. No browser is downloaded: ``/usr/bin/chromium`` comes from apt
(scripts/setup), and every host name but loopback resolves to nothing inside it, so no request
leaves the machine.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)
from pydantic import SecretStr

from api.app import create_app
from api.testing import FakeSessionRunner, serve
from orchestrator.commands.demo import example_repo
from orchestrator.config import Settings
from orchestrator.gitwork import git
from orchestrator.models import HumanDecision, SessionInterrupted
from orchestrator.paths import SessionPaths
from orchestrator.runner import ServerRunner, shipped_scenarios
from orchestrator.runtime import make_runtime
from orchestrator.store import EventReader
from tests.conftest import IN_CI
from tests.support.served import remove_sessions, settled_containers

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCENARIOS = ROOT / "tests" / "fixtures" / "scenarios"
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
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]


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
    """Collect uncaught page errors and console errors (a CSP violation, a failed load) into a list."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} at {message.location.get('url', '')}")

    page.on("console", console)
    return errors


def watch_requests(page: Page) -> list[str]:
    """Every URL the page asks for, in order (the favicon is inline: /favicon.ico is never asked)."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    return asked


DEMO_GOAL = "Add a greeting module and notes, after a quick survey of the repository"
SESSION_MS = 420_000  # the longest wait for a real session's next stage on a busy machine


@contextlib.asynccontextmanager
async def real_sessions(tmp_path: Path) -> AsyncIterator[tuple[str, ServerRunner, Path, Path]]:
    """A real uvicorn with the coordinator's ``ServerRunner`` on Docker, the test fixtures' scenarios
    besides the shipped ones, and a demo repository: (url, runner, workspace, repo). Every container
    and network of its sessions is removed afterwards by label, whatever failed."""
    settings = Settings(_env_file=None, workspace=tmp_path / "ws", grace_period_s=5)
    repo = example_repo(settings.workspace / "demo-repos" / "example")
    runner = ServerRunner(settings, make_runtime(settings), scenario_dirs=(shipped_scenarios(), SCENARIOS))
    try:
        async with serve(create_app(settings, runner), graceful_s=30) as url:
            yield url, runner, settings.workspace, repo
    finally:
        remove_sessions(settings.workspace)


async def start(url: str, repo: Path, scenario: str, prompt: str = DEMO_GOAL) -> str:
    """``POST /api/sessions`` with a scenario (the dashboard's form starts sessions with credentials)."""
    body = {"prompt": prompt, "repo": str(repo), "options": {"scenario": scenario}}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        answer = await http.post("/api/sessions", json=body)
    assert answer.status_code == 202, answer.text
    session_id: str = answer.json()["session_id"]
    return session_id


def header_badge(page: Page) -> Locator:
    return page.locator("#view .badge").first


def list_badge(page: Page, session_id: str) -> Locator:
    return page.locator(f'#sessions tr[data-id="{session_id}"] .badge')


async def test_a_real_demo_session_is_watched_live_until_it_finishes(
    browser: Browser, tmp_path: Path, images: dict[str, str]
) -> None:
    """The credential-free demo, started through the API, followed in the page: the status moves from
    planning/running to succeeded in the header and in the session list (no reload), the plan graph
    and the three workers show succeeded, the writer's output is in its tab, the reviews and the
    CONTINUE decisions are listed. At phone width nothing widens the page. Screenshots: desktop, phone."""
    async with real_sessions(tmp_path) as (url, _, workspace, repo), open_page(browser) as page:
        errors, asked = watch_for_errors(page), watch_requests(page)
        session_id = await start(url, repo, "demo")
        await page.goto(f"{url}/#/s/{session_id}")
        await expect(page.locator("#conn")).to_contain_text("live")
        await expect(header_badge(page)).to_have_text(re.compile("^(planning|running)$"))
        await expect(list_badge(page, session_id)).to_have_text(re.compile("^(planning|running)$"))

        await expect(page.locator("#view [data-k=goal]")).to_have_text(DEMO_GOAL, timeout=SESSION_MS)
        await expect(page.locator("#conn")).to_contain_text("finished", timeout=SESSION_MS)
        await expect(header_badge(page)).to_have_text("succeeded")
        await expect(list_badge(page, session_id)).to_have_text("succeeded")
        for worker in ("gemini-t1", "codex-t2", "claude-t3"):
            await expect(page.locator("tbody tr", has_text=worker).locator(".badge")).to_have_text(
                "succeeded"
            )
        await expect(page.locator("#graph svg text", has_text="codex · succeeded")).to_have_count(1)
        await page.get_by_role("button", name="codex-t2").click()
        await expect(page.locator("pre.out")).to_contain_text("Added greeting.py with greet(name).")
        await expect(page.locator("[data-k=reviews] li", has_text="approve").first).to_be_visible()
        await expect(page.locator("[data-k=decisions] li", has_text="CONTINUE")).to_have_count(2)

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "dashboard-desktop.png", full_page=True)
        await page.set_viewport_size(PHONE)
        await expect(page.get_by_role("button", name="codex-t2")).to_be_visible()
        assert PHONE["width"] == await page.evaluate("document.documentElement.scrollWidth")
        await page.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)
        assert await settled_containers(session_id) == []
        assert (errors, [u for u in asked if u.endswith("/favicon.ico")]) == ([], [])
        events = list(EventReader(SessionPaths.of(workspace, session_id)).read())
        assert events[-1].type == "session_finished"


async def test_a_paused_real_session_continues_from_the_page(
    browser: Browser, tmp_path: Path, images: dict[str, str]
) -> None:
    """One reviewer rejects with medium severity, the other approves: PAUSE. The page shows the
    reason, the reviews and the decision, and offers Continue; Continue records the person's
    decision with the note; the work is merged and the session succeeds. Screenshot: paused."""
    async with real_sessions(tmp_path) as (url, _, workspace, repo), open_page(browser) as page:
        errors = watch_for_errors(page)
        session_id = await start(url, repo, "dashboard-pause", "Add a farewell module")
        await page.goto(f"{url}/#/s/{session_id}")
        banner = page.locator(".banner")
        await expect(banner).to_be_visible(timeout=SESSION_MS)
        await expect(banner).to_contain_text("PAUSE after the review of t1")
        await expect(header_badge(page)).to_have_text("paused")
        await expect(list_badge(page, session_id)).to_have_text("paused")
        await expect(page.locator("[data-k=reviews] li", has_text="reject")).to_contain_text("medium")
        await expect(page.locator("[data-k=decisions] li", has_text="PAUSE")).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "dashboard-paused.png", full_page=True)

        await page.get_by_placeholder("note (optional)").fill("the wording is fine, go on")
        async with page.expect_response(lambda r: r.url.endswith("/decision")) as answer:
            await page.get_by_role("button", name="Continue").click()
        assert (await answer.value).status == 200
        await expect(banner).to_be_hidden()
        await expect(page.locator("#conn")).to_contain_text("finished", timeout=SESSION_MS)
        await expect(header_badge(page)).to_have_text("succeeded")
        await expect(list_badge(page, session_id)).to_have_text("succeeded")
        assert await settled_containers(session_id) == []
        assert errors == []
    events = EventReader(SessionPaths.of(workspace, session_id)).read()
    decided = [(e.data.action, e.data.note) for e in events if isinstance(e.data, HumanDecision)]
    assert decided == [("continue", "the wording is fine, go on")]
    assert git(repo, "show", f"orch/{session_id}:farewell.py").stdout.startswith("def farewell(name: str)")


async def test_an_interrupted_session_offers_resume(browser: Browser, settings: Settings) -> None:
    """A session interrupted by a server shutdown shows Resume; Resume reaches the runner's resume
    (a ``session_resumed`` event) and the page then shows it running, without the button."""
    runner = FakeSessionRunner(settings)
    async with serve(create_app(settings, runner)) as url, open_page(browser) as page:
        errors = watch_for_errors(page)
        session_id = await runner.create(prompt="a session the server left behind")
        await runner.emit(session_id, "orchestrator", SessionInterrupted(signal="SIGTERM"))
        runner.writers.pop(session_id).close()  # its server went away
        await page.goto(f"{url}/#/s/{session_id}")
        await expect(header_badge(page)).to_have_text("interrupted")
        async with page.expect_response(lambda r: r.url.endswith("/resume")) as answer:
            await page.get_by_role("button", name="Resume").click()
        assert (await answer.value).status == 202
        await expect(header_badge(page)).to_have_text("running")
        await expect(page.get_by_role("button", name="Resume")).to_be_hidden()
        assert errors == []
    kinds = [e.type for e in EventReader(SessionPaths.of(settings.workspace, session_id)).read()]
    assert kinds == ["session_created", "session_interrupted", "session_resumed"]


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
