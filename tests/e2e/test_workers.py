"""The workers and charts views in Chromium: the worker online, the banner for a queue nobody
consumes, and the charts of a task type after its tasks end."""
from __future__ import annotations

import re
import uuid

import redis
import requests
from playwright.sync_api import Page, expect

from tests.e2e.conftest import axe_violations
from tests.support import Stack, wait_for


def test_the_workers_view_lists_the_worker_and_warns_of_a_queue_nobody_consumes(
        eventlet_only: None, stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/workers")
    workers = page.get_by_role("table", name="Workers")
    row = workers.get_by_role("row").filter(has_text=re.compile(r"worker@")).first
    expect(row).to_contain_text("online")
    expect(row).to_contain_text("prefork")
    expect(page.get_by_role("table", name="Queues")).to_contain_text("dashboard.demo")
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    stack.python("from tasks.celery_app import celery_app\n"
                 f"celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 1}}, queue={queue!r})")
    try:
        # Live: the page was open before the message was sent, and is not reloaded.
        expect(page.get_by_role("alert").filter(has_text=queue)).to_contain_text("no worker consumes it")
        expect(page.get_by_role("table", name="Queues").get_by_role("row").filter(has_text=queue)).to_contain_text("1")
        assert not axe_violations(page), "serious or critical accessibility findings with the banner shown"
    finally:
        redis.Redis.from_url(stack.redis_url).delete(queue)
    expect(page.get_by_role("alert").filter(has_text=queue)).to_have_count(0)


def test_the_charts_view_draws_a_task_type_after_its_tasks_end(eventlet_only: None, stack: Stack, page: Page) -> None:
    ids = []
    for i in range(2):
        params = {"steps": 1, "delay": 0.1 + i / 50}  # not identical: each is a launch, not an attach
        response = requests.post(f"{stack.url}/api/tasks", json={"task": "steps", "params": params}, timeout=10)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    wait_for(lambda: all(requests.get(f"{stack.url}/api/tasks/{i}", timeout=10).json()["state"] == "SUCCESS"
                         for i in ids), 60, what="the tasks to end")
    page.goto(f"{stack.url}/charts")
    table = page.get_by_role("table", name="Last hour by task type")
    expect(table.get_by_role("row").filter(has_text="tasks.demo.steps")).to_be_visible()
    page.get_by_label("Task type", exact=True).select_option(value="tasks.demo.steps")
    chart = page.get_by_role("img", name=re.compile(r"tasks\.demo\.steps, last 60 minutes: \d+ ended"))
    expect(chart).to_be_visible()
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.get_by_role("img", name=re.compile(r"run time p50 \d"))).to_be_visible()
    assert not axe_violations(page), "serious or critical accessibility findings on the charts"
    # Live: one more task ends while the page stays open, and its count goes up without a reload.
    row = table.get_by_role("row").filter(has_text="tasks.demo.steps")
    count = int(row.get_by_role("cell").first.inner_text())
    response = requests.post(f"{stack.url}/api/tasks", json={"task": "steps", "params": {"steps": 1, "delay": 0.15}},
                             timeout=10)
    assert response.status_code == 202, response.text
    expect(row.get_by_role("cell").first).to_have_text(str(count + 1))
