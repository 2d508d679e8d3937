"""Writes the documentation's screenshots (docs/*.png) from the real stack and a few demo tasks.

Run with `make screenshots` (`python -m scripts.screenshots [--out DIR]`). Starts a private
redis-server, a Celery worker and the web server (tests.support.Stack), launches demo tasks through
the REST API as a person would from the page (a running stepped task, a failed one, a fan-out with
children, a flaky task that retries, a few that succeed, one cancelled), then photographs the views
in headless Chromium (Debian's /usr/bin/chromium):

- dashboard.png  the task list, desktop (1400 px wide)
- detail.png     the failed task's detail view with its traceback
- workers.png    workers and queues
- phone.png      the list and the failed task's detail at 390x844, side by side
- dark.png       the task list under `prefers-color-scheme: dark`

Tests never write into docs/ (they keep their screenshots in tests/artifacts/); only this does.
"""
from __future__ import annotations

import argparse
import base64
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import CHROMIUM, CHROMIUM_ARGS, Stack, wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
# A screenshot taller than this is cut: the docs show the top of a page, not all of it.
MAX_HEIGHT = 1800
TIMEOUT_MS = 60_000
# A queue with messages and no consumer, for the workers view's warning.
UNCONSUMED = "reports"


def launch(url: str, task: str, **params: Any) -> str:
    """POST /api/tasks as the page does (loopback: a local admin); the new task's id."""
    answer = requests.post(f"{url}/api/tasks", json={"task": task, "params": params, "duplicate": True}, timeout=10)
    answer.raise_for_status()
    return answer.json()["id"]


def state(url: str, task_id: str) -> str:
    return requests.get(f"{url}/api/tasks/{task_id}", timeout=10).json()["state"]


def demo_tasks(stack: Stack) -> dict[str, str]:
    """Launch the demo set and wait until each has reached the state the pictures show; their ids."""
    url = stack.url
    ids = {
        "primes": launch(url, "primes", limit=200_000),
        "steps_done": launch(url, "steps", steps=4, delay=0.1),
        "failed": launch(url, "fail", steps=2, delay=0.2, message="the report could not be written"),
        "flaky": launch(url, "flaky", failures=2, countdown=1),
        "fanout": launch(url, "fanout", children=3, steps=4, delay=0.2),
        "cancelled": launch(url, "long", seconds=120),
    }
    wait_for(lambda: all(state(url, ids[k]) == "SUCCESS" for k in ("primes", "steps_done", "fanout", "flaky")),
             90, what="the demo tasks to succeed")
    wait_for(lambda: state(url, ids["failed"]) == "FAILURE", 60, what="the failing task to fail")
    wait_for(lambda: state(url, ids["cancelled"]) in ("STARTED", "PROGRESS"), 60, what="the long task to start")
    requests.post(f"{url}/api/tasks/{ids['cancelled']}/cancel", json={}, timeout=10).raise_for_status()
    wait_for(lambda: state(url, ids["cancelled"]) == "REVOKED", 60, what="the cancel")
    # Still running while the pictures are taken: one with steps, one long with slow progress.
    ids["running"] = launch(url, "steps", steps=200, delay=1)
    ids["long"] = launch(url, "long", seconds=300)
    wait_for(lambda: all(state(url, ids[k]) == "PROGRESS" for k in ("running", "long")), 60,
             what="the running tasks to report progress")
    # Three messages in a queue no worker consumes: the workers view's banner and the oldest's age.
    stack.python("from tasks.celery_app import celery_app\n"
                 "for n in range(3):\n"
                 f"    celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 1}}, queue={UNCONSUMED!r})")
    time.sleep(6)  # a few progress reports: a bar part-way, an ETA from the task's own rate
    return ids


