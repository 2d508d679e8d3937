"""This dashboard vs Flower, point by point, on the same Redis, in the same headless Chromium.

Run with `make bench-flower` (`python -m bench.versus_flower [--tasks 1500] [--runs 5]`). Starts one
stack (redis-server, a Celery worker, the web server: tests.support.Stack) and Flower on the same
Redis (`python -m tasks.flower`, as the Procfile runs it, on loopback), sends the same tasks to both
(through Celery, as any other Python process would: most succeed, one in ten fails, two keep running
with progress), then measures each point on each side the same way, under the same load, one
function per measurement. Writes bench/results/versus_flower.md and .json, and a copy of the report
to docs/versus-flower.md (bench/results/ is not committed).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Browser, Page, sync_playwright

from devstack import BIN, CHROMIUM, CHROMIUM_ARGS, Process, Stack, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS_COPY = ROOT / "docs" / "versus-flower.md"
AXE = ROOT / "static" / "vendor" / "axe.min.js"
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000
SIDES = ("ours", "flower")
# A queue with messages and no worker consuming it (filled just before the endpoints are asked).
UNCONSUMED = "nobody-consumes"


# ---- the two sides: where each page is and how to read it ---------------------------------

class Side:
    """One dashboard's URLs and the CSS selectors that read its pages (rows, a row by id)."""

    def __init__(self, name: str, base: str) -> None:
        self.name, self.base = name, base

    def list_url(self) -> str:
        return f"{self.base}/" if self.name == "ours" else f"{self.base}/tasks"

    def detail_url(self, task_id: str) -> str:
        return f"{self.base}/tasks/{task_id}" if self.name == "ours" else f"{self.base}/task/{task_id}"

    def workers_url(self) -> str:
        return f"{self.base}/workers"

    def rows(self) -> str:
        return "#tasks tbody tr[data-task-id]" if self.name == "ours" else "#tasks-table tbody tr[id]"

    def row(self, task_id: str) -> str:
        if self.name == "ours":
            return f'#tasks tbody tr[data-task-id="{task_id}"]'
        return f'#tasks-table tr[id="{task_id}"]'

    def search_box(self, page: Page) -> Any:
        if self.name == "ours":
            return page.get_by_label("Search", exact=True)
        return page.locator("#tasks-table_filter input[type=search]")


# ---- the stack, Flower and the load ----------------------------------------------------------

def start_flower(stack: Stack, port: int | None = None) -> tuple[Process, str]:
    """Flower as the Procfile starts it (`python -m tasks.flower`: under /flower, one thread), on
    loopback, its API readable without a password there (as its docs allow on loopback)."""
    port = port or free_port()
    env = dict(stack.env, FLOWER_PORT=str(port), FLOWER_ADDRESS="127.0.0.1", FLOWER_UNAUTHENTICATED_API="true")
    proc = Process("flower", [str(BIN / "python"), "-m", "tasks.flower"], env, stack.logdir)
    stack.processes.append(proc)
    base = f"http://127.0.0.1:{port}/flower"
    wait_for(lambda: requests.get(f"{base}/healthcheck", timeout=2).status_code == 200, 60, what="flower")
    wait_for(lambda: "worker@" in requests.get(f"{base}/api/workers", timeout=5).text, 60,
             what="flower sees the worker")
    return proc, base


SEND = """
import json, sys, uuid
from tasks.celery_app import celery_app
n, marker = int(sys.argv[1]), sys.argv[2]
sent = {"ok": [], "failed": [], "running": [], "tokens": {}}
for i in range(n):
    if i % 10 == 9:
        token = f"order-{uuid.uuid4().hex[:8]}"
        r = celery_app.send_task("tasks.demo.fail", kwargs={"steps": 0, "delay": 0,
                                 "message": f"{token} was rejected"})
        sent["failed"].append(r.id); sent["tokens"][r.id] = token
    else:
        r = celery_app.send_task("tasks.demo.steps", kwargs={"steps": 1, "delay": 0})
        sent["ok"].append(r.id)
for i in range(2):
    sent["running"].append(celery_app.send_task("tasks.demo.steps", kwargs={"steps": 900, "delay": 1}).id)
print(marker + json.dumps(sent))
"""


def send_load(stack: Stack, n: int) -> dict[str, Any]:
    """Send n tasks (one in ten fails with a unique token in its message) and two long ones with progress."""
    marker = "SENT:"
    out = subprocess.run([str(BIN / "python"), "-c", SEND, str(n), marker], cwd=ROOT, env=stack.env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.split(marker, 1)[1])


