"""The task list (static/js/table.js, filters.js): a bounded window of the server's paged list plus
every unfinished task, the view kept in the URL, the stale state, the phone and dark layouts,
the keyboard, waited and ran, what each role is shown, and axe's audit of each of these."""
from __future__ import annotations

import contextlib
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import redis
import requests
from playwright.sync_api import Browser, Page, expect

from celery_dashboard import index
from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT, axe_violations
from tests.support import Stack, add_users, wait_for

pytestmark = pytest.mark.usefixtures("eventlet_only")

FAKE_NAME = "tests.history.filler"
HISTORY = 10_000   # HISTORY_LIMIT's default: the index holds this many tasks at most
PHONE = {"width": 390, "height": 844}
PASSWORD = "a long enough password"
# What the phone test saw, kept with the other artifacts (docs/phone.png is made by `make
# screenshots`, scripts/screenshots.py).
PHONE_SCREENSHOT = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "phone-list.png"


# ---- helpers -----------------------------------------------------------------------------------

def launch(stack: Stack, task: str, params: dict[str, Any]) -> str:
    """A catalog task launched through the API (a new one each time); its id."""
    answer = requests.post(f"{stack.url}/api/tasks", json={"task": task, "params": params, "duplicate": True},
                           timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def task(stack: Stack, task_id: str) -> dict[str, Any]:
    return requests.get(f"{stack.url}/api/tasks/{task_id}", timeout=10).json()


def wait_state(stack: Stack, task_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    wait_for(lambda: task(stack, task_id)["state"] in states, 60, what=f"task in {states}")
    return task(stack, task_id)


def cancel(stack: Stack, task_id: str) -> None:
    requests.post(f"{stack.url}/api/tasks/{task_id}/cancel", timeout=10)


def rows(page: Page):  # noqa: ANN201 - a Playwright locator
    return page.get_by_role("table", name="Tasks").locator("tbody").get_by_role("row")


def row(page: Page, task_id: str):  # noqa: ANN201
    return page.locator(f'tr[data-task-id="{task_id}"]')


def expect_live(page: Page) -> None:
    expect(page.get_by_role("banner").get_by_role("status")).to_have_text("Live")


def no_serious_violations(page: Page, where: str) -> None:
    found = axe_violations(page)
    assert not found, f"axe ({where}): {json.dumps(found, indent=1)[:3000]}"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def write_history(stack: Stack, after: float, count: int) -> list[str]:
    """`count` finished tasks written straight into the index (as the listener would have left
    them), created between `after` and now; their ids."""
    client = redis.Redis.from_url(stack.redis_url)
    now = time.time()
    step = (now - after) / (count + 1)
    ids = []
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        created = after + (n + 1) * step
        task_id = f"{uuid.uuid4()}"
        record = index.pending_record(task_id, FAKE_NAME, None, created)
        record.update(state="SUCCESS", version=5, started=iso(created), finished=iso(created), updated=iso(created),
                      result={"n": n}, progress={"current": 1, "total": 1, "percent": 100, "message": ""})
        pipe.hset(index.DATA_KEY, task_id, json.dumps(record))
        pipe.hset(index.VERSION_KEY, task_id, 5)
        pipe.zadd(index.RECENT_KEY, {task_id: created})
        ids.append(task_id)
        if len(pipe) >= 3000:
            pipe.execute()
    pipe.execute()
    return ids


def forget_history(stack: Stack, ids: list[str]) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        pipe = client.pipeline(transaction=False)
        pipe.hdel(index.DATA_KEY, *chunk)
        pipe.hdel(index.VERSION_KEY, *chunk)
        pipe.zrem(index.RECENT_KEY, *chunk)
        pipe.execute()


# ---- the tests ---------------------------------------------------------------------------------

def test_window_stays_bounded_with_10000_tasks_and_the_url_keeps_the_view(page: Page, stack: Stack) -> None:
    old = launch(stack, "long", {"seconds": 60})
    created = datetime.fromisoformat(wait_state(stack, old, ("STARTED", "PROGRESS"))["created"]).timestamp()
    held = redis.Redis.from_url(stack.redis_url).zcard(index.RECENT_KEY)
    # Up to the history limit (and the search's scan bound), with room for the tasks launched
    # below: past it the index would trim its oldest tasks, this running one among them.
    filler = write_history(stack, created, max(HISTORY - held - 20, 9_000))
    try:
        page.goto(f"{stack.url}/?size=25")
        expect_live(page)
        # Page 1 of the newest: 25 rows, plus the older task that is still running.
        expect(rows(page)).to_have_count(26)
        expect(row(page, old).get_by_role("cell").nth(1)).to_have_text("running")
        expect(page.get_by_role("navigation", name="Pages of tasks")).to_contain_text(re.compile(r"Page 1 of .*\d{3}"))
        no_serious_violations(page, "list view, 10,000 tasks")

        # A new task joins page 1 at the top; the window keeps its size (the 25th row drops off).
        new = launch(stack, "steps", {"steps": 1, "delay": 0})
        expect(rows(page).first).to_have_attribute("data-task-id", new)
        expect(row(page, new).get_by_role("cell").nth(1)).to_have_text("succeeded")
        expect(rows(page)).to_have_count(26)

        # Paging goes through the URL: next page, back and forward.
        page.get_by_role("button", name="Next page").click()
        expect(page).to_have_url(re.compile(r"[?&]page=2"))
        expect(rows(page)).to_have_count(25)
        expect(row(page, old)).to_have_count(0)
        expect(row(page, filler[-26])).to_have_count(1)
        page.go_back()
        expect(row(page, old)).to_have_count(1)
        expect(rows(page)).to_have_count(26)
        # Away from page 1, a new task is offered, not slipped in: the page stays as it was. Also
        # one pushed while page 2's answer is on its way (seen in CI: no offer ever came).
        later: list[str] = []

        def answer_after_a_push(route: Any) -> None:
            response = route.fetch()
            later.append(launch(stack, "steps", {"steps": 1, "delay": 0}))
            wait_state(stack, later[0], ("SUCCESS",))
            time.sleep(0.5)  # the push reaches the tab before this answer does
            route.fulfill(response=response)

        page.route(re.compile(r"/api/tasks\?.*offset=25"), answer_after_a_push, times=1)
        page.go_forward()
        expect(page.get_by_role("navigation", name="Pages of tasks")).to_contain_text("Page 2")
        expect(row(page, old)).to_have_count(0)
        page.get_by_role("button", name="1 new task — show").click()
        expect(page).not_to_have_url(re.compile(r"page=2"))
        expect(rows(page).first).to_have_attribute("data-task-id", later[0])

        # A time range from the URL: sent until the running task was.
        # (the time as the API shows it, to the microsecond: the running task is included)
        page.goto(f"{stack.url}/?until={quote(iso(created))}")
        expect(rows(page).first).to_have_attribute("data-task-id", old)
        expect(page.get_by_label("Sent until")).not_to_have_value("")

        # A link reopens a filtered view: one task found by its id prefix among 10,000.
        wanted = filler[1234]
        page.goto(f"{stack.url}/?name=filler&q={wanted[:13]}")
        expect(rows(page)).to_have_count(1)
        expect(row(page, wanted)).to_contain_text('{"n":1234}')
        expect(page.get_by_label("Search")).to_have_value(wanted[:13])
        expect(page.get_by_label("Task name")).to_have_value("filler")

        # Filters by state from the URL, and the counts per state narrow the view when clicked.
        page.goto(f"{stack.url}/?state=PROGRESS,STARTED")
        expect(row(page, old)).to_have_count(1)
        states = rows(page).evaluate_all("rows => rows.map(row => row.cells[1].textContent)")
        assert set(states) <= {"running", "started"}, states
        page.goto(f"{stack.url}/?size=25")
        page.get_by_role("group", name="Tasks by state").get_by_role("button", name=re.compile("^running")).click()
        expect(page).to_have_url(re.compile(r"state=PROGRESS"))
        expect(row(page, old)).to_have_count(1)
        expect(rows(page)).to_have_count(1)

        # The old running task ends while the page is offline: back online, it is not left running.
        page.goto(f"{stack.url}/?size=25")
        expect(row(page, old).get_by_role("cell").nth(1)).to_have_text("running")
        page.context.set_offline(True)
        expect(page.get_by_role("alert")).to_contain_text("Not live")
        cancel(stack, old)
        wait_state(stack, old, ("REVOKED",))
        page.context.set_offline(False)
        expect_live(page)
        expect(page.locator(f'tr[data-task-id="{old}"] td.state').filter(has_text="running")).to_have_count(0)

        # A search that stops at its bound says the list was cut short.
        narrow = stack.start_web(env={"QUERY_SCAN_LIMIT": "1000"})
        page.goto(f"{narrow}/?q=no-such-text")
        expect(page.get_by_role("note")).to_contain_text("cut short")
        expect(rows(page)).to_have_count(0)
    finally:
        page.context.set_offline(False)
        forget_history(stack, filler)
        cancel(stack, old)


def test_offline_shows_a_stale_state_with_timers_stopped(page: Page, stack: Stack) -> None:
    running = launch(stack, "long", {"seconds": 60})
    expect_live(page)
    expect(row(page, running).get_by_role("cell").nth(1)).to_have_text("running")
    row(page, running).scroll_into_view_if_needed()  # clock-driven texts tick for rows in sight only
    ran = row(page, running).locator("td.ran")
    expect(ran).to_have_text(re.compile(r"\d"))
    ticking = ran.text_content()
    expect(ran).not_to_have_text(ticking)  # live: the run time counts up between pushes
    try:
        page.context.set_offline(True)
        banner = page.get_by_role("alert")
        expect(banner).to_contain_text(re.compile(r"Not live — last update at \d\d:\d\d:\d\d"))
        look = row(page, running).evaluate("tr => getComputedStyle(tr).filter")
        assert "grayscale" in look, f"the rows are not dimmed: filter {look}"
        frozen = ran.text_content()
        page.wait_for_timeout(2_500)
        assert ran.text_content() == frozen, "the run time kept ticking while the page was not live"
        no_serious_violations(page, "stale")

        page.context.set_offline(False)
        expect_live(page)
        expect(banner).to_be_hidden()
        expect(ran).not_to_have_text(frozen)
    finally:
        page.context.set_offline(False)
        cancel(stack, running)


def test_progress_shows_an_eta_and_a_stalled_badge(page: Page, stack: Stack) -> None:
    running = launch(stack, "long", {"seconds": 60})
    expect_live(page)
    mine = row(page, running)
    mine.scroll_into_view_if_needed()  # clock-driven texts tick for rows in sight only
    expect(mine.locator(".eta")).to_have_text(re.compile(r"^about .* left$"))
    stalled = mine.get_by_text("stalled", exact=True)
    expect(mine.locator(".message")).to_have_text(re.compile(r"^([3-9]|\d\d) s of 60 s$"))
    expect(stalled).to_be_hidden()
    # The worker's pool processes stop (the worker itself still answers): progress stops moving.
    assert stack.worker is not None
    pool = psutil.Process(stack.worker.pid).children(recursive=True)

    def signal_each(sig: int) -> None:
        for child in pool:
            with contextlib.suppress(psutil.NoSuchProcess):  # a pool process may end meanwhile
                child.send_signal(sig)

    try:
        signal_each(signal.SIGSTOP)
        expect(stalled).to_be_visible()
    finally:
        signal_each(signal.SIGCONT)  # every one of them, or the tests after this one find the pool stopped
    expect(stalled).to_be_hidden()
    cancel(stack, running)


def test_phone_and_dark_layouts(page: Page, stack: Stack) -> None:
    failing = launch(stack, "fail", {"steps": 0, "message": "unbroken" + "x" * 150})
    wait_state(stack, failing, ("FAILURE",))
    page.set_viewport_size(PHONE)
    page.reload()
    expect_live(page)
    mine = row(page, failing)
    expect(mine).to_be_visible()
    for name in ("Task", "State", "Progress", "Result"):
        expect(mine.locator(f'td[data-label="{name}"]')).to_be_visible()
    expect(mine.get_by_role("link", name="Failing job")).to_be_visible()
    expect(mine.get_by_role("cell").nth(1)).to_have_text("failed")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # An opened traceback scrolls inside its own box: its lines do not wrap, the page does not widen.
    mine.get_by_text("Traceback", exact=True).click()
    box = mine.get_by_role("region", name=re.compile("^Traceback of Failing job"))
    expect(box).to_be_visible()
    assert box.evaluate("pre => getComputedStyle(pre).whiteSpace") == "pre"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert (box.bounding_box() or {"height": 1e9})["height"] < 400
    no_serious_violations(page, "phone")
    PHONE_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    mine.scroll_into_view_if_needed()
    page.screenshot(path=str(PHONE_SCREENSHOT))

    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
    assert max(channels) < 60, f"the page is not dark: {background}"
    no_serious_violations(page, "phone, dark")
    page.set_viewport_size(VIEWPORT)
    no_serious_violations(page, "dark")


def test_keyboard_skip_link_cancel_and_traceback_box(page: Page, stack: Stack) -> None:
    running = launch(stack, "long", {"seconds": 60})
    expect_live(page)
    heading = page.get_by_role("heading", name="Tasks", exact=True)
    expect(heading).to_be_visible()  # the list is shown: a skip link pressed before has no target yet
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the task list")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(heading).to_be_focused()

    expect(row(page, running).get_by_role("cell").nth(1)).to_have_text("running")
    button = page.get_by_role("button", name=f"Cancel Long job {running[:8]}", exact=True)
    button.focus()
    page.keyboard.press("Enter")
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").focus()  # the confirmation
    page.keyboard.press("Enter")
    expect(row(page, running).get_by_role("cell").nth(1)).to_have_text("cancelled")
    # The focus stays in the task's row, not back at the top of the page.
    focused = page.evaluate("document.activeElement.closest('tr')?.dataset.taskId")
    assert focused == running

    # A traceback's scroll box is reachable by keyboard and named.
    failing = launch(stack, "fail", {"steps": 0, "message": "reach me"})
    mine = row(page, failing)
    expect(mine.get_by_role("cell").nth(1)).to_have_text("failed")
    mine.get_by_text("Traceback", exact=True).click()
    box = mine.get_by_role("region", name=re.compile("^Traceback of Failing job"))
    assert box.get_attribute("tabindex") == "0"


def test_waited_and_ran_are_shown_apart(page: Page, stack: Stack) -> None:
    expect_live(page)
    expect(page.get_by_role("columnheader", name="Waited")).to_be_visible()
    expect(page.get_by_role("columnheader", name="Ran")).to_be_visible()
    done = launch(stack, "steps", {"steps": 3, "delay": 0.4})
    record = wait_state(stack, done, ("SUCCESS",))
    mine = row(page, done)
    expect(mine.get_by_role("cell").nth(1)).to_have_text("succeeded")
    expected_ran = (datetime.fromisoformat(record["finished"])
                    - datetime.fromisoformat(record["started"])).total_seconds()
    ran = float(re.match(r"[\d.]+", mine.locator("td.ran").text_content()).group())
    waited = mine.locator("td.waited").text_content()
    assert abs(ran - expected_ran) < 0.2, (ran, expected_ran)
    assert re.fullmatch(r"\d+(\.\d)? s", waited), waited


@pytest.fixture(scope="module")
def roles_site(stack: Stack, async_mode: str) -> Iterator[str]:
    """A web process of the same stack with sign-in on, a viewer and an operator (eventlet only,
    as the test that uses it)."""
    if async_mode != "eventlet":
        pytest.skip("a page feature: checked under eventlet")
    add_users(stack, {"vicky": "viewer", "otto": "operator"}, PASSWORD)
    yield stack.start_web(env={"AUTH_REQUIRED": "1", "SECRET_KEY": "", "LOGIN_LIMIT": "1000/minute",
                               "LOGIN_LIMIT_PER_ADDRESS": "1000/minute"})


def signed_in(browser: Browser, url: str, name: str) -> Page:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{url}/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect_live(page)
    return page


def test_each_role_sees_what_it_can_do(page: Page, browser: Browser, roles_site: str) -> None:
    # The local admin (sign-in off on loopback): an owner column, the launch forms.
    expect_live(page)
    expect(page.get_by_role("columnheader", name="Owner")).to_be_visible()
    expect(page.get_by_role("region", name="Launch a task").get_by_role("button", name="Launch").first).to_be_visible()

    viewer = signed_in(browser, roles_site, "vicky")
    try:
        expect(viewer.get_by_text(re.compile("signed in as a viewer"))).to_be_visible()
        expect(viewer.get_by_role("button", name="Launch")).to_have_count(0)
        expect(viewer.get_by_role("columnheader", name="Owner")).to_have_count(0)
        expect(viewer.locator("#no-tasks")).to_be_visible()
        expect(viewer.locator("#no-tasks")).not_to_contain_text(".delay()")
        no_serious_violations(viewer, "viewer")
    finally:
        viewer.context.close()

    operator = signed_in(browser, roles_site, "otto")
    try:
        expect(operator.get_by_role("button", name="Launch").first).to_be_visible()
        expect(operator.get_by_role("columnheader", name="Owner")).to_have_count(0)
        expect(operator.locator("#no-tasks")).to_contain_text("you launch")
        expect(operator.locator("#no-tasks")).not_to_contain_text(".delay()")
    finally:
        operator.context.close()


def test_a_backlog_that_drains_leaves_the_servers_counts_and_page(page: Page, stack: Stack) -> None:
    """80 tasks queue up behind a paused worker while the list is open, then drain: the tab's
    counts per state end up as the server's, and its window is the server's page again (not
    every task it saw go by)."""
    page.goto(f"{stack.url}/?size=25")
    expect_live(page)
    assert stack.worker is not None
    pool = psutil.Process(stack.worker.pid).children(recursive=True)
    try:
        for child in pool:
            child.send_signal(signal.SIGSTOP)
        sent = stack.python("from tasks.demo import steps\n"
                            "for _ in range(80): print(steps.delay(steps=1, delay=0).id)").stdout.split()
        expect(page.get_by_role("group", name="Tasks by state")).to_contain_text("queued")
    finally:
        for child in pool:
            child.send_signal(signal.SIGCONT)
    for task_id in sent:
        wait_state(stack, task_id, ("SUCCESS",))

    def shown_counts() -> list[int]:
        texts = page.get_by_role("group", name="Tasks by state").get_by_role("button").all_inner_texts()
        return sorted(int(text.rsplit(" ", 1)[1]) for text in texts)

    def server() -> dict[str, Any]:
        return requests.get(f"{stack.url}/api/tasks?limit=25", timeout=10).json()

    wait_for(lambda: shown_counts() == sorted(n for n in server()["counts"].values() if n > 0), 30,
             what="the tab's counts to be the server's")
    unfinished = sum(n for state, n in server()["counts"].items() if state not in ("SUCCESS", "FAILURE", "REVOKED"))
    wait_for(lambda: rows(page).count() <= 25 + unfinished, 30, what="the window to be the server's page again")
