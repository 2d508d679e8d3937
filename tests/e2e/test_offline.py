"""A page that goes offline while tasks progress catches up by itself when it comes back."""
from __future__ import annotations

import requests
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard import Task, expect_live, launch
from tests.support import Stack, wait_for


def connection(page: Page):  # noqa: ANN201 - a Playwright locator
    return page.get_by_role("banner").get_by_role("status")


def test_offline_page_resyncs_without_a_reload(page: Page, stack: Stack) -> None:
    expect_live(page)
    page.evaluate("window.__notReloaded = true")
    stepped = launch(page, "Stepped job", {"Steps": 12, "Seconds per step": 0.4})
    failing = launch(page, "Failing job", {"Steps before failing": 6, "Seconds per step": 0.4})
    expect(stepped.state(page)).to_have_text("running")

    page.context.set_offline(True)
    expect(connection(page)).to_have_text("Reconnecting…")
    seen_offline = stepped.seen(page)["values"]
    # While the page is away, both tasks end and another one is launched by a script.
    api = f"{stack.url}/api/tasks"
    later = requests.post(api, json={"task": "steps", "params": {"steps": 2, "delay": 0.1}, "duplicate": True},
                          timeout=10).json()
    for task_id in (stepped.id, failing.id, later["id"]):
        wait_for(lambda task_id=task_id: requests.get(f"{api}/{task_id}", timeout=10).json()["state"]
                 in ("SUCCESS", "FAILURE"), 60, what="the task to end while the page is offline")
    assert stepped.seen(page)["values"] == seen_offline  # nothing reached the page meanwhile

    page.context.set_offline(False)
    expect_live(page)
    expect(stepped.state(page)).to_have_text("succeeded")
    expect(stepped.row(page)).to_contain_text('{"steps":12}')
    expect(failing.state(page)).to_have_text("failed")
    expect(failing.row(page)).to_contain_text("ValueError")
    expect(Task("Stepped job", later["id"]).state(page)).to_have_text("succeeded")
    assert page.evaluate("window.__notReloaded") is True