def flower_count(base: str, kinds: tuple[str, ...]) -> int:
    """Task events of the given kinds Flower has processed (its Prometheus counter)."""
    total = 0
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("flower_events_total{") and any(f'type="{kind}"' in line for kind in kinds):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def ours_count(base: str, states: str) -> int:
    return requests.get(f"{base}/api/tasks", params={"state": states, "limit": 1}, timeout=30).json()["total"]


def wait_settled(ours: str, flower: str, n: int) -> dict[str, float]:
    """Wait until both sides know every task ended; seconds each took from now."""
    t0, took = time.monotonic(), {}
    while len(took) < 2 and time.monotonic() - t0 < 600:
        if "ours" not in took and ours_count(ours, "SUCCESS,FAILURE") >= n:
            took["ours"] = round(time.monotonic() - t0, 1)
        if "flower" not in took and flower_count(flower, ("task-succeeded", "task-failed")) >= n:
            took["flower"] = round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    return took


# ---- measurements: one function each, both sides the same way ----------------------------

def new_page(browser: Browser, viewport: dict[str, int] = DESKTOP, scheme: str = "light") -> Page:
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def close(page: Page) -> None:
    page.context.close()


def time_to_usable_list(browser: Browser, side: Side, runs: int) -> dict[str, Any]:
    """(a) Seconds from navigation to the task list showing its first page of rows, in a fresh browser
    context each run (nothing cached); with the rows shown, the total the page says it has, the bytes
    the page fetched and its DOM size."""
    times, facts = [], {}
    for _ in range(runs):
        page = new_page(browser)
        t0 = time.perf_counter()
        page.goto(side.list_url(), wait_until="commit")
        page.wait_for_selector(side.rows(), state="attached")
        # "Usable": rows stop arriving for a moment (a list that renders in stages is not done at its first row).
        page.wait_for_function("""([sel]) => {
            const n = document.querySelectorAll(sel).length;
            const was = window.__rows; window.__rows = n;
            return n > 0 && n === was;
        }""", arg=[side.rows()], polling=100)
        times.append(time.perf_counter() - t0 - 0.1)  # minus the one polling interval that confirmed it
        facts = page.evaluate("""([sel]) => ({
            rows_shown: document.querySelectorAll(sel).length,
            dom_nodes: document.getElementsByTagName("*").length,
            bytes_fetched: performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
                .reduce((sum, e) => sum + (e.transferSize || e.encodedBodySize || 0), 0),
            js_heap_mb: performance.memory ? Math.round(performance.memory.usedJSHeapSize / 1e5) / 10 : null,
        })""", [side.rows()])
        info = page.locator("#tasks-table_info, .pager").first
        facts["total_text"] = info.inner_text().strip() if info.count() else ""
        close(page)
    return {"seconds": summary(times), **facts}


def time_to_find(browser: Browser, side: Side, text: str, task_id: str) -> dict[str, Any]:
    """(b) Seconds from typing `text` into the page's own search box (and Enter) to the list showing
    the one task it names and nothing else; "not found" when it does not within 20 s."""
    page = new_page(browser)
    page.goto(side.list_url())
    page.wait_for_selector(side.rows(), state="attached")
    box = side.search_box(page)
    t0 = time.perf_counter()
    box.fill(text)
    box.press("Enter")
    try:
        page.wait_for_function("""([rows, row]) => document.querySelector(row) !== null
                                     && document.querySelectorAll(rows).length === 1""",
                               arg=[side.rows(), side.row(task_id)], timeout=20_000, polling="raf")
        found: dict[str, Any] = {"found": True, "seconds": round(time.perf_counter() - t0, 3)}
    except Exception:  # noqa: BLE001 - not finding it is the answer
        found = {"found": False, "rows_shown": page.locator(side.rows()).count()}
    close(page)
    return found


def finds(browser: Browser, side: Side, searches: list[tuple[str, str]]) -> dict[str, Any]:
    """(b) time_to_find for each (text, task id): how many were found, and the seconds (median, min, max)."""
    answers = [time_to_find(browser, side, text, task_id) for text, task_id in searches]
    times = [a["seconds"] for a in answers if a["found"]]
    return {"found": len(times) == len(answers), "found_count": len(times), "tries": len(answers),
            "seconds": summary(times) if times else None,
            "rows_shown": max((a.get("rows_shown", 1) for a in answers), default=0)}


