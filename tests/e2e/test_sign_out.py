"""Signing out in one tab signs out every tab of that browser at once (web/auth.py logout, web/sockets.py
watch_access and on_connect, static/js/transport.js), under each async mode: a tab that was live, one
with a question of its own open, one whose connection was away at that moment and comes back."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT
from tests.e2e.test_dashboard import expect_live, launch
from tests.support import Stack, add_users

PASSWORD = "a long enough password"
# How soon another tab must have left the dashboard: the server checks live connections every
# second, and a connection that was away retries within 5 s (transport.js reconnectionDelayMax).
PROMPTLY_MS = 15_000


@pytest.fixture(scope="module")
def signed_in_site(stack: Stack) -> str:
    """A second web process of the same stack with sign-in on and no SECRET_KEY, and an operator."""
    add_users(stack, {"olivia": "operator"}, PASSWORD)
    return stack.start_web(env={"AUTH_REQUIRED": "1", "SECRET_KEY": "", "LOGIN_LIMIT": "1000/minute",
                                "LOGIN_LIMIT_PER_ADDRESS": "1000/minute"})


@pytest.fixture
def tabs(browser: Browser, signed_in_site: str, request: pytest.FixtureRequest) -> Iterator[tuple[Page, Page]]:
    """Two tabs of one browser (one session cookie): the first signed in through the form, the
    second opened on the dashboard afterwards; both live. A failing test leaves a screenshot of each."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    # Not conftest's PHASE: this module's import of tests.e2e.conftest is a second copy of the
    # module pytest loaded as "conftest" (tests/e2e is no package), with a key of its own.
    failed_before = request.session.testsfailed
    try:
        first = context.new_page()
        first.goto(f"{signed_in_site}/login")
        first.get_by_label("User name").fill("olivia")
        first.get_by_label("Password").fill(PASSWORD)
        first.get_by_role("button", name="Sign in").click()
        expect_live(first)
        second = context.new_page()
        second.goto(signed_in_site)
        expect_live(second)
        yield first, second
        if request.session.testsfailed > failed_before:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", request.node.nodeid.split("::")[-1])
            for number, page in enumerate(context.pages, 1):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{name}-tab{number}.png"), full_page=True)
                except Exception as exc:  # noqa: BLE001 - a screenshot must not hide the real failure
                    print(f"could not save a screenshot of tab {number}: {exc!r}")
    finally:
        context.close()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))


def expect_signed_out(page: Page, timeout: float = PROMPTLY_MS) -> None:
    """What a person sees in a tab that left the dashboard: the sign-in form, and no task."""
    expect(page).to_have_url(re.compile(r"/login"), timeout=timeout)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("tr[data-task-id]")).to_have_count(0)


def network_of(page: Page) -> Callable[[bool], None]:
    """A switch for one tab's network (True: online), as a tab whose connection dropped while the
    other tabs keep theirs (Playwright's set_offline cuts every tab of the context)."""
    cdp = page.context.new_cdp_session(page)  # one session: its emulation is what the switch sets
    cdp.send("Network.enable")

    def online(value: bool) -> None:
        cdp.send("Network.emulateNetworkConditions",
                 {"offline": not value, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})

    return online


def test_signing_out_in_one_tab_ends_the_other_tabs_live_view(tabs: tuple[Page, Page], signed_in_site: str) -> None:
    first, second = tabs
    sign_out(first)
    # The other tab stops being live and lands on the sign-in page by itself, within seconds.
    expect_signed_out(second)
    second.goto(signed_in_site)
    expect(second).to_have_url(re.compile(r"/login"))


@pytest.mark.parametrize(("answer", "other"), [("cancel", "live"), ("keep", "asking"), ("cancel", "away"),
                                               ("keep", "away"), ("cancel", "in the background")])
def test_after_a_cancel_question_signing_out_ends_the_other_tab(tabs: tuple[Page, Page], stack: Stack,
                                                                 answer: str, other: str) -> None:
    """The user asks to cancel a task in one tab (cancels it, or keeps it), then signs out there.
    The other tab leaves the dashboard within seconds whether it was live, had the same question
    open, had lost its connection at that moment and gets it back afterwards, or was in the
    background (frozen, as Chrome freezes a hidden tab: its page runs nothing) and is looked at again."""
    first, second = tabs
    task = launch(first, "Long job", {"Seconds": 120})
    try:
        expect(task.row(second)).to_be_visible()
        if other == "asking":
            task.cancel_button(second).click()
            expect(second.get_by_role("dialog", name=f"Cancel Long job {task.short}?")).to_be_visible()
        task.cancel_button(first).click()
        dialog = first.get_by_role("dialog", name=f"Cancel Long job {task.short}?")
        if answer == "cancel":
            dialog.get_by_role("button", name="Cancel task").click()
            expect(task.state(first)).to_have_text("cancelled")
        else:
            dialog.get_by_role("button", name=re.compile("^Keep it")).click()
            expect(dialog).to_be_hidden()
        if other == "away":
            online = network_of(second)
            online(False)
            expect(second.get_by_role("banner").get_by_role("status")).to_have_text("Reconnecting…")
        elif other == "in the background":
            lifecycle = second.context.new_cdp_session(second)
            lifecycle.send("Page.setWebLifecycleState", {"state": "frozen"})
        sign_out(first)
        if other == "away":
            expect(task.row(second)).to_be_visible()  # still away: nothing has told it yet
            online(True)
        elif other == "in the background":
            first.wait_for_timeout(3000)  # the server has ended its connection meanwhile
            lifecycle.send("Page.setWebLifecycleState", {"state": "active"})
        expect_signed_out(second)
    finally:
        requests.post(f"{stack.url}/api/tasks/{task.id}/cancel", timeout=10)  # frees the worker