def shoot(page: Page, path: Path, top: str | None = None, bottom: str | None = None,
          height: int = MAX_HEIGHT) -> None:
    """A full-page screenshot cut to at most `height` pixels: from the top of the element matching
    the CSS selector `top` (else the page's top) to the bottom of the one matching `bottom`."""
    def edge(selector: str, side: str) -> float:
        return page.locator(selector).first.evaluate(f"e => e.getBoundingClientRect().{side} + window.scrollY")

    y = max(0, round(edge(top, "top")) - 12) if top else 0
    end = round(edge(bottom, "bottom")) + 12 if bottom else page.evaluate("document.documentElement.scrollHeight")
    width = page.viewport_size["width"]
    page.screenshot(path=str(path), full_page=True, caret="hide", animations="disabled",
                    clip={"x": 0, "y": y, "width": width, "height": max(1, min(end - y, height))})
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def open_view(browser: Browser, url: str, viewport: dict[str, int], scheme: str = "light") -> Page:
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#connection")).to_have_text(re.compile(r"live", re.I))
    return page


def task_list(browser: Browser, base: str, ids: dict[str, str], viewport: dict[str, int], scheme: str) -> Page:
    page = open_view(browser, base, viewport, scheme)
    table = page.get_by_role("table", name="Tasks")
    expect(table.locator(f'[data-task-id="{ids["running"]}"] [role=progressbar]')).to_be_visible()
    expect(table.locator(f'[data-task-id="{ids["failed"]}"]').first).to_contain_text("failed")
    return page


def detail(browser: Browser, base: str, task_id: str, viewport: dict[str, int]) -> Page:
    page = open_view(browser, f"{base}/tasks/{task_id}", viewport)
    expect(page.get_by_role("region", name=re.compile("traceback", re.I)).first).to_contain_text("ValueError")
    return page


def side_by_side(browser: Browser, images: list[Path], path: Path, gap: int = 24) -> None:
    """One picture of several screenshots next to each other, on a neutral background."""
    sizes = []
    for image in images:
        data = image.read_bytes()
        sizes.append((int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")))  # PNG IHDR
    width = sum(w for w, _ in sizes) + gap * (len(images) + 1)
    height = max(h for _, h in sizes) + 2 * gap
    page = browser.new_page(viewport={"width": width, "height": height})
    sources = [f"data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}" for image in images]
    page.set_content(
        f'<body style="margin:0;padding:{gap}px;background:#d9dde3;display:flex;gap:{gap}px;'
        'align-items:flex-start">'
        + "".join(f'<img src="{src}" alt="" style="display:block;box-shadow:0 2px 8px #0004">' for src in sources)
        + "</body>")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    page.screenshot(path=str(path))
    page.close()
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the PNGs (default: docs/)")
    out: Path = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(logdir=ROOT / "tests" / "artifacts" / "logs" / f"screenshots-{time.strftime('%H%M%S')}")
    try:
        stack.start_redis()
        stack.start_worker()
        base = stack.start_web()
        ids = demo_tasks(stack)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                rows = "#tasks tbody tr:nth-child(12), #tasks tbody tr:last-child"
                shoot(task_list(browser, base, ids, DESKTOP, "light"), out / "dashboard.png", bottom=rows,
                      height=2400)
                shoot(task_list(browser, base, ids, DESKTOP, "dark"), out / "dark.png", top=".task-list",
                      bottom=rows, height=1400)
                shoot(detail(browser, base, ids["failed"], DESKTOP), out / "detail.png")
                workers = open_view(browser, f"{base}/workers", DESKTOP)
                expect(workers.get_by_role("table", name="Workers")).to_contain_text("online")
                expect(workers.get_by_role("alert").filter(has_text=UNCONSUMED)).to_be_visible()
                shoot(workers, out / "workers.png", bottom="main")
                with tempfile.TemporaryDirectory() as scratch:
                    phone_list, phone_detail = Path(scratch) / "list.png", Path(scratch) / "detail.png"
                    shoot(task_list(browser, base, ids, PHONE, "light"), phone_list, top=".task-list",
                          height=PHONE["height"] * 2)
                    shoot(detail(browser, base, ids["failed"], PHONE), phone_detail, height=PHONE["height"] * 2)
                    side_by_side(browser, [phone_list, phone_detail], out / "phone.png")
            finally:
                browser.close()
        for key in ("running", "long"):
            requests.post(f"{base}/api/tasks/{ids[key]}/cancel", json={}, timeout=10)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
