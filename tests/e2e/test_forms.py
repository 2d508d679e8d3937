"""The launch forms (static/js/forms.js) and the announcements (static/js/announce.js) in a real
browser: checked against the catalog's JSON Schema before any request, errors on the field in plain
sentences, the server's 422 and 429 on the same fields, one task per click, the live region."""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import requests
from playwright.sync_api import Browser, Locator, Page, Route, expect

from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT, axe_violations
from tests.support import Stack
from web.users import UserStore

PASSWORD = "a long enough password"


def card(page: Page, title: str) -> Locator:
    return page.get_by_role("region", name=title, exact=True)


def launches(page: Page) -> list[str]:
    """Records the page's POSTs to /api/tasks from now on (their bodies)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.post_data or "") if r.method == "POST"
            and r.url.endswith("/api/tasks") else None)
    return sent


def total(stack: Stack, name: str) -> int:
    response = requests.get(f"{stack.url}/api/tasks", params={"name": name, "limit": 1}, timeout=10)
    return response.json()["total"]


def test_a_value_out_of_range_and_an_emptied_field_are_marked_before_any_request(
        eventlet_only: None, page: Page) -> None:
    stepped = card(page, "Stepped job")
    sent = launches(page)
    steps = stepped.get_by_label("Steps", exact=True)
    steps.fill("5000")
    stepped.get_by_role("button", name="Launch").click()
    expect(steps).to_have_attribute("aria-invalid", "true")
    expect(steps).to_have_accessible_description(re.compile(r"^Enter a whole number from 1 to 1000\."))
    expect(stepped.get_by_role("alert")).to_contain_text("Steps: Enter a whole number from 1 to 1000.")
    expect(steps).to_be_focused()

    delay = stepped.get_by_label("Seconds per step", exact=True)
    steps.fill("3")
    expect(steps).not_to_have_attribute("aria-invalid", "true")
    delay.fill("")  # emptied: an error, never silently the default
    stepped.get_by_role("button", name="Launch").click()
    expect(delay).to_have_attribute("aria-invalid", "true")
    expect(delay).to_have_accessible_description(re.compile(r"^This field is required\."))
    assert [f"{v['id']}: {v['help']} {v['nodes'][:3]}" for v in axe_violations(page)] == []
    assert sent == [], "a request was sent for an invalid form"


def test_a_server_422_shows_on_the_field_by_its_label(eventlet_only: None, page: Page) -> None:
    """A browser whose schema is older than the server's: the request leaves with a value the
    server refuses (changed on its way out), and the server's answer marks the field."""
    def older_schema(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = json.loads(route.request.post_data or "{}")
        body["params"]["steps"] = 0
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/tasks", older_schema)
    stepped = card(page, "Stepped job")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as answer:
        stepped.get_by_role("button", name="Launch").click()
    assert answer.value.status == 422
    steps = stepped.get_by_label("Steps", exact=True)
    expect(steps).to_have_attribute("aria-invalid", "true")
    expect(steps).to_have_accessible_description(re.compile(r"^Enter a whole number from 1 to 1000\."))
    expect(stepped.get_by_role("alert")).to_contain_text("Steps: Enter a whole number from 1 to 1000.")
    page.unroute("**/api/tasks")


def test_a_double_click_launches_one_task_and_its_end_is_announced(eventlet_only: None, page: Page,
                                                                   stack: Stack) -> None:
    before = total(stack, "tasks.demo.primes")
    primes = card(page, "Count primes")
    primes.get_by_label("Up to", exact=True).fill(str(20_000 + uuid.uuid4().int % 10_000))
    sent = launches(page)
    primes.get_by_role("button", name="Launch").dblclick()
    status = primes.get_by_role("status")
    expect(status).to_have_text(re.compile(r"^Launched Count primes \([0-9a-f]{8}\)\.$"))
    short = re.search(r"\(([0-9a-f]{8})\)", status.inner_text())[1]
    expect(page.get_by_role("status").filter(has_text=f"Count primes {short} succeeded.")).to_have_count(1)
    assert total(stack, "tasks.demo.primes") == before + 1
    assert len(sent) == 1
    # The status links to the task's detail.
    status.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/tasks/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", name="Count primes", level=2)).to_be_visible()


def test_an_identical_running_task_is_offered_to_follow(eventlet_only: None, page: Page, stack: Stack) -> None:
    long = card(page, "Long job")
    long.get_by_label("Seconds", exact=True).fill(str(600 + uuid.uuid4().int % 1000))
    long.get_by_role("button", name="Launch").click()
    expect(long.get_by_role("status")).to_have_text(re.compile(r"^Launched Long job"))
    first = re.search(r"\(([0-9a-f]{8})\)", long.get_by_role("status").inner_text())
    long.get_by_role("button", name="Launch").click()
    follow = long.get_by_role("button", name="Follow that one")
    expect(follow).to_be_focused()
    expect(long.get_by_role("button", name="Launch another")).to_be_visible()
    follow.click()
    expect(page).to_have_url(re.compile(rf"/tasks/{first.group(1)}"))
    task_id = page.url.rsplit("/", 1)[1]
    requests.post(f"{stack.url}/api/tasks/{task_id}/cancel", timeout=10)


@pytest.fixture(scope="module")
def limited_site(stack: Stack, async_mode: str) -> str:
    """A second web process of the same stack: sign-in on, one launch a minute, an operator and a viewer
    (under eventlet only: module fixtures are set up before the test's eventlet_only could skip it)."""
    if async_mode != "eventlet":
        pytest.skip("a page feature: checked under eventlet")
    users = UserStore(redis.Redis.from_url(stack.env["REDIS_URL"]))
    for name, role in (("lena", "operator"), ("vic", "viewer")):
        users.add(name, PASSWORD, role)
    return stack.start_web(env={"AUTH_REQUIRED": "1", "SECRET_KEY": "", "LOGIN_LIMIT": "1000/minute",
                                "LOGIN_LIMIT_PER_ADDRESS": "1000/minute", "LAUNCH_LIMIT": "1/minute"})


@pytest.fixture
def signed_in(browser: Browser, limited_site: str) -> Iterator[Callable[[str], Page]]:
    contexts = []

    def sign_in(name: str) -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{limited_site}/login")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#tasks-heading")).to_be_visible()
        return page

    yield sign_in
    for context in contexts:
        context.close()


