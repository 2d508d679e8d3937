"""Signing out in one tab signs out every tab of that browser at once (web/auth.py logout, web/sockets.py
watch_access, static/app.js connect_error), under each async mode."""
from __future__ import annotations

import re
import subprocess

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT
from tests.support import BIN, ROOT, Stack

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def signed_in_site(stack: Stack) -> str:
    """A second web process of the same stack with sign-in on and no SECRET_KEY, and an operator."""
    subprocess.run([str(BIN / "flask"), "--app", "web", "users", "add", "olivia", "--role", "operator",
                    "--password-stdin"], cwd=ROOT, env=stack.env, input=PASSWORD + "\n", check=True,
                   capture_output=True, text=True, timeout=60)
    return stack.start_web(env={"AUTH_REQUIRED": "1", "SECRET_KEY": "", "LOGIN_LIMIT": "1000/minute",
                                "LOGIN_LIMIT_PER_ADDRESS": "1000/minute"})


def test_signing_out_in_one_tab_ends_the_other_tabs_live_view(browser: Browser, signed_in_site: str) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        first = context.new_page()
        first.goto(f"{signed_in_site}/login")
        first.fill("#username", "olivia")
        first.fill("#password", PASSWORD)
        first.click("button[type=submit]")
        expect(first.locator("#connection")).to_have_text("Live")
        second = context.new_page()  # another tab of the same browser: the same session cookie
        second.goto(signed_in_site)
        expect(second.locator("#connection")).to_have_text("Live")

        first.click("form.account button")
        expect(first).to_have_url(re.compile(r"/login"))
        # The other tab stops being live and lands on the sign-in page by itself, within seconds.
        expect(second).to_have_url(re.compile(r"/login"), timeout=10_000)
        second.goto(signed_in_site)
        expect(second).to_have_url(re.compile(r"/login"))
    finally:
        context.close()