# Records, per task id, when its row appeared, each progress value it showed and when it showed a
# final state: Date.now() (the machine's clock, the one Celery's timestamps use).
WATCH = """([rowSel, ids]) => {
  window.__watch = {};
  const check = () => {
    const now = Date.now();
    for (const id of ids) {
      const row = document.querySelector(rowSel.replace("ID", id));
      if (!row) continue;
      const w = (window.__watch[id] ||= { appeared: now, values: [], ended: null });
      const bar = row.querySelector("[role=progressbar]");
      const v = bar && bar.getAttribute("aria-valuenow");
      if (v !== null && v !== undefined && (w.values.at(-1) || [])[0] !== v) w.values.push([v, now]);
      if (!w.ended && /succeeded|SUCCESS/.test(row.textContent)) w.ended = now;
    }
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, characterData: true,
                                                  attributes: true });
  setInterval(check, 200);
}"""


def live_updates(browser: Browser, side: Side, stack: Stack, ours_api: str, count: int = 3) -> dict[str, Any]:
    """(c) With the task list open (and not reloaded), send `count` 3-step tasks (1 s a step): seconds
    from their events (sent, started, succeeded: the task's own times) to the row, its moving bar and
    its ending showing (medians); "not shown" when they never do within 20 s after they ended."""
    page = new_page(browser)
    page.goto(side.list_url())
    page.wait_for_selector(side.rows(), state="attached")
    ids = [str(uuid.uuid4()) for _ in range(count)]
    page.evaluate(WATCH, [side.row("ID"), ids])
    stack.python("from tasks.celery_app import celery_app\n"
                 f"for task_id in {ids!r}:\n"
                 "    celery_app.send_task('tasks.demo.steps', kwargs={'steps': 3, 'delay': 1}, task_id=task_id)")
    tasks = [wait_for(lambda i=i: (t := requests.get(f"{ours_api}/api/tasks/{i}", timeout=10).json())
                      .get("state") == "SUCCESS" and t, 60, what="the watched task to end") for i in ids]
    time.sleep(20)
    seen = page.evaluate("() => window.__watch")
    close(page)

    def epoch_ms(iso: str | None) -> float | None:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000 if iso else None

    appeared, progressed, ended, values = [], [], [], []
    for task in tasks:
        watched = seen.get(task["id"])
        if not watched:
            continue
        appeared.append((watched["appeared"] - epoch_ms(task["created"])) / 1000)
        moving = [at for value, at in watched["values"] if float(value) > 0]
        values.append(len({value for value, _ in watched["values"]}))
        if moving and task["started"]:
            progressed.append((moving[0] - epoch_ms(task["started"])) / 1000)
        if watched["ended"] and task["finished"]:
            ended.append((watched["ended"] - epoch_ms(task["finished"])) / 1000)

    def median(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 2) if xs else None

    return {"tasks": count, "row_appeared_s": median(appeared), "first_progress_after_start_s": median(progressed),
            "ending_shown_s": median(ended), "progress_values_shown": max(values, default=0),
            "shown": {"rows": len(appeared), "progress": len(progressed), "endings": len(ended)}}


def detail_goes_live(browser: Browser, side: Side, stack: Stack, ours_api: str) -> dict[str, Any]:
    """(c) The detail page of a running task, left open: does its ending show without a reload?"""
    task_id = str(uuid.uuid4())
    stack.python("from tasks.celery_app import celery_app\n"
                 f"celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 4, 'delay': 1}}, task_id={task_id!r})")
    wait_for(lambda: requests.get(f"{ours_api}/api/tasks/{task_id}", timeout=10).json().get("state") == "PROGRESS",
             30, what="the task to run")
    page = new_page(browser)
    # Flower answers 404 for a task it has not heard of yet: wait for it the way a person would, reloading.
    wait_for(lambda: page.goto(side.detail_url(task_id)).status == 200, 20, interval=0.5, what="the detail page")
    before = page.locator("main").inner_text()
    running = bool(re.search(r"running|STARTED|PROGRESS", before))
    t0 = time.monotonic()
    try:
        page.locator("main").get_by_text(re.compile(r"^(succeeded|SUCCESS)$")).first.wait_for(timeout=20_000)
        shown: Any = round(time.monotonic() - t0, 1)
    except Exception:  # noqa: BLE001 - never shown is the answer
        shown = None
    close(page)
    return {"opened_while_running": running, "ending_shown_after_open_s": shown}


PROCESSED = """() => {
  // DataTables (Flower) splits a scrolling table's header into a table of its own: take the one with the rows.
  const table = [...document.querySelectorAll("table")]
    .find(t => [...t.querySelectorAll("thead th")].some(th => th.textContent.trim() === "Processed")
               && [...t.querySelectorAll("tbody tr")].some(r => r.textContent.includes("worker@")));
  if (!table) return null;
  const column = [...table.querySelectorAll("thead th")].findIndex(th => th.textContent.trim() === "Processed");
  const row = [...table.querySelectorAll("tbody tr")].find(r => r.textContent.includes("worker@"));
  return row && row.cells[column] ? Number(row.cells[column].textContent.replace(/[^0-9]/g, "")) : null;
}"""


