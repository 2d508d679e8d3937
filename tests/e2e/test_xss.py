"""Hostile text in task data shows as typed and never runs; the page runs under a strict CSP."""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard import expect_live, launch

# How the page shows text: checked under eventlet; the gevent pass checks the live transport.
pytestmark = pytest.mark.usefixtures("eventlet_only")

PAYLOADS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markup_in_an_error_message_shows_as_text_and_does_not_run(page: Page, payload: str) -> None:
    expect_live(page)
    task = launch(page, "Failing job", {"Steps before failing": 0, "Error message": payload})
    expect(task.state(page)).to_have_text("failed")
    row = task.row(page)
    expect(row.get_by_text(f"ValueError: {payload}", exact=True)).to_be_visible()
    traceback = row.get_by_role("group")
    traceback.get_by_text("Traceback", exact=True).click()
    expect(traceback).to_contain_text(payload)
    assert row.locator("img, script").count() == 0
    page.reload()  # and again from the snapshot
    expect_live(page)
    expect(task.row(page).get_by_text(f"ValueError: {payload}", exact=True)).to_be_visible()
    assert page.evaluate("window.__xss") is None


def test_the_page_is_served_with_a_strict_content_security_policy(page: Page) -> None:
    response = page.request.get(page.url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    # An inline script injected into the page is refused by the browser.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__xss = 3'; document.body.append(s); }""")
    assert page.evaluate("window.__xss") is None
