"""Acting on tasks in the browser (static/js/actions.js, static/js/audit.js, web/actions.py,
web/bulk.py): cancel asks first and a refusal says why, retry links back, bulk cancel previews the
exact count, the audit log lists it. Page features: eventlet only."""
from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import requests
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import axe_violations
from tests.support import Stack, wait_for


def send(stack: Stack, task: str, **params: object) -> str:
    """Launch through the API, as a script would (the page shows it live); the new task's id."""
    answer = requests.post(f"{stack.url}/api/tasks", json={"task": task, "params": params, "duplicate": True},
                           timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def state(stack: Stack, task_id: str) -> str:
    return requests.get(f"{stack.url}/api/tasks/{task_id}", timeout=10).json()["state"]


def ended(stack: Stack, task_id: str, states: tuple[str, ...]) -> None:
    wait_for(lambda: state(stack, task_id) in states, 60, what=f"{task_id} to end {states}")


def row(page: Page, task_id: str) -> Locator:
    return page.locator(f'tr[data-task-id="{task_id}"]')


def is_reddish(page: Page, locator: Locator) -> bool:
    """Whether the element's background or text colour is a red (a failure's colour)."""
    colours = locator.evaluate("node => [getComputedStyle(node).backgroundColor, getComputedStyle(node).color]")
    for colour in colours:
        r, g, b = (int(part) for part in re.findall(r"\d+", colour)[:3])
        if r > 150 and r > g + 60 and r > b + 60:
            return True
    return False


def test_cancel_asks_first_and_a_cancelled_task_looks_neutral(eventlet_only: None, page: Page, stack: Stack) -> None:
    task_id = send(stack, "long", seconds=300)
    short = task_id[:8]
    cancel = page.get_by_role("button", name=f"Cancel Long job {short}", exact=True)
    cancel.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=f"Cancel Long job {short}?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile("^Keep it"))).to_be_focused()
    page.keyboard.press("Escape")  # Escape keeps the task
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_focused()
    assert state(stack, task_id) != "REVOKED"

    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Tab")  # from "Keep it" to "Cancel task", all by keyboard
    expect(dialog.get_by_role("button", name="Cancel task")).to_be_focused()
    page.keyboard.press("Enter")
    badge = row(page, task_id).get_by_role("cell").nth(1)
    expect(badge).to_have_text("cancelled")
    assert not is_reddish(page, badge.locator(".badge")) and not is_reddish(page, row(page, task_id))
    # The Cancel button went with the task's end: the focus is on the task's own title, not lost.
    expect(row(page, task_id).get_by_role("link").first).to_be_focused()
    assert axe_violations(page) == []


def test_a_refused_cancel_shows_the_servers_reason(eventlet_only: None, page: Page, stack: Stack) -> None:
    task_id = send(stack, "steps", steps=2, delay=0.5)
    page.get_by_role("button", name=f"Cancel Stepped job {task_id[:8]}", exact=True).click()
    dialog = page.get_by_role("dialog", name=f"Cancel Stepped job {task_id[:8]}?")
    expect(dialog).to_be_visible()
    ended(stack, task_id, ("SUCCESS",))  # it ends while the question is open
    dialog.get_by_role("button", name="Cancel task").click()
    expect(row(page, task_id)).to_contain_text("Not cancelled. The task has already ended: it succeeded.")
    expect(page.locator("#announcer")).to_contain_text("was not cancelled. The task has already ended: it succeeded.")


def test_retry_of_a_failed_task_makes_a_new_task_that_links_back(eventlet_only: None, page: Page,
                                                                 stack: Stack) -> None:
    failed = send(stack, "fail", steps=0, delay=0, message="retried from the browser")
    ended(stack, failed, ("FAILURE",))
    page.goto(f"{stack.url}/tasks/{failed}")
    page.get_by_role("button", name="Retry", exact=True).click()
    expect(page).not_to_have_url(re.compile(re.escape(failed)))
    new_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("link", name=re.compile(failed[:8]))).to_be_visible()  # "Retry of"
    answer = requests.get(f"{stack.url}/api/tasks/{new_id}", timeout=10).json()
    assert answer["retry_of"] == failed and answer["name"] == "tasks.demo.fail"
    ended(stack, new_id, ("FAILURE",))

    # Re-run with edited arguments: the launch form comes back filled with the task's own.
    page.get_by_role("button", name="Re-run with changes").click()
    expect(page).to_have_url(f"{stack.url}/")
    form = page.get_by_role("region", name="Failing job", exact=True)
    expect(form.get_by_label("Error message", exact=True)).to_have_value("retried from the browser")


def test_bulk_cancel_previews_the_exact_count_and_the_audit_log_lists_it(eventlet_only: None, page: Page,
                                                                        stack: Stack) -> None:
    since = datetime.fromtimestamp(time.time() - 1, UTC).isoformat(timespec="seconds")
    ids = [send(stack, "long", seconds=300) for _ in range(3)]
    page.goto(f"{stack.url}/?name=tasks.demo.long&since={since.replace('+', '%2B')}")
    for task_id in ids:
        expect(row(page, task_id)).to_be_visible()
    page.get_by_role("button", name="Cancel all matching…").click()
    dialog = page.get_by_role("dialog", name="Cancel 3 tasks?")
    expect(dialog).to_be_visible()
    later = send(stack, "long", seconds=300)  # shows up live while the question is open
    expect(row(page, later)).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Cancel 3 tasks?")
    assert axe_violations(page) == []  # with the question open
    dialog.get_by_role("button", name="Cancel 3 tasks").click()
    bar = page.get_by_role("group", name="Every task matching the filters")
    expect(bar).to_contain_text("Cancelled 3 of 3 tasks.")
    for task_id in ids:
        expect(row(page, task_id).get_by_role("cell").nth(1)).to_have_text("cancelled")
    assert state(stack, later) != "REVOKED"  # not in what was confirmed
    requests.post(f"{stack.url}/api/tasks/{later}/cancel", timeout=10)

    page.get_by_role("navigation", name="Views").get_by_role("link", name="Audit").click()
    audit = page.get_by_role("table", name="Audit log")
    entry = audit.get_by_role("row").filter(has_text="Bulk cancel").first
    expect(entry).to_contain_text("local")
    expect(entry).to_contain_text("task name tasks.demo.long")
    expect(entry).to_contain_text("3 of 3")
    assert axe_violations(page) == []
