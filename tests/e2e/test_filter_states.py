"""The State filter (static/js/filters.js) as a person meets it in Chromium: a state nobody uses is
said on the State field with a hint, never an empty list under a made-up option; several states
read by their labels. Page features: eventlet only."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.support import Stack

pytestmark = pytest.mark.usefixtures("eventlet_only")


def test_a_state_nobody_uses_is_said_on_the_state_field_with_a_hint(page: Page, stack: Stack) -> None:
    answer = requests.post(f"{stack.url}/api/tasks", json={"task": "steps", "params": {"steps": 1, "delay": 0.05},
                                                            "duplicate": True}, timeout=10)
    assert answer.status_code == 202, answer.text
    expect(page.get_by_role("banner").get_by_role("status")).to_have_text("Live")
    tasks = page.get_by_role("table", name="Tasks").locator("tbody tr")
    expect(tasks.first).to_be_visible()
    page.goto(f"{stack.url}/?state=success")
    state = page.get_by_label("State", exact=True)
    expect(state).to_have_attribute("aria-invalid", "true")
    expect(state).to_have_accessible_description(re.compile(r"did you mean SUCCESS\?"))
    expect(page.get_by_text(re.compile(r"No tasks are shown: State .success. is not a state"))).to_be_visible()
    expect(tasks).to_have_count(0)
    # The select says what the address asks for, by the codes given (no label pretends to know it).
    expect(state.locator("option:checked")).to_have_text("success")

    page.goto(f"{stack.url}/?state=STARTED,PROGRESS,PENDING,RECEIVED,LOST")
    expect(state).not_to_have_attribute("aria-invalid", "true")
    expect(state.locator("option:checked")).to_have_text("started, running, queued, received, lost (worker gone)")
    expect(state.locator("option", has_text="success")).to_have_count(0)
    # The unfinished states in another order are the "unfinished" choice itself.
    page.goto(f"{stack.url}/?state=RETRY,PROGRESS,STARTED,RECEIVED,PENDING")
    expect(state.locator("option:checked")).to_have_text("unfinished")
    expect(state.locator("option")).to_have_count(14)  # the choices only: nothing added
