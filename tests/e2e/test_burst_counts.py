"""The list's state counts after a burst of tasks sent with `.delay()` from another process
(static/js/table.js): the page follows most moves by itself, and reads the server's counts again
when a task it does not show or follow changes, so a tab ends up with the API's counts and says
while it is catching up.

The page shows a bounded window (a page of newest tasks plus the newest LIST_UNFINISHED_LIMIT
unfinished ones). Here that window is held by tasks waiting on a queue no worker serves, and a
burst sent before the page opened runs outside it; a small LIST_UNFINISHED_LIMIT keeps the burst
small.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, expect

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT
from tests.support import Stack, wait_for

pytestmark = pytest.mark.usefixtures("eventlet_only")  # page code: the server's async mode cannot change it

BURST = 200     # tasks drained while the page is open
WAITING = 30    # newer tasks on a queue nobody serves: they hold the page's window (25 + 5)
UNFINISHED_LIMIT = 5

# Whether the page ever said its counts were catching up (kept however briefly it said so).
RECORDER = """
window.__behind = false;
new MutationObserver(() => {
  const status = document.getElementById("list-status");
  if (status && /catching up/.test(status.textContent)) window.__behind = true;
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture
def private() -> Iterator[Stack]:
    """Its own Redis and web (no worker yet): the burst's queue is served only when the test says."""
    stack = Stack(logdir=ARTIFACTS / "logs" / "burst-counts")
    try:
        stack.start_redis()
        stack.start_web(env={"LIST_UNFINISHED_LIMIT": str(UNFINISHED_LIMIT)})
        yield stack
    finally:
        stack.stop()


def api_counts(stack: Stack) -> dict[str, int]:
    return requests.get(f"{stack.url}/api/tasks?limit=1", timeout=10).json()["counts"]


def test_after_a_burst_the_page_shows_the_api_counts(browser: Browser, private: Stack) -> None:
    private.python(
        "from tasks.demo import steps\n"
        f"for _ in range({BURST}): steps.apply_async(kwargs={{'steps': 3, 'delay': 0.02}}, queue='burst')\n"
        f"for _ in range({WAITING}): steps.apply_async(kwargs={{'steps': 1, 'delay': 0}}, queue='nobody')\n")
    wait_for(lambda: api_counts(private).get("PENDING") == BURST + WAITING, 60, what="the tasks to be listed")
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.goto(f"{private.url}/?size=25")
        counts = page.locator("button.count")
        expect(counts.filter(has_text="queued")).to_have_text(f"queued {BURST + WAITING}")
        private.start_worker(queues="burst")  # the burst runs, outside what the page shows
        wait_for(lambda: api_counts(private).get("SUCCESS") == BURST, 120, what="the burst to end")
        assert api_counts(private) == {"PENDING": WAITING, "SUCCESS": BURST}
        expect(counts).to_have_text([f"queued {WAITING}", f"succeeded {BURST}"])
        expect(page.locator("#list-status")).not_to_contain_text("catching up")
        assert page.evaluate("window.__behind"), "the page never said its counts were catching up"
    finally:
        context.close()