def test_the_rate_limit_is_a_sentence_and_viewers_get_no_forms(eventlet_only: None,
                                                               signed_in: Callable[[str], Page]) -> None:
    page = signed_in("lena")
    stepped = card(page, "Stepped job")
    stepped.get_by_label("Steps", exact=True).fill("1")
    stepped.get_by_label("Seconds per step", exact=True).fill("0")
    stepped.get_by_role("button", name="Launch").click()
    expect(stepped.get_by_role("status")).to_have_text(re.compile(r"^Launched Stepped job"))
    stepped.get_by_label("Steps", exact=True).fill("2")
    stepped.get_by_role("button", name="Launch").click()
    expect(stepped.get_by_role("status")).to_have_text(
        re.compile(r"^Not launched: You can launch at most 1 task a minute; try again in \d+ s\.$"))

    viewer = signed_in("vic")
    expect(viewer.get_by_text(re.compile(r"signed in as a viewer"))).to_be_visible()
    expect(viewer.get_by_role("button", name="Launch")).to_have_count(0)
    # On a phone too: no "Launch a task" section to open that would only hold that note.
    viewer.set_viewport_size({"width": 390, "height": 844})
    viewer.reload()
    expect(viewer.get_by_text(re.compile(r"signed in as a viewer"))).to_be_visible()
    expect(viewer.get_by_text("Launch a task")).to_have_count(0)
