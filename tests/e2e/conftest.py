"""Browser fixtures for the end-to-end tests: headless Debian Chromium driven by Playwright.

Every page records, for each task row, the progress values and state labels it has shown, so a
test can ask afterwards whether a bar moved or a state appeared at some point without racing it.
A failing test leaves a full-page screenshot of each page it opened in tests/artifacts/.
Every browser test runs once per supported async mode of the web process (eventlet, gevent): the
`stack` here replaces the session one, started once per mode.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import ARTIFACTS
from tests.support import CHROMIUM, CHROMIUM_ARGS, Stack

# The modes serve.py serves with (serve.SERVING_MODES; threading is refused there).
ASYNC_MODES = ("eventlet", "gevent")
VIEWPORT = {"width": 1400, "height": 1000}
# Generous: the machine has two cores and is busy; nothing here measures speed.
TIMEOUT_MS = 60_000

expect.set_options(timeout=TIMEOUT_MS)

# Runs in every page before its own scripts: watches the task table and keeps, per task id, the
# sequence of distinct progress values (aria-valuenow), state labels and progress messages each
# row has shown.
RECORDER = """
window.__seen = {};
const record = () => {
  for (const row of document.querySelectorAll("tr[data-task-id]")) {
    const seen = (window.__seen[row.dataset.taskId] ||= { values: [], states: [], messages: [] });
    const bar = row.querySelector("[role=progressbar]");
    const value = bar && bar.getAttribute("aria-valuenow");
    if (value !== null && value !== undefined && seen.values.at(-1) !== value) seen.values.push(value);
    const state = row.cells[1] && row.cells[1].textContent.trim();
    if (state && seen.states.at(-1) !== state) seen.states.push(state);
    const message = row.querySelector(".message");
    const text = message && message.textContent;
    if (text && seen.messages.at(-1) !== text) seen.messages.push(text);
  }
};
new MutationObserver(record).observe(document, {
  subtree: true, childList: true, characterData: true, attributes: true,
});
"""

# axe-core from npm (package.json), copied into static/vendor by `make setup`; only tests inject it.
AXE = Path(__file__).resolve().parents[2] / "static" / "vendor" / "axe.min.js"


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical"),
                   context: str | None = None) -> list[dict]:
    """Run axe-core on the page as it is now (or on the element matching the CSS selector
    `context`) and return its violations of the given impacts, each {id, impact, help, nodes:
    [target, ...]} (an empty list when there are none). Raises AssertionError if axe is not built."""
    assert AXE.exists(), f"{AXE} is missing: run `make setup` (package.json's build copies axe-core there)"
    if not page.evaluate("typeof window.axe === 'object'"):
        # add_script_tag(path=...) would inline the file, which the page's CSP refuses (script-src
        # 'self'); DevTools' evaluate is not subject to the page's CSP.
        page.evaluate(AXE.read_text())
    found = page.evaluate(
        """async (context) => {
             const result = await axe.run(context ? document.querySelector(context) : document,
                                          { resultTypes: ["violations"] });
             return result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                                  nodes: v.nodes.map(n => n.target.join(" ")) }));
           }""", context)
    return [violation for violation in found if violation["impact"] in impacts]


PHASE = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell at teardown that the test failed."""
    report = yield
    item.stash.setdefault(PHASE, {})[report.when] = report
    return report


@pytest.fixture(scope="session", params=ASYNC_MODES)
def async_mode(request: pytest.FixtureRequest) -> str:
    """The web process's ASYNC_MODE; session scoped, so pytest runs every test of one mode, then the other."""
    return request.param


@pytest.fixture
def eventlet_only(async_mode: str) -> None:
    """For a page feature the server's async mode cannot change (layout, forms, detail, filters):
    run under eventlet only, so the suite's second pass (gevent) stays short."""
    if async_mode != "eventlet":
        pytest.skip("a page feature: checked under eventlet; the gevent pass checks the live transport")


@pytest.fixture(scope="session")
def stack(async_mode: str) -> Iterator[Stack]:
    """A private redis-server, a Celery worker (4 processes) and `python serve.py` with ASYNC_MODE set,
    really started: one per mode, each stopped before the next starts."""
    running = Stack(logdir=ARTIFACTS / "logs" / f"e2e-{async_mode}-{time.strftime('%H%M%S')}",
                    env={"ASYNC_MODE": async_mode})
    try:
        running.start_redis()
        running.start_worker()
        running.start_web()
        assert f"(async mode {async_mode})" in running.webs[0][0].output()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def open_page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Callable[[], Page]]:
    """Open the dashboard in a new browser context (a separate visitor); all are closed afterwards."""
    pages: list[Page] = []
    errors: list[str] = []

    def open_one() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page {len(pages)}: {error}"))
        pages.append(page)
        page.goto(stack.url)
        return page

    yield open_one

    reports = request.node.stash.get(PHASE, {})
    if any(report.failed for report in reports.values()):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid.split("::")[-1])
        for number, page in enumerate(pages, 1):
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}-page{number}.png"), full_page=True)
            except Exception as exc:  # noqa: BLE001 - a screenshot must not hide the real failure
                print(f"could not save a screenshot of page {number}: {exc!r}")
    for page in pages:
        page.context.close()
    # An uncaught exception in the page's own code is a bug even when nothing visible broke.
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(open_page: Callable[[], Page]) -> Page:
    """The dashboard in a fresh browser context, 1400x1000."""
    return open_page()
