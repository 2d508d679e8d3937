"""The dashboard in a real browser against the real stack: launch, watch live, cancel, fail, two pages."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Locator, Page, expect

from tests.support import Stack

ROOT = Path(__file__).resolve().parents[2]
# The overview's screenshot stays with the other artifacts: a test run leaves the work tree as it
# was. The documentation's pictures (docs/*.png) come from `make screenshots` (scripts/screenshots.py).
README_SCREENSHOT = ROOT / "tests" / "artifacts" / "dashboard.png"
TITLES = ["Stepped job", "Count primes", "Failing job", "Flaky job", "Long job", "Fan-out"]
FINAL = {"succeeded", "failed", "cancelled"}
# The README shows the catalog and the newest rows: the page's own history (every task of the test
# session, integration tests' included under `make test`) would make a full page thousands of
# pixels tall, so the full-page screenshot ends below this many rows.
README_ROWS = 10


# ---- reading the page as a person would ------------------------------------------------------

def card(page: Page, title: str) -> Locator:
    return page.get_by_role("region", name=title, exact=True)


def task_table(page: Page) -> Locator:
    return page.get_by_role("table", name="Tasks")


def task_rows(page: Page) -> Locator:
    """Every task row (the header row excluded), newest first."""
    return task_table(page).locator("tbody").get_by_role("row")


def expect_live(page: Page) -> None:
    expect(page.get_by_role("banner").get_by_role("status")).to_have_text("Live")


@dataclass(frozen=True)
class Task:
    """One launched task, found on any page by the accessible names of its row's controls."""

    title: str
    id: str

    @property
    def short(self) -> str:
        return self.id[:8]

    def bar(self, page: Page) -> Locator:
        return page.get_by_role("progressbar", name=f"Progress of {self.title} {self.short}", exact=True)

    def row(self, page: Page) -> Locator:
        return task_table(page).get_by_role("row").filter(has=self.bar(page))

    def state(self, page: Page) -> Locator:
        """The State column of the task's row: the label a person reads (queued, running, ...)."""
        return self.row(page).get_by_role("cell").nth(1)

    def cancel_button(self, page: Page) -> Locator:
        return page.get_by_role("button", name=f"Cancel {self.title} {self.short}", exact=True)

    def cancel(self, page: Page) -> None:
        """Click the row's Cancel and confirm in the dialog that names the task (static/js/actions.js)."""
        self.cancel_button(page).click()
        dialog = page.get_by_role("dialog", name=f"Cancel {self.title} {self.short}?", exact=True)
        dialog.get_by_role("button", name="Cancel task", exact=True).click()

    def seen(self, page: Page) -> dict[str, list[str]]:
        """Everything this page's row for the task has shown so far (see RECORDER in conftest)."""
        return page.evaluate("id => window.__seen[id] || {values: [], states: [], messages: []}", self.id)

    def moving_values(self, page: Page) -> list[str]:
        """The distinct progress values strictly between 0 and 100 that the bar has shown."""
        return sorted({value for value in self.seen(page)["values"] if 0 < float(value) < 100}, key=float)


def launch(page: Page, title: str, fields: dict[str, Any] | None = None) -> Task:
    """Fill the card's labelled inputs, click Launch, see "Launched <title> (<short id>)." and return
    the new task (launching another when an identical one is still running)."""
    where = card(page, title)
    for label, value in (fields or {}).items():
        where.get_by_label(label, exact=True).fill(str(value))
    # The response says which of the rows is ours; everything else is read off the page.
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as sent:
        where.get_by_role("button", name="Launch").click()
    if sent.value.status == 409:  # an identical task is queued or running: the form offers to follow it
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as sent:
            where.get_by_role("button", name="Launch another").click()
    assert sent.value.status == 202, sent.value.text()
    task = Task(title, sent.value.json()["id"])
    expect(where.get_by_role("status")).to_have_text(f"Launched {title} ({task.short}).")
    return task


def table_view(page: Page) -> list[tuple[str, str]]:
    """(first cell, state label) for every row, top to bottom."""
    return task_rows(page).evaluate_all(
        "rows => rows.map(row => [row.cells[0].textContent.trim(), row.cells[1].textContent.trim()])")