def workers_live(browser: Browser, side: Side, stack: Stack, count: int = 5) -> dict[str, Any]:
    """(c) The workers page left open: seconds from `count` quick tasks sent to its Processed count
    showing them all ("not shown" within 30 s)."""
    page = new_page(browser)
    page.goto(side.workers_url())
    before = wait_for(lambda: (n := page.evaluate(PROCESSED)) is not None and (n,), 30, what="the Processed column")[0]
    stack.python("from tasks.celery_app import celery_app\n"
                 f"for _ in range({count}):\n"
                 "    celery_app.send_task('tasks.demo.steps', kwargs={'steps': 1, 'delay': 0})")
    t0 = time.monotonic()
    try:
        wait_for(lambda: (page.evaluate(PROCESSED) or 0) >= before + count, 30, interval=0.05)
        shown: float | None = round(time.monotonic() - t0, 2)
    except TimeoutError:
        shown = None
    close(page)
    return {"processed_before": before, "shown_s": shown}


def axe_counts(browser: Browser, url: str, wait: str) -> dict[str, Any]:
    """(d) axe-core's serious and critical violations on one page (the axe-core npm build)."""
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector(wait, state="attached")
    page.wait_for_timeout(1000)
    page.evaluate(AXE.read_text())  # DevTools' evaluate, not a script tag: not subject to the page's CSP
    found = page.evaluate("""async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
        .filter(v => v.impact === "serious" || v.impact === "critical")
        .map(v => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }))""")
    close(page)
    return {"rules": len(found), "nodes": sum(v["nodes"] for v in found), "violations": found}


def phone_overflow(browser: Browser, url: str, wait: str) -> dict[str, Any]:
    """(e) At 390x844: how far the page scrolls sideways (scrollWidth beyond the viewport, px)."""
    page = new_page(browser, PHONE)
    page.goto(url)
    page.wait_for_selector(wait, state="attached")
    page.wait_for_timeout(1000)
    widths = page.evaluate("({ scroll: document.documentElement.scrollWidth, "
                           "client: document.documentElement.clientWidth })")
    close(page)
    return {"scroll_width": widths["scroll"], "overflow_px": widths["scroll"] - widths["client"]}


def dark_scheme(browser: Browser, url: str, wait: str) -> dict[str, Any]:
    """(f) The page's background colour (body, else html) under prefers-color-scheme light and dark."""
    out = {}
    for scheme in ("light", "dark"):
        page = new_page(browser, DESKTOP, scheme)
        page.goto(url)
        page.wait_for_selector(wait, state="attached")
        out[scheme] = page.evaluate("""() => {
            const body = getComputedStyle(document.body).backgroundColor;
            return body === "rgba(0, 0, 0, 0)" ? getComputedStyle(document.documentElement).backgroundColor : body;
        }""")
        close(page)
    out["honoured"] = luminance(out["dark"]) < 0.2 < luminance(out["light"])
    return out


