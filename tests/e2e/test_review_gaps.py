"""Gaps a fresh user found in the dashboard (issue 10's review), each as a person meets it in
Chromium: the stale page offers no action that needs the server and no ETA; the bulk dialog names
states as the table does; a page past the end and a bad filter value are said in plain sentences
on the right spot; the workers view has one outline; the phone shows the list first on a one-line
nav; the live region speaks plain sentences. Page features: eventlet only."""
from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.e2e.test_actions import send, state
from tests.e2e.test_list_view import expect_live, no_serious_violations, row
from tests.support import Stack, wait_for

pytestmark = pytest.mark.usefixtures("eventlet_only")

PHONE = {"width": 390, "height": 844}
NOT_LIVE = re.compile(r"not live", re.IGNORECASE)




# ---- 1. stale: no ETA, no action that needs the server ------------------------------------------

def test_while_not_live_etas_are_hidden_and_server_actions_are_disabled_with_a_reason(
        page: Page, stack: Stack) -> None:
    running = send(stack, "long", seconds=60)
    expect_live(page)
    mine = row(page, running)
    mine.scroll_into_view_if_needed()
    eta = mine.locator(".eta")
    expect(eta).to_have_text(re.compile(r"^about .* left$"))
    cancel = mine.get_by_role("button", name=re.compile("^Cancel "))
    launch_buttons = page.get_by_role("button", name="Launch", exact=True)
    bulk = page.get_by_role("button", name="Cancel all matching…")
    expect(cancel).to_be_enabled()
    expect(bulk).to_be_enabled()
    assert launch_buttons.count() > 0
    try:
        page.context.set_offline(True)
        expect(page.get_by_role("alert").filter(has_text="Not live")).to_be_visible()
        expect(eta).to_be_hidden()
        assert "left" not in mine.inner_text(), "an ETA is still shown while nothing is live"
        for button in (cancel, bulk, *launch_buttons.all()):
            expect(button).to_be_disabled()
            expect(button).to_have_accessible_description(NOT_LIVE)
        no_serious_violations(page, "stale, actions disabled")
        page.context.set_offline(False)
        expect_live(page)
        for button in (cancel, bulk, *launch_buttons.all()):
            expect(button).to_be_enabled()
            expect(button).not_to_have_accessible_description(NOT_LIVE)
        expect(eta).to_have_text(re.compile(r"^about .* left$"))
        expect(eta).to_be_visible()

        # The detail view's Cancel too.
        mine.get_by_role("link").first.click()
        detail_cancel = page.get_by_role("group", name="Actions").get_by_role("button", name=re.compile("^Cancel"))
        expect(detail_cancel).to_be_enabled()
        page.context.set_offline(True)
        expect(detail_cancel).to_be_disabled()
        expect(detail_cancel).to_have_accessible_description(NOT_LIVE)
        page.context.set_offline(False)
        expect(detail_cancel).to_be_enabled()
    finally:
        page.context.set_offline(False)
        requests.post(f"{stack.url}/api/tasks/{running}/cancel", timeout=10)


# ---- 2. the bulk dialog names states as the table does --------------------------------------------

def test_the_bulk_dialog_names_states_as_the_table_shows_them(page: Page, stack: Stack) -> None:
    since = datetime.fromtimestamp(time.time() - 1, UTC).isoformat(timespec="seconds")
    failed = send(stack, "fail", steps=0, message="for the bulk dialog")
    wait_for(lambda: state(stack, failed) == "FAILURE", 60, what="the task to fail")
    page.goto(f"{stack.url}/?state=FAILURE&name=tasks.demo.fail&since={since.replace('+', '%2B')}")
    label = row(page, failed).get_by_role("cell").nth(1)
    expect(label).to_have_text("failed")
    page.get_by_role("button", name="Retry all matching…").click()
    dialog = page.get_by_role("dialog", name="Retry 1 task?")
    # The table's word for the state, with Celery's name beside it (the filter's value).
    expect(dialog).to_contain_text("state failed (FAILURE)")
    assert not re.search(r"state FAILURE", dialog.inner_text()), dialog.inner_text()
    dialog.get_by_role("button", name="Do not retry").click()
    expect(dialog).to_have_count(0)

    # The cancel dialog says which unfinished states it covers in the table's words.
    running = send(stack, "long", seconds=60)
    try:
        page.goto(f"{stack.url}/?state=PROGRESS&name=tasks.demo.long&since={since.replace('+', '%2B')}")
        expect(row(page, running).get_by_role("cell").nth(1)).to_have_text("running")
        page.get_by_role("button", name="Cancel all matching…").click()
        dialog = page.get_by_role("dialog", name=re.compile(r"^Cancel \d+ tasks?\?$"))
        expect(dialog).to_contain_text("state running (PROGRESS)")
        expect(dialog).to_contain_text("queued, received, started, running or retrying")
        dialog.get_by_role("button", name="Keep them").click()
    finally:
        requests.post(f"{stack.url}/api/tasks/{running}/cancel", timeout=10)


