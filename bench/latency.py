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

import redis
import requests
import socketio
from playwright.sync_api import sync_playwright

from bench import render
from bench.common import tick_s
from devstack import CHROMIUM, CHROMIUM_ARGS, Stack, wait_for

RESULTS = Path(__file__).resolve().parent / "results"

# Wraps the page's Socket.IO client to time each pushed progress update (a whole task object or a
# change to one) against the moment the worker made the progress call (its `updated`), and times
# the first visible progress of each launch against its click.
PAGE_PROBE = """
window.__lat = [];
let wrapped;
Object.defineProperty(window, "io", { configurable: true, get() { return wrapped; }, set(real) {
  wrapped = function (...args) {
    const socket = real(...args);
    socket.on("tasks", (data) => { const now = Date.now();
      for (const t of [...(data.tasks || []), ...(data.changes || [])]) {
        if (t.state === "PROGRESS" && t.updated) window.__lat.push(now - Date.parse(t.updated));
      }
    });
    return socket;
  };
  Object.assign(wrapped, real);
}});
""" + render.ROWS


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


def browser_latency(url: str, launches: int) -> tuple[list[float], list[float], list[float]]:
    """(click to the task's row, click to first visible progress, progress call to browser), in ms."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.add_init_script(PAGE_PROBE)
        page.goto(url)
        card = page.get_by_role("region", name="Stepped job")
        card.get_by_label("Steps").fill("20")
        card.get_by_label("Seconds per step").fill("0.05")
        ids = []
        for _ in range(launches):
            # Wait through the API, not by polling the page: Playwright's polling runs inside the
            # page and delays its own handlers, which would add to what is measured.
            with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as sent:
                card.get_by_role("button", name="Launch").click()
            task_id = sent.value.json()["id"]
            ids.append(task_id)
            wait_for(lambda task_id=task_id: requests.get(f"{url}/api/tasks/{task_id}", timeout=10).json()["state"]
                     == "SUCCESS", 60, what="task end")
            time.sleep(0.2)
        clicks = page.evaluate("window.__clicks")
        rows, firsts = page.evaluate("window.__rows"), page.evaluate("window.__first")
        lags = page.evaluate("window.__lat")
        browser.close()
    to_row = [rows[i] - click for click, i in zip(clicks, ids, strict=True) if i in rows]
    to_progress = [firsts[i] - click for click, i in zip(clicks, ids, strict=True) if i in firsts]
    return to_row, to_progress, lags


def render_costs(stack: Stack, quick: bool) -> dict[str, Any]:
    """One progress update's main-thread cost at 1,000 and 10,000 tasks in history, and frame
    times during a burst of tasks (bench/render.py)."""
    client = redis.Redis.from_url(stack.redis_url)
    updates, burst_size = (10, 200) if quick else (40, 1500)
    out: dict[str, Any] = {"main_thread_per_update": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(render.PROBE)
        for history in (1000, 10_000):
            render.clear_history(client)
            render.fill_history(client, history)
            probe, work, whole = render.update_cost(page, stack.url, updates)
            out[f"progress_update_render_cost_at_{history}_tasks_ms"] = percentiles(probe)
            out[f"progress_update_script_style_layout_at_{history}_tasks_ms"] = percentiles(work)
            out["main_thread_per_update"][history] = whole
        render.clear_history(client)
        seen = render.burst(page, stack, burst_size)
        browser.close()
    frames = seen["frames"]
    out[f"frame_time_during_{burst_size}_task_burst_ms"] = percentiles(frames)
    out["burst"] = {"tasks": burst_size, "seconds": round(seen["seconds"], 1),
                    "long_tasks": len(seen["long"]), "long_task_ms_total": round(sum(seen["long"]), 1),
                    "frames_over_50_ms": sum(1 for f in frames if f > 50), "main_thread_s": seen["main_thread_s"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for CI")
    args = parser.parse_args()
    launches, tasks = (3, 2) if args.quick else (20, 10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Every tab starts from a snapshot of up to 10,000 tasks: the page holds what a tab that has been
    # open through 10,000 tasks would have seen (the old page kept every row it was sent).
    stack = Stack(logdir=RESULTS / "logs", env={"SNAPSHOT_LIMIT": "10000"})
    try:
        stack.start_redis()
        stack.start_worker()
        url = stack.start_web()
        click_to_row, click_to_progress, browser_lags = browser_latency(url, launches)
        client_lags = socket_client_latency(url, tasks, steps=20, delay=0.25)
        costs = render_costs(stack, args.quick)
    finally:
        stack.stop()
    report = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "click_to_row_ms": percentiles(click_to_row),
        "click_to_first_visible_progress_ms": percentiles(click_to_progress),
        "progress_call_to_browser_ms": percentiles(browser_lags),
        "progress_call_to_socketio_client_ms": percentiles(client_lags),
        **costs,
        "settings": {"launches": launches, "stepped_task": "20 steps, 0.05 s apart (browser); "
                     "20 steps, 0.25 s apart (socket client)", "PROGRESS_INTERVAL": 0.1,
                     "PUSH_INTERVAL": tick_s()},
    }
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2))
    rows = [f"| {name.replace('_ms', '').replace('_', ' ')} | {v['n']} | {v.get('p50')} | {v.get('p95')} | "
            f"{v.get('p99')} | {v.get('max')} |"
            for name, v in report.items() if name.endswith("_ms")]
    markdown = "\n".join([
        f"# Latency ({report['when']}, {report['machine']})", "",
        "| measure (ms) | samples | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|", *rows, "",
        "Click to first visible progress includes queueing, the worker picking the task up, the first",
        "0.05 s step, the event, the relay tick and rendering. A progress update's render cost is the",
        "page's main-thread work for one pushed update of a running task, from its WebSocket message",
        "event through the page's handlers and the animation frame that shows it (callbacks, style,",
        "layout, paint, commit), with that many ended tasks in the index; \"script style layout\" is the",
        "same up to the end of that frame's layout (paint and commit left out).",
        "",
        "The page's whole main thread per progress update, by Chromium's own accounting (TaskDuration",
        "over the updates less the same page's idle rate; script, layout and style are parts of it):",
        "",
        "| tasks in history | all (ms) | script | layout | style | updates | busy ms/s updating / idle |",
        "|---|---|---|---|---|---|---|",
        *[f"| {k} | {v['task_ms']} | {v['script_ms']} | {v['layout_ms']} | {v['style_ms']} | {v['updates']} | "
          f"{v['busy_ms_per_s_during_updates']} / {v['busy_ms_per_s_idle']} |"
          for k, v in report["main_thread_per_update"].items()],
        "",
        f"Burst: {report['burst']['tasks']} tasks sent at once from another process; it took "
        f"{report['burst']['seconds']} s, with {report['burst']['long_tasks']} long tasks "
        f"({report['burst']['long_task_ms_total']} ms) and {report['burst']['frames_over_50_ms']} frames over 50 ms; "
        "the main thread's seconds in it: "
        + ", ".join(f"{k} {v}" for k, v in report["burst"]["main_thread_s"].items()) + ".",
        "",
        f"Command: `make bench-latency`{' (--quick)' if args.quick else ''}; the machine's other load is not "
        "controlled: numbers from a shared machine are preliminary.", ""])
    (RESULTS / "latency.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