def luminance(css: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def skip_link(browser: Browser, url: str, wait: str) -> dict[str, Any]:
    """(g) The first Tab stop of the tasks page: is it a skip link, and where does it go?"""
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector(wait, state="attached")
    page.keyboard.press("Tab")
    first = page.evaluate("() => ({ text: document.activeElement.textContent.trim(), "
                          "href: document.activeElement.getAttribute('href') })")
    close(page)
    return {"first_tab_stop": first["text"], "href": first["href"],
            "is_skip_link": bool(re.search(r"skip", first["text"], re.I))}


def detail_fields(browser: Browser, side: Side, task_id: str) -> list[str]:
    """(g) The field names a failed task's detail page shows (its <dt> and section headings)."""
    page = new_page(browser)
    page.goto(side.detail_url(task_id))
    page.wait_for_selector("dt", state="attached")
    page.wait_for_timeout(1000)
    names = page.evaluate("""() => [...document.querySelectorAll("main dt, main h3, main h4, main th")]
        .map(e => e.textContent.trim()).filter(t => t && !/^\\d+$/.test(t))""")
    close(page)
    return list(dict.fromkeys(names))


def endpoints(ours: str, flower: str, failed_id: str, launched_failed_id: str) -> dict[str, dict[str, Any]]:
    """(g) What each serves, asked over HTTP (status codes) rather than taken from the docs."""
    def status(method: str, url: str, **kw: Any) -> int:
        return requests.request(method, url, timeout=30, **kw).status_code

    return {
        "metrics": {"ours": status("GET", f"{ours}/metrics"), "flower": status("GET", f"{flower}/metrics")},
        "queues": {"ours": requests.get(f"{ours}/api/queues", timeout=10).json(),
                   "flower": requests.get(f"{flower}/api/queues/length", timeout=10).json(),
                   "flower_broker_page_lists_unconsumed": UNCONSUMED in requests.get(f"{flower}/broker",
                                                                                     timeout=30).text},
        "retry": {"ours": status("POST", f"{ours}/api/tasks/{launched_failed_id}/retry", json={}),
                  "ours_sent_elsewhere": status("POST", f"{ours}/api/tasks/{failed_id}/retry", json={}),
                  "flower": "no endpoint (flower/urls.py: apply, async-apply, send-task, abort, revoke; no retry)"},
        "audit": {"ours": status("GET", f"{ours}/api/audit"), "flower": "no endpoint"},
        "bulk_preview": {"ours": status("POST", f"{ours}/api/bulk/preview",
                                        json={"action": "retry", "filter": {"state": "FAILURE"}}),
                         "flower": "no endpoint"},
        "charts": {"ours": status("GET", f"{ours}/charts"), "flower": status("GET", f"{flower}/charts")},
    }


def memory(ours_pid: int, flower_pid: int) -> dict[str, Any]:
    """Resident memory of each server process after the load (MB: now and peak)."""
    from bench.common import memory_mb

    return {"ours": memory_mb(ours_pid), "flower": memory_mb(flower_pid)}


def history_after_restart(stack: Stack, flower: tuple[Process, str]) -> dict[str, Any]:
    """Tasks each lists after its server process restarts (the worker and Redis keep running)."""
    web_proc, web_url = stack.webs[0]
    stack.kill_web(web_url, signal.SIGTERM)
    ours = stack.start_web()
    ours_total = requests.get(f"{ours}/api/tasks", params={"limit": 1}, timeout=30).json()["total"]
    proc, base = flower
    proc.stop()
    _, base = start_flower(stack, port=int(base.split(":")[2].split("/")[0]))
    flower_total = len(requests.get(f"{base}/api/tasks", timeout=30).json())
    return {"ours": ours_total, "flower": flower_total}


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


# ---- the run and the report ------------------------------------------------------------------

def measure(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(logdir=ROOT / "tests" / "artifacts" / "logs" / f"versus-flower-{time.strftime('%H%M%S')}")
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "command": "make bench-flower", "tasks": args.tasks, "runs": args.runs}
    try:
        stack.start_redis()
        stack.start_worker(concurrency=6)
        ours = stack.start_web()
        flower_proc, flower = start_flower(stack)
        sides = {"ours": Side("ours", ours), "flower": Side("flower", flower)}
        print(f"ours {ours}, Flower {flower}; sending {args.tasks} tasks", flush=True)
        sent = send_load(stack, args.tasks)
        # One failure launched from the dashboard (its parameters kept: it can be retried as it was).
        launched = requests.post(f"{ours}/api/tasks", json={"task": "fail", "params": {"steps": 0, "delay": 0}},
                                 timeout=10).json()["id"]
        results["settled_s"] = wait_settled(ours, flower, args.tasks + 1)
        wait_for(lambda: all(requests.get(f"{ours}/api/tasks/{i}", timeout=10).json()["state"] == "PROGRESS"
                             for i in sent["running"]), 60, what="the long tasks to report progress")
        failed = sent["failed"][len(sent["failed"]) // 2]
        results["load"] = {"succeeding": len(sent["ok"]), "failing": len(sent["failed"]),
                           "running_with_progress": len(sent["running"])}
        per: dict[str, dict[str, Any]] = {name: {} for name in SIDES}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                for name in SIDES:  # a warm-up each: the first page of a fresh server is not the question
                    close(p := new_page(browser))
                    p = new_page(browser)
                    p.goto(sides[name].list_url())
                    p.wait_for_selector(sides[name].rows(), state="attached")
                    close(p)
                for name, side in sides.items():
                    print(f"{name}: (a) list", flush=True)
                    per[name]["list"] = time_to_usable_list(browser, side, args.runs)
                for name, side in sides.items():
                    print(f"{name}: (b) find", flush=True)
                    targets = sent["failed"][:args.runs]
                    per[name]["find_id_prefix"] = finds(browser, side, [(t[:8], t) for t in targets])
                    per[name]["find_argument_text"] = finds(browser, side, [(sent["tokens"][t], t) for t in targets])
                for name, side in sides.items():
                    print(f"{name}: (c) live", flush=True)
                    per[name]["live_list"] = live_updates(browser, side, stack, ours)
                    per[name]["live_detail"] = detail_goes_live(browser, side, stack, ours)
                    per[name]["live_workers"] = workers_live(browser, side, stack)
                for name, side in sides.items():
                    print(f"{name}: (d)-(g) pages", flush=True)
                    detail_wait = "dt"
                    workers_wait = "#view-workers table" if name == "ours" else "#workers-table tbody tr"
                    per[name]["axe"] = {
                        "tasks list": axe_counts(browser, side.list_url(), side.rows()),
                        "task detail": axe_counts(browser, side.detail_url(failed), detail_wait),
                        "workers": axe_counts(browser, side.workers_url(), workers_wait),
                    }
                    per[name]["phone_tasks"] = phone_overflow(browser, side.list_url(), side.rows())
                    per[name]["phone_detail"] = phone_overflow(browser, side.detail_url(failed), detail_wait)
                    per[name]["dark"] = dark_scheme(browser, side.list_url(), side.rows())
                    per[name]["skip_link"] = skip_link(browser, side.list_url(), side.rows())
                    per[name]["detail_fields"] = detail_fields(browser, side, failed)
            finally:
                browser.close()
        results["sides"] = per
        stack.python("from tasks.celery_app import celery_app\n"
                     "for _ in range(3):\n"
                     f"    celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 1}}, queue={UNCONSUMED!r})")
        time.sleep(3)
        results["endpoints"] = endpoints(ours, flower, failed, launched)
        results["memory_mb"] = memory(stack.webs[0][0].pid, flower_proc.pid)
        for task_id in sent["running"]:
            requests.post(f"{ours}/api/tasks/{task_id}/cancel", json={}, timeout=10)
        print("both: restart", flush=True)
        results["after_restart"] = history_after_restart(stack, (flower_proc, flower))
    finally:
        stack.stop()
    return results


def _overlap(a: dict[str, float], b: dict[str, float]) -> str:
    """Said beside a 'faster' verdict when the two sides' ranges (min-max over the runs) overlap."""
    return " (the ranges overlap)" if a["min"] <= b["max"] and b["min"] <= a["max"] else ""


def _live(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "only ours" if b is None and a is not None else "only Flower" if b is not None else "neither"
    return "both; faster: " + ("ours" if a < b else "Flower")


def _s(value: Any, unit: str = " s") -> str:
    return "not shown" if value is None else f"{value}{unit}"


def report(r: dict[str, Any]) -> str:
    o, f = r["sides"]["ours"], r["sides"]["flower"]
    rows: list[tuple[str, str, str, str]] = []

    def add(point: str, ours: str, flower: str, verdict: str) -> None:
        rows.append((point, ours, flower, verdict))

    lo, lf = o["list"], f["list"]
    add("(a) page open to a usable task list (median of "
        f"{lo['seconds']['n']}, fresh browser context each)",
        f"{lo['seconds']['median']} s (min {lo['seconds']['min']}, max {lo['seconds']['max']}); "
        f"{lo['rows_shown']} rows shown; {lo['bytes_fetched'] // 1024} KiB fetched; {lo['dom_nodes']} DOM nodes",
        f"{lf['seconds']['median']} s (min {lf['seconds']['min']}, max {lf['seconds']['max']}); "
        f"{lf['rows_shown']} rows shown; {lf['bytes_fetched'] // 1024} KiB fetched; {lf['dom_nodes']} DOM nodes",
        "faster: " + ("ours" if lo["seconds"]["median"] < lf["seconds"]["median"] else "Flower")
        + _overlap(lo["seconds"], lf["seconds"]))
    for key, label in (("find_id_prefix", "(b) find a task by an 8-character id prefix"),
                       ("find_argument_text", "(b) find a task by text in its arguments")):
        a, b = o[key], f[key]
        def show(x: dict[str, Any]) -> str:
            if not x["found"]:
                return f"no: {x['found_count']} of {x['tries']} ({x['rows_shown']} rows left)"
            t = x["seconds"]
            return f"yes, {t['median']} s (min {t['min']}, max {t['max']}, {t['n']} tasks)"

        verdict = ("both; faster: " + ("ours" if a["seconds"]["median"] < b["seconds"]["median"] else "Flower")
                   + _overlap(a["seconds"], b["seconds"])
                   if a["found"] and b["found"] else "only " + ("ours" if a["found"] else "Flower")
                   if a["found"] != b["found"] else "neither")
        add(label + " (typed into the page's search box, to the one row shown)", show(a), show(b), verdict)
    a, b = o["live_list"], f["live_list"]
    add("(c) 3 new tasks on the open list, no reload: sent to row shown (median)",
        _s(a["row_appeared_s"]), _s(b["row_appeared_s"]), _live(a["row_appeared_s"], b["row_appeared_s"]))
    add("(c) its progress on the open list: first progress after start; values shown",
        f"{_s(a['first_progress_after_start_s'])}; {a['progress_values_shown']} values",
        f"{_s(b['first_progress_after_start_s'])}; {b['progress_values_shown']} values",
        _live(a["first_progress_after_start_s"], b["first_progress_after_start_s"]))
    add("(c) its ending on the open list: succeeded to shown", _s(a["ending_shown_s"]), _s(b["ending_shown_s"]),
        _live(a["ending_shown_s"], b["ending_shown_s"]))
    a, b = o["live_detail"], f["live_detail"]
    add("(c) a running task's detail page left open: its ending shown after open",
        _s(a["ending_shown_after_open_s"]), _s(b["ending_shown_after_open_s"]),
        _live(a["ending_shown_after_open_s"], b["ending_shown_after_open_s"]))
    a, b = o["live_workers"], f["live_workers"]
    add("(c) the workers page left open: 5 quick tasks sent to its Processed count showing them",
        _s(a["shown_s"]), _s(b["shown_s"]),
        _live(a["shown_s"], b["shown_s"]))
    for page_name in ("tasks list", "task detail", "workers"):
        a, b = o["axe"][page_name], f["axe"][page_name]
        fmt = lambda x: f"{x['rules']} rules, {x['nodes']} nodes" + (  # noqa: E731
            " (" + ", ".join(f"{v['id']} {v['impact']}" for v in x["violations"]) + ")" if x["violations"] else "")
        add(f"(d) axe-core serious+critical violations: {page_name}", fmt(a), fmt(b),
            "equal" if a["nodes"] == b["nodes"] else "fewer: " + ("ours" if a["nodes"] < b["nodes"] else "Flower"))
    for key, label in (("phone_tasks", "tasks page"), ("phone_detail", "task detail")):
        a, b = o[key], f[key]
        add(f"(e) 390 px wide, {label}: sideways overflow (scrollWidth)",
            f"{a['overflow_px']} px ({a['scroll_width']})",
            f"{b['overflow_px']} px ({b['scroll_width']})",
            "equal" if a["overflow_px"] == b["overflow_px"] else
            "less: " + ("ours" if a["overflow_px"] < b["overflow_px"] else "Flower"))
    a, b = o["dark"], f["dark"]
    add("(f) prefers-color-scheme dark: background light / dark",
        f"{a['light']} / {a['dark']}: {'honoured' if a['honoured'] else 'not honoured'}",
        f"{b['light']} / {b['dark']}: {'honoured' if b['honoured'] else 'not honoured'}",
        "both" if a["honoured"] and b["honoured"] else "")
    a, b = o["skip_link"], f["skip_link"]
    add("(g) keyboard: first Tab stop of the tasks page", f"\"{a['first_tab_stop']}\" → {a['href']}",
        f"\"{b['first_tab_stop']}\" → {b['href']}", "both" if a["is_skip_link"] and b["is_skip_link"] else "")
    add("(g) task detail: fields shown for a failed task", ", ".join(o["detail_fields"]),
        ", ".join(f["detail_fields"]), "")
    e = r["endpoints"]
    add("(g) retry a failed task (HTTP)",
        f"POST /api/tasks/<id>/retry → {e['retry']['ours']} for a task launched from the dashboard; "
        f"{e['retry']['ours_sent_elsewhere']} for one sent with send_task/.delay() elsewhere (only a masked "
        "preview of its arguments is kept)", e["retry"]["flower"], "ours (dashboard launches only)")
    add("(g) bulk actions (HTTP)", f"POST /api/bulk/preview → {e['bulk_preview']['ours']}", e["bulk_preview"]["flower"],
        "")
    add("(g) audit log (HTTP)", f"GET /api/audit → {e['audit']['ours']}", e["audit"]["flower"], "")
    queues = e["queues"]
    shown = [q for q in queues["ours"].get("queues", []) if not q["name"].startswith("celeryev.")]
    queues_o = "; ".join(f"{q['name']}: depth {q['depth']}, oldest {q['oldest_age']} s, {q['consumers']} consumers"
                         + (" (flagged: nobody consumes it)" if q.get("unconsumed") else "") for q in shown)
    events = len(queues["ours"].get("queues", [])) - len(shown)
    if events:
        queues_o += f"; also {events} celeryev.* event queue(s), depth 0"
    queues_f = "; ".join(f"{q.get('name')}: {q.get('messages')} messages"
                         for q in queues["flower"].get("active_queues", []))
    add(f"(g) queue depth / oldest message's age, with 3 messages in `{UNCONSUMED}` that no worker consumes (HTTP)",
        f"GET /api/queues: {queues_o}",
        f"GET /api/queues/length: {queues_f} (no age; only queues a worker consumes); its /broker page "
        f"{'lists' if queues['flower_broker_page_lists_unconsumed'] else 'does not list'} `{UNCONSUMED}`",
        "ours" if any(q["name"] == UNCONSUMED for q in shown) else "")
    add("(g) charts page (HTTP)", f"GET /charts → {e['charts']['ours']}",
        f"GET /flower/charts → {e['charts']['flower']}", "")
    add("(g) /metrics, Prometheus (HTTP)", f"{e['metrics']['ours']} (admin or METRICS_TOKEN; loopback here = admin)",
        f"{e['metrics']['flower']} (open to anyone who reaches Flower)", "both")
    m = r["memory_mb"]
    add("server process memory after the load (RSS now / peak)", f"{m['ours'].get('rss')} / {m['ours'].get('peak')} MB",
        f"{m['flower'].get('rss')} / {m['flower'].get('peak')} MB",
        "less: " + ("ours" if m["ours"].get("rss", 0) < m["flower"].get("rss", 0) else "Flower"))
    h = r["after_restart"]
    add("tasks listed after the server process restarts (worker and Redis kept)", str(h["ours"]), str(h["flower"]),
        "more: " + ("ours" if h["ours"] > h["flower"] else "Flower" if h["flower"] > h["ours"] else "equal"))
    lines = [
        "# This dashboard vs Flower, measured on the same Redis",
        "",
        f"Run {r['date']} with `{r['command']}` (bench/versus_flower.py): one redis-server, one Celery worker "
        "(prefork, 6 processes), our web process and Flower 2.2 (`python -m tasks.flower`, loopback) on the same "
        f"Redis; {r['load']['succeeding']} tasks that succeed, {r['load']['failing']} that fail and "
        f"{r['load']['running_with_progress']} that keep running with progress (the load during every "
        "measurement), sent through Celery as any Python process would. Each point measured the same way on "
        "both sides in headless Chromium (Debian's chromium, 1400x1000 unless said), on a 2-core machine. "
        f"Both knew every task ended after: ours {_s(r['settled_s'].get('ours'))}, Flower "
        f"{_s(r['settled_s'].get('flower'))}.",
        "",
        "Where Flower is better or equal in this run: "
        + ("; ".join(f"{p} ({v})" for p, _, _, v in rows if re.search(r"Flower|equal|both(?!; faster: ours)", v)
                     and not v.startswith("only ours")) or "nowhere") + ".",
        "",
        "| point | this dashboard | Flower | verdict |",
        "|---|---|---|---|",
        *(f"| {p} | {a} | {b} | {v} |" for p, a, b, v in rows),
        "",
        "Notes on method: (a) waits for the first rows and then for the row count to hold for one 100 ms "
        "poll, subtracted; ours shows a page of the server's list (page size 50) plus every unfinished task, Flower "
        "a DataTables page of 15. (b) types into each page's own search box and presses Enter; Flower's search "
        "runs 300 ms after the last keystroke (its searchDelay) or at once on Enter. (c) three tasks sent at "
        "once, medians; the task's own times (sent, started, succeeded: Celery's event times as our API "
        "reports them) against Date.now() in the page when the "
        "row, its bar or its ending first showed; \"not shown\" = not within 20 s after the task ended. "
        "Flower's tasks table and task page are fetched once: they show new tasks, progress and endings after "
        "a reload (or a new page, sort or search of its table); its workers table polls every second. "
        "(d) axe-core from package.json (static/vendor/axe.min.js). (g) endpoints asked over HTTP.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1500, help="tasks sent (one in ten fails)")
    parser.add_argument("--runs", type=int, default=5, help="page loads timed per side for (a)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the reports again from bench/results/versus_flower.json, measuring nothing")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((RESULTS / "versus_flower.json").read_text())
    else:
        if not AXE.exists():
            sys.exit(f"{AXE.relative_to(ROOT)} is missing: run `make setup` (package.json builds it)")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        results = measure(args)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "versus_flower.json").write_text(json.dumps(results, indent=2, default=str))
    text = report(results)
    (RESULTS / "versus_flower.md").write_text(text)
    DOCS_COPY.write_text(text)
    print(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}/versus_flower.md, .json and {DOCS_COPY.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