# ---- 3. a page past the end ---------------------------------------------------------------------

def test_a_page_past_the_end_says_so_and_links_to_the_last_page(page: Page, stack: Stack) -> None:
    send(stack, "steps", steps=1, delay=0.05)
    page.goto(f"{stack.url}/?page=999999")
    total = requests.get(f"{stack.url}/api/tasks", params={"limit": 1}, timeout=10).json()["total"]
    last = max(1, math.ceil(total / 50))
    expect(page.get_by_text(f"Page 999999 is past the last page, {last}.")).to_be_visible()
    expect(page.get_by_text(re.compile("offset|must be an integer"))).to_have_count(0)
    page.get_by_role("link", name=f"Go to page {last}").click()
    expect(page).to_have_url(re.compile(rf"page={last}$") if last > 1 else re.compile(r"/$"))
    expect(page.get_by_role("table", name="Tasks").locator("tbody tr").first).to_be_visible()
    expect(page.get_by_text("is past the last page")).to_be_hidden()
    no_serious_violations(page, "last page")


# ---- 4. a bad filter value ----------------------------------------------------------------------

def test_a_bad_since_is_shown_on_its_field_and_no_rows_pretend_to_match(page: Page, stack: Stack) -> None:
    send(stack, "steps", steps=1, delay=0.05)
    expect_live(page)
    tasks = page.get_by_role("table", name="Tasks").locator("tbody tr")
    expect(tasks.first).to_be_visible()
    answer = requests.get(f"{stack.url}/api/tasks", params={"since": "garbage"}, timeout=10)
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "since", answer.text
    for how in ("in the page", "loaded"):
        if how == "in the page":  # a link followed inside the page: the old rows were on screen
            page.evaluate("() => { history.pushState(null, '', '/?since=garbage');"
                          " window.dispatchEvent(new PopStateEvent('popstate')); }")
        else:
            page.goto(f"{stack.url}/?since=garbage")
            expect_live(page)  # the snapshot's tasks have arrived: none joins the list
        field = page.get_by_label("Sent from", exact=True)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_accessible_description(re.compile(r"ISO 8601"))
        expect(tasks).to_have_count(0)
        expect(page.get_by_text(re.compile(r"No tasks are shown: .*Sent from"))).to_be_visible()
        page.wait_for_timeout(1500)
        expect(tasks).to_have_count(0)
    no_serious_violations(page, "bad since")
    page.get_by_role("button", name="Clear filters").click()
    expect(tasks.first).to_be_visible()
    expect(page.get_by_label("Sent from", exact=True)).not_to_have_attribute("aria-invalid", "true")


# ---- 5. the workers view's outline ---------------------------------------------------------------

OUTLINE = """() => [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")]
  .filter((h) => h.getClientRects().length)
  .map((h) => [Number(h.tagName[1]), h.textContent.trim()])"""


def test_the_workers_view_has_one_h1_and_an_outline_without_repeats_or_skips(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/workers")
    expect(page.get_by_role("table", name="Workers")).to_be_visible()
    outline = page.evaluate(OUTLINE)
    levels = [level for level, _ in outline]
    texts = [text.casefold() for _, text in outline]
    assert levels.count(1) == 1 and levels[0] == 1, outline
    assert len(set(texts)) == len(texts), f"a heading repeats: {outline}"
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), f"a level is skipped: {outline}"
    # Each name is heard once as a heading, and at most once more for the one thing it labels (the
    # view's region, a table): no caption, region or second spelling says it again.
    snapshot = page.locator("#main").aria_snapshot()
    names = re.findall(r'(?:heading|region|table|group)\s+"([^"]+)"', snapshot)
    names += re.findall(r"caption: (.+)", snapshot)
    repeated = {name: names.count(name) for name in names if names.count(name) > 2}
    assert not repeated, f"said more than twice: {repeated}\n{snapshot}"
    view = page.get_by_role("region", name="Workers & queues", exact=True)
    expect(view.get_by_role("heading", level=2)).to_have_text("Workers & queues")
    assert names.count("Workers and queues") == 0, snapshot