def js_number(value: Any) -> str:
    """A catalog default as the page's number input shows it (JavaScript prints 1.0 as "1")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---- the tests ------------------------------------------------------------------------------

def test_page_shows_the_catalog_and_is_live(page: Page, stack: Stack) -> None:
    expect_live(page)
    catalog = page.get_by_role("region", name="Launch a task")
    expect(catalog.get_by_role("region")).to_have_count(len(TITLES))
    entries = {entry["title"]: entry for entry in page.request.get(f"{stack.url}/api/catalog").json()["tasks"]}
    assert sorted(entries) == sorted(TITLES)
    for title in TITLES:
        where = card(page, title)
        expect(where.get_by_role("heading", name=title, exact=True)).to_be_visible()
        expect(where.get_by_text(entries[title]["description"], exact=True)).to_be_visible()
        for spec in entries[title]["params"]["properties"].values():
            expect(where.get_by_label(spec["title"], exact=True)).to_have_value(js_number(spec["default"]))
        expect(where.get_by_role("button", name="Launch")).to_be_enabled()
    expect(task_table(page)).to_be_visible()


def test_stepped_job_moves_live_and_succeeds(page: Page) -> None:
    expect_live(page)
    page.evaluate("window.__sameDocument = true")
    task = launch(page, "Stepped job", {"Steps": 8, "Seconds per step": 0.4})

    expect(task.row(page)).to_be_visible()
    expect(task.row(page).get_by_role("cell").first).to_contain_text("Stepped job")
    expect(task.state(page)).to_have_text("succeeded")
    expect(task.bar(page)).to_have_attribute("aria-valuenow", "100")
    expect(task.row(page)).to_contain_text("100%")
    expect(task.row(page)).to_contain_text("step 8 of 8")
    expect(task.row(page).get_by_text('{"steps":8}', exact=True)).to_be_visible()
    expect(task.cancel_button(page)).to_be_hidden()

    seen = task.seen(page)
    assert len(task.moving_values(page)) >= 2, f"the bar did not move live: values shown {seen['values']}"
    assert any(re.fullmatch(r"step [1-7] of 8", m) for m in seen["messages"]), \
        f"no 'step N of 8' message while running: {seen['messages']}"
    assert "running" in seen["states"], f"states shown: {seen['states']}"
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"


@pytest.mark.usefixtures("eventlet_only")  # what the page shows, not how it is pushed
def test_failing_job_shows_the_error_and_traceback(page: Page) -> None:
    expect_live(page)
    task = launch(page, "Failing job", {"Steps before failing": 2, "Seconds per step": 0.2,
                                        "Error message": "broken by the browser test"})

    expect(task.state(page)).to_have_text("failed")
    row = task.row(page)
    expect(row.get_by_text("ValueError: broken by the browser test", exact=True)).to_be_visible()
    expect(task.cancel_button(page)).to_be_hidden()

    traceback = row.get_by_role("group")
    expect(traceback.get_by_text("raise ValueError")).to_be_hidden()
    traceback.get_by_text("Traceback", exact=True).click()
    expect(traceback.get_by_text("raise ValueError")).to_be_visible()
    expect(traceback).to_contain_text("ValueError: broken by the browser test")


def test_long_job_can_be_cancelled_while_running(page: Page) -> None:
    expect_live(page)
    task = launch(page, "Long job", {"Seconds": 60})

    expect(task.state(page)).to_have_text("running")
    expect(task.row(page)).to_contain_text(re.compile(r"\d+ s of 60 s"))
    task.cancel(page)

    expect(task.state(page)).to_have_text("cancelled")
    expect(task.cancel_button(page)).to_be_hidden()
    assert float(task.bar(page).get_attribute("aria-valuenow")) < 100
    assert "succeeded" not in task.seen(page)["states"]


@pytest.mark.usefixtures("eventlet_only")  # what the page shows, not how it is pushed
def test_flaky_job_retries_then_succeeds_and_fan_out_succeeds(page: Page) -> None:
    expect_live(page)
    flaky = launch(page, "Flaky job", {"Failures before success": 2, "Seconds before a retry": 1})
    fanout = launch(page, "Fan-out", {"Children": 3, "Steps per child": 4, "Seconds per step": 0.2})

    expect(flaky.state(page)).to_have_text("succeeded")
    expect(flaky.row(page).get_by_text('{"attempts":3}', exact=True)).to_be_visible()
    expect(flaky.row(page)).to_contain_text("attempt 3 of 3")
    assert "retrying" in flaky.seen(page)["states"], f"never showed retrying: {flaky.seen(page)['states']}"

    expect(fanout.state(page)).to_have_text("succeeded")
    expect(fanout.bar(page)).to_have_attribute("aria-valuenow", "100")
    expect(fanout.row(page).get_by_text('{"children":3,"steps":12}', exact=True)).to_be_visible()
    assert fanout.moving_values(page), f"the fan-out bar did not move: {fanout.seen(page)['values']}"

    children = task_rows(page).filter(has_text=f"child of {fanout.short}")
    expect(children).to_have_count(3)
    expect(children.locator("td:nth-child(2)")).to_have_text(["succeeded"] * 3)


def test_second_page_shows_the_same_tasks_and_stays_in_step(page: Page, open_page: Callable[[], Page]) -> None:
    expect_live(page)
    done = launch(page, "Stepped job", {"Steps": 2, "Seconds per step": 0.1})
    broken = launch(page, "Failing job", {"Steps before failing": 0})
    expect(done.state(page)).to_have_text("succeeded")
    expect(broken.state(page)).to_have_text("failed")

    second = open_page()
    expect_live(second)
    # The same tasks in the same order, and every task that has ended in the same final state.
    view = table_view(page)
    expect(task_rows(second).locator("td:nth-child(1)")).to_have_text([name for name, _ in view])
    expect(task_rows(second).locator("td:nth-child(2)")).to_have_text(
        [state if state in FINAL else re.compile(".*") for _, state in view])

    # A task launched in the first page progresses and ends in the second, with no reload.
    task = launch(page, "Stepped job", {"Steps": 6, "Seconds per step": 0.4})
    expect(task.row(second)).to_be_visible()
    expect(task.state(second)).to_have_text("succeeded")
    expect(task.bar(second)).to_have_attribute("aria-valuenow", "100")
    expect(task.row(second).get_by_text('{"steps":6}', exact=True)).to_be_visible()
    assert len(task.moving_values(second)) >= 2, f"second page's bar did not move: {task.seen(second)['values']}"
    expect(task.state(page)).to_have_text("succeeded")

    # And the other way round.
    other = launch(second, "Failing job", {"Steps before failing": 0})
    expect(other.state(page)).to_have_text("failed")


@pytest.mark.usefixtures("eventlet_only")  # what the page shows, not how it is pushed
def test_invalid_parameters_show_the_error_and_create_no_task(page: Page) -> None:
    expect_live(page)
    stepped = card(page, "Stepped job")
    site = page.url.split("/", 3)[:3]

    def total() -> int:  # tasks the server knows (the page shows a bounded window of them)
        return requests.get("/".join(site) + "/api/tasks?limit=1", timeout=10).json()["total"]

    before = total()
    steps = stepped.get_by_label("Steps", exact=True)
    for value in (0, 5000):  # refused in the browser, from the catalog's schema, on the field itself
        steps.fill(str(value))
        stepped.get_by_role("button", name="Launch").click()
        expect(steps).to_have_attribute("aria-invalid", "true")
        expect(stepped.get_by_text("Enter a whole number from 1 to 1000.", exact=True).first).to_be_visible()
        assert total() == before

    # A valid launch afterwards makes exactly one task: nothing was queued behind the errors.
    task = launch(page, "Stepped job", {"Steps": 1, "Seconds per step": 0})
    expect(task.row(page)).to_be_visible()
    expect(task.state(page)).to_have_text("succeeded")
    assert total() == before + 1


@pytest.mark.usefixtures("eventlet_only")  # what the page shows, not how it is pushed
def test_overview_for_the_readme(page: Page) -> None:
    """Tasks in every final state and one running, then a full-page screenshot for the README."""
    expect_live(page)
    primes = launch(page, "Count primes", {"Up to": 300_000})
    stepped = launch(page, "Stepped job", {"Steps": 5, "Seconds per step": 0.2})
    failing = launch(page, "Failing job", {"Steps before failing": 2, "Seconds per step": 0.2})
    cancelled = launch(page, "Long job", {"Seconds": 60})
    running = launch(page, "Long job", {"Seconds": 45})

    expect(primes.state(page)).to_have_text("succeeded")
    expect(stepped.state(page)).to_have_text("succeeded")
    expect(failing.state(page)).to_have_text("failed")
    expect(cancelled.state(page)).to_have_text("running")
    cancelled.cancel(page)
    expect(cancelled.state(page)).to_have_text("cancelled")
    expect(running.state(page)).to_have_text("running")
    expect(running.row(page)).to_contain_text(re.compile(r"([3-9]|\d\d) s of 45 s"))

    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    rows = task_rows(page)
    last = rows.nth(min(README_ROWS, rows.count()) - 1)
    bottom = last.evaluate("row => row.getBoundingClientRect().bottom + window.scrollY")
    width = page.viewport_size["width"]
    page.screenshot(path=str(README_SCREENSHOT), full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": round(bottom) + 1})

    running.cancel(page)
    expect(running.state(page)).to_have_text("cancelled")
