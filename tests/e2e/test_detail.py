"""The task detail view (/tasks/<id>, static/js/detail.js) in a real browser: arguments, traceback
and its copy button, attempts, children with their states, times; a shared URL opens it directly."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import redis
import requests
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import axe_violations
from tests.support import Stack, wait_for


def post(stack: Stack, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Launch a catalog task through the API (as a script would) and return its task object."""
    response = requests.post(f"{stack.url}/api/tasks", json={"task": task, "params": params, "duplicate": True},
                             timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def ended(stack: Stack, task_id: str) -> dict[str, Any]:
    """The task object once the task has ended (read from the API)."""
    def done() -> dict[str, Any] | None:
        task = requests.get(f"{stack.url}/api/tasks/{task_id}", timeout=10).json()
        return task if task["state"] in ("SUCCESS", "FAILURE", "REVOKED") else None
    return wait_for(done, timeout=60, what=f"task {task_id} to end")  # type: ignore[return-value]


def detail(page: Page, title: str) -> Locator:
    return page.get_by_role("article", name=title, exact=True)


def facts(where: Locator) -> dict[str, str]:
    """The view's term/description pairs as a person reads them."""
    return where.evaluate("""node => Object.fromEntries([...node.querySelectorAll("dt")].map(
        dt => [dt.textContent.trim(), dt.nextElementSibling ? dt.nextElementSibling.textContent.trim() : ""]))""")


def serious_violations(page: Page) -> list[str]:
    return [f"{v['id']}: {v['help']} {v['nodes'][:3]}" for v in axe_violations(page)]


def test_a_failed_task_shows_its_arguments_traceback_and_times(
        eventlet_only: None, open_page: Callable[[], Page], stack: Stack) -> None:
    marker = f"broke-{uuid.uuid4().hex[:8]}"
    task = post(stack, "fail", {"steps": 1, "delay": 0.2, "message": marker})
    ended(stack, task["id"])
    page = open_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    page.goto(f"{stack.url}/tasks/{task['id']}")  # a shared link opens the view directly
    view = detail(page, "Failing job")
    expect(view.get_by_role("heading", name="Failing job", level=2)).to_be_visible()
    expect(view.get_by_text(task["id"], exact=True)).to_be_visible()
    expect(view.locator(".part-summary .badge")).to_have_text("failed")
    expect(view.get_by_role("region", name="Keyword arguments")).to_contain_text(marker)
    traceback = view.get_by_role("region", name="Traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text(f"ValueError: {marker}")
    expect(view.get_by_text(f"ValueError: {marker}", exact=True).first).to_be_visible()

    view.get_by_role("button", name="Copy traceback").click()
    expect(view.get_by_text("Copied.", exact=True)).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "Traceback (most recent call last)" in copied and marker in copied

    shown = facts(view)
    assert shown["Task"] == "tasks.demo.fail" and shown["Id"].startswith(task["id"])
    for when in ("Sent", "Started", "Ended"):
        assert re.search(r"\d{2}:\d{2}:\d{2}", shown[when]), (when, shown[when])
    assert re.fullmatch(r"\d+(\.\d)? s|\d+ min \d{2} s", shown["Waited"]), shown["Waited"]
    assert re.fullmatch(r"\d+(\.\d)? s|\d+ min \d{2} s", shown["Ran"]), shown["Ran"]
    assert shown["Queue"] not in ("", "—"), shown  # the demo tasks are routed to their own queue
    assert serious_violations(page) == []

    # On a phone (390 px) nothing scrolls sideways: the traceback scrolls inside its own box.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(traceback).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert traceback.evaluate("node => node.scrollWidth > node.clientWidth")  # its lines are kept, not wrapped

    # The same URL in another visitor's browser shows the same.
    other = open_page()
    other.goto(f"{stack.url}/tasks/{task['id']}")
    expect(detail(other, "Failing job").get_by_role("region", name="Traceback")).to_contain_text(marker)


def test_attempts_of_a_flaky_task_and_children_of_a_fan_out(eventlet_only: None, page: Page, stack: Stack) -> None:
    flaky = post(stack, "flaky", {"failures": 2, "countdown": 0.5})
    fan = post(stack, "fanout", {"children": 3, "steps": 2, "delay": 0.3})

    page.goto(f"{stack.url}/tasks/{fan['id']}")
    view = detail(page, "Fan-out")
    children = view.get_by_role("region", name=re.compile(r"^Children"))
    expect(children.get_by_role("listitem")).to_have_count(3)
    # Live: the children's states change on the page without a reload.
    expect(children.get_by_text("succeeded", exact=True)).to_have_count(3)
    expect(view.locator(".part-summary .badge")).to_have_text("succeeded")
    children.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/tasks/"))
    parent = page.get_by_role("article").get_by_role("link", name=re.compile(r"Fan-out|" + fan["id"][:8]))
    expect(parent).to_be_visible()

    recorded = ended(stack, flaky["id"])["attempts"]
    assert [(a["retries"], (a["error"] or {}).get("message")) for a in recorded] == [
        (0, "attempt 1 failed"), (1, "attempt 2 failed"), (2, None)], f"the server's attempts: {recorded}"
    page.goto(f"{stack.url}/tasks/{flaky['id']}")
    view = detail(page, "Flaky job")
    attempts = view.get_by_role("table", name=re.compile(r"^Attempts"))
    expect(attempts.locator("tbody tr")).to_have_count(3)
    expect(attempts.locator("tbody tr").nth(0)).to_contain_text("FlakyError: attempt 1 failed")
    expect(attempts.locator("tbody tr").nth(1)).to_contain_text("FlakyError: attempt 2 failed")
    expect(attempts.locator("tbody tr").nth(2)).to_contain_text("no error")


def test_an_unknown_id_says_so(eventlet_only: None, page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/tasks/no-such-task-{uuid.uuid4().hex[:6]}")
    expect(page.get_by_role("heading", name="Task not found")).to_be_visible()
    expect(page.get_by_text(re.compile(r"No task with the id .* is known to this dashboard"))).to_be_visible()


def test_a_long_result_shows_a_preview_and_the_whole_on_demand(eventlet_only: None, page: Page, stack: Stack) -> None:
    """A result larger than the preview (a task only the result backend knows, as after a restart)."""
    task_id = f"big-{uuid.uuid4().hex[:8]}"
    stack.python("from tasks.celery_app import celery_app\n"
                 f"celery_app.backend.store_result({task_id!r}, ['line %d' % n for n in range(2000)], 'SUCCESS')")
    page.goto(f"{stack.url}/tasks/{task_id}")
    result = page.get_by_role("region", name="Result preview")
    expect(result).to_contain_text('"line 0"')
    expect(result).not_to_contain_text('"line 1999"')
    page.get_by_role("button", name="Show the whole result").click()
    whole = page.get_by_role("region", name="Whole result")
    expect(whole).to_contain_text('"line 1999"')
    expect(whole).to_be_focused()
    expect(page.get_by_text(re.compile(r"^The whole result \([\d,]+ bytes\)\.$"))).to_be_visible()


def test_an_errors_secret_is_masked_its_message_previewed_and_bidi_controls_shown_as_escapes(
        eventlet_only: None, page: Page, stack: Stack) -> None:
    """An error that repeats the task's arguments masks what they mask, on the page and in Redis; a
    5,000-character message shows a few lines with the whole on demand (by keyboard); a right-to-left
    override in an error reads as `\\u202e` instead of reversing the text after it."""
    from tests.integration.test_find import dashboard_values

    leak = f"SUPERSECRET-{uuid.uuid4().hex}"
    secret_id = stack.python(
        "from tasks.demo import fail\n"
        f"print(fail.delay(steps=1, delay=0, message={{'api_token': {leak!r}, 'x': 'y' * 5000}}).id)").stdout.strip()
    spoof = post(stack, "fail", {"steps": 0, "delay": 0, "message": "ab\u202e<b>bold</b> cd"})
    ended(stack, secret_id)
    ended(stack, spoof["id"])

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack.url}/tasks/{secret_id}")
    view = detail(page, "Failing job")
    message = view.locator(".error-message")
    expect(message).to_contain_text("{'api_token': ********, 'x': 'yyy")
    expect(view.get_by_role("region", name="Traceback")).to_contain_text("ValueError: {'api_token': ********")
    expect(view.get_by_role("table", name=re.compile(r"^Attempts"))).to_contain_text("{'api_token': ********")
    assert leak not in page.content()
    assert leak.encode() not in dashboard_values(redis.Redis(port=stack.redis_port))
    # A preview of a few lines: the phone page is not 5,000 characters of error long.
    shown = message.inner_text()
    assert len(shown) < 500 and shown.endswith("…"), len(shown)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height
    more = view.get_by_role("button", name=re.compile(r"^Show the whole message \(5,\d{3} characters\)$"))
    more.focus()
    page.keyboard.press("Enter")
    whole = view.get_by_role("region", name="Whole error message")
    expect(whole).to_contain_text("y" * 5000)
    expect(view.get_by_role("button", name="Show less of the message")).to_have_attribute("aria-expanded", "true")
    assert page.evaluate("document.documentElement.scrollHeight") < height + 600  # the whole scrolls in its box
    assert serious_violations(page) == []

    page.goto(f"{stack.url}/tasks/{spoof['id']}")
    view = detail(page, "Failing job")
    escaped = "ab\\u202e<b>bold</b> cd"
    expect(view.locator(".error-line")).to_have_text(f"ValueError: {escaped}")
    expect(view.get_by_role("region", name="Traceback")).to_contain_text(f"ValueError: {escaped}")
    expect(view.get_by_role("table", name=re.compile(r"^Attempts"))).to_contain_text(f"ValueError: {escaped}")
    assert "\u202e" not in page.evaluate("document.body.innerText")
    page.goto(stack.url)
    row = page.locator(f'tr[data-task-id="{spoof["id"]}"]')
    expect(row).to_contain_text(f"ValueError: {escaped}")
    assert "\u202e" not in row.inner_text()