# ---- 6. the phone ------------------------------------------------------------------------------

def test_on_a_phone_the_list_comes_first_and_the_nav_is_one_line(page: Page, stack: Stack) -> None:
    send(stack, "steps", steps=1, delay=0.05)
    page.set_viewport_size(PHONE)
    page.reload()
    expect_live(page)
    table = page.get_by_role("table", name="Tasks")
    expect(table.locator("tbody tr").first).to_be_visible()
    launch = page.get_by_role("button", name="Launch", exact=True)
    # The forms wait behind a "Launch a task" disclosure; nothing of them stands above the list.
    for button in launch.all():
        expect(button).to_be_hidden()
    disclosure = page.locator("summary").filter(has_text="Launch a task")
    expect(disclosure).to_be_visible()
    links = page.get_by_role("navigation", name="Views").get_by_role("link")
    tops = {round((link.bounding_box() or {"y": -1})["y"]) for link in links.all()}
    assert len(tops) == 1, f"the nav wraps onto {len(tops)} lines: {tops}"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    table_top = (table.bounding_box() or {"y": 1e9})["y"]
    assert table_top < PHONE["height"], f"the list starts below the first screen, at {table_top} px"
    no_serious_violations(page, "phone, forms closed")
    disclosure.click()
    expect(launch.first).to_be_visible()
    no_serious_violations(page, "phone, forms open")


# ---- 8. the live region's sentences ---------------------------------------------------------------

HEARD = """() => {
  window.__heard = [];
  const region = document.getElementById("announcer");
  new MutationObserver(() => { if (region.textContent) window.__heard.push(region.textContent); })
    .observe(region, { childList: true, characterData: true, subtree: true });
}"""


def test_the_live_region_names_the_task_and_its_error_in_plain_sentences(page: Page, stack: Stack) -> None:
    expect_live(page)
    page.evaluate(HEARD)
    card = page.get_by_role("region", name="Failing job", exact=True)
    card.get_by_label("Steps before failing", exact=True).fill("0")
    card.get_by_role("button", name="Launch", exact=True).click()
    status = card.get_by_role("status")
    expect(status).to_have_text(re.compile(r"^Launched Failing job \([0-9a-f]{8}\)\.$"))
    short = re.search(r"\(([0-9a-f]{8})\)", status.inner_text())[1]
    wanted = re.compile(rf"^Failing job {short} failed: \w*Error\.")
    wait_for(lambda: any(wanted.search(text) for text in page.evaluate("window.__heard")), 60,
             what="the failure to be announced")

    # Several tasks changing at once: one sentence in full, the rest summed up in words.
    heard = page.evaluate("""async () => {
      const announce = await import("/static/js/announce.js");
      const { createStore } = await import("/static/js/state.js");
      const ctx = { tasks: createStore(), titles: new Map([["reports.build", "Report"]]) };
      const ids = ["3f2a0000-0000-4000-8000-000000000001", "77aa0000-0000-4000-8000-000000000002",
                   "88bb0000-0000-4000-8000-000000000003"];
      for (const id of ids) announce.followLaunch(ctx, { id, name: "reports.build", state: "PENDING", version: 1 });
      announce.spoken();  // as after "Launched": the next message waits its turn, and they merge
      ctx.tasks.upsert({ id: ids[1], name: "reports.build", state: "STARTED", version: 2 });
      ctx.tasks.upsert({ id: ids[2], name: "reports.build", state: "SUCCESS", version: 3 });
      ctx.tasks.upsert({ id: ids[0], name: "reports.build", state: "FAILURE", version: 4,
                         error: { type: "ValueError", message: "bad input" } });
      const region = document.getElementById("announcer");
      const start = performance.now();
      while (performance.now() - start < 10000) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        if (region.textContent.includes("Report 3f2a0000")) return region.textContent;
      }
      return region.textContent;
    }""")
    assert heard == "Report 3f2a0000 failed: ValueError. 2 more tasks changed: 1 started, 1 succeeded.", heard
