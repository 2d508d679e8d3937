"""Latency benchmark: click to first visible progress, and a worker's progress call to the browser.

Starts the real stack (redis-server, a Celery worker, the web server) and headless Chromium, then
writes bench/results/latency.md and latency.json. Run with `make bench-latency`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import socketio
from playwright.sync_api import sync_playwright

from tests.support import Stack, wait_for

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Wraps the page's Socket.IO client to time each pushed progress update against the moment the
# worker made the progress call (the task object's `updated`), and times the first visible
# progress of each launch against its click.
PAGE_PROBE = """
window.__lat = []; window.__clicks = []; window.__first = {};
let wrapped;
Object.defineProperty(window, "io", { configurable: true, get() { return wrapped; }, set(real) {
  wrapped = function (...args) {
    const socket = real(...args);
    socket.on("tasks", (data) => { const now = Date.now();
      for (const t of data.tasks) {
        if (t.state === "PROGRESS" && t.updated) window.__lat.push(now - Date.parse(t.updated));
      }
    });
    return socket;
  };
  Object.assign(wrapped, real);
}});
document.addEventListener("submit", () => window.__clicks.push(performance.now()), true);
new MutationObserver(() => {
  for (const bar of document.querySelectorAll("[role=progressbar]")) {
    const id = bar.closest("tr").dataset.taskId;
    if (!(id in window.__first) && Number(bar.getAttribute("aria-valuenow")) > 0) {
      window.__first[id] = performance.now();
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"] });
"""


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99),
            "mean": round(statistics.fmean(values), 1), "max": round(ordered[-1], 1)}


def socket_client_latency(url: str, tasks: int, steps: int, delay: float) -> list[float]:
    """Milliseconds from each progress call in the worker to its arrival at a python-socketio client."""
    lags: list[float] = []
    done: set[str] = set()
    client = socketio.Client()

    @client.on("tasks")
    def on_tasks(data: dict[str, Any]) -> None:
        now = time.time()
        for task in data["tasks"]:
            if task["state"] == "PROGRESS" and task.get("updated"):
                lags.append((now - datetime.fromisoformat(task["updated"]).timestamp()) * 1000)
            if task["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
                done.add(task["id"])

    client.connect(url, transports=["websocket"])
    ids = []
    for _ in range(tasks):  # one after another: latency at idle, not under load
        task_id = requests.post(f"{url}/api/tasks", json={"task": "steps", "params": {"steps": steps, "delay": delay}},
                                timeout=10).json()["id"]
        ids.append(task_id)
        wait_for(lambda task_id=task_id: task_id in done, 120, what="task end")
    client.disconnect()
    return lags


def browser_latency(url: str, launches: int) -> tuple[list[float], list[float]]:
    """(click to first visible progress, progress call to browser), both in milliseconds."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.add_init_script(PAGE_PROBE)
        page.goto(url)
        card = page.get_by_role("region", name="Stepped job")
        card.get_by_label("Steps").fill("20")
        card.get_by_label("Seconds per step").fill("0.05")
        for _ in range(launches):
            # Wait through the API, not by polling the page: Playwright's polling runs inside the
            # page and delays its own handlers, which would add to what is measured.
            with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as sent:
                card.get_by_role("button", name="Launch").click()
            task_id = sent.value.json()["id"]
            wait_for(lambda task_id=task_id: requests.get(f"{url}/api/tasks/{task_id}", timeout=10).json()["state"]
                     == "SUCCESS", 60, what="task end")
            time.sleep(0.2)
        clicks = page.evaluate("window.__clicks")
        firsts = sorted(page.evaluate("Object.values(window.__first)"))
        lags = page.evaluate("window.__lat")
        browser.close()
    return [first - click for click, first in zip(clicks, firsts, strict=True)], lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for CI")
    args = parser.parse_args()
    launches, tasks = (3, 2) if args.quick else (20, 10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stack = Stack(logdir=RESULTS / "logs")
    try:
        stack.start_redis()
        stack.start_worker()
        url = stack.start_web()
        click_to_progress, browser_lags = browser_latency(url, launches)
        client_lags = socket_client_latency(url, tasks, steps=20, delay=0.25)
    finally:
        stack.stop()
    report = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "click_to_first_visible_progress_ms": percentiles(click_to_progress),
        "progress_call_to_browser_ms": percentiles(browser_lags),
        "progress_call_to_socketio_client_ms": percentiles(client_lags),
        "settings": {"launches": launches, "stepped_task": "20 steps, 0.05 s apart (browser); "
                     "20 steps, 0.25 s apart (socket client)", "PROGRESS_INTERVAL": 0.1, "PUSH_INTERVAL": 0.1},
    }
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2))
    rows = [f"| {name.replace('_ms', '').replace('_', ' ')} | {v['n']} | {v.get('p50')} | {v.get('p95')} | "
            f"{v.get('p99')} | {v.get('max')} |"
            for name, v in report.items() if name.endswith("_ms")]
    markdown = "\n".join([
        f"# Latency ({report['when']}, {report['machine']})", "",
        "| measure (ms) | samples | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|", *rows, "",
        "Click to first visible progress includes queueing, the worker picking the task up, the first",
        "0.05 s step, the event, the relay tick and rendering. Command: `make bench-latency`.", ""])
    (RESULTS / "latency.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
