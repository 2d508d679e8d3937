"""Browser render benchmark: what one live update costs the page, and how smooth it stays in a burst.

Measures, in headless Chromium against the real stack (redis-server, a Celery worker, the web):
- click on Launch to the task's row on the page, and to its first visible progress;
- the main-thread cost of one pushed progress update, with 1,000 and with 10,000 tasks in history,
  two ways: PROBE times each update from its WebSocket message event through the page's handlers
  and the animation frame that shows it (callbacks, style, layout, paint, commit); and Chromium's
  own accounting (Performance.getMetrics TaskDuration, with its script, layout and style parts)
  over the updates, less the same page's idle rate;
- frame times (requestAnimationFrame gaps) while 1,500 tasks are sent in a burst, the long tasks
  (> 50 ms, the Long Tasks API) and the main thread's seconds in the burst.

History is written straight into the dashboard's index in Redis (celery_dashboard.index keys), as
the listener would have stored ended tasks; the progressing task and the burst are real Celery
tasks. Used by `make bench-latency` (bench/latency.py); results in bench/results/render.json.
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis
from playwright.sync_api import Page

from celery_dashboard.index import ACTIVE_KEY, DATA_KEY, RECENT_KEY, VERSION_KEY, pending_record
from devstack import Stack, wait_for

# When each task's row first shows, when its bar first moves, and each Launch click (ms, the
# page's clock): shared by every browser probe. It looks only at what each mutation touched (a
# scan of every row per mutation would be the probe's own cost, charged to the page).
ROWS = """
window.__rows = {}; window.__first = {}; window.__clicks = [];
document.addEventListener("submit", () => window.__clicks.push(performance.now()), true);
const __note = (row, now) => {
  const id = row.dataset.taskId;
  if (!(id in window.__rows)) window.__rows[id] = now;
  const bar = row.querySelector("[role=progressbar]");
  if (bar && !(id in window.__first) && Number(bar.getAttribute("aria-valuenow")) > 0) window.__first[id] = now;
};
new MutationObserver((records) => {
  const now = performance.now();
  for (const record of records) {
    if (record.type === "attributes") {
      const row = record.target.closest("[data-task-id]");
      if (row) __note(row, now);
      continue;
    }
    for (const node of record.addedNodes) {
      if (node.nodeType !== 1) continue;
      if (node.dataset.taskId) __note(node, now);
      else for (const row of node.querySelectorAll("[data-task-id]")) __note(row, now);
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"] });
"""

# Installed before the page's own scripts; times each pushed "tasks" message that names the task in
# window.__measure (as a whole task object or as a change), from the start of its WebSocket message
# event (Engine.IO and Socket.IO decoding included) through the page's handlers, then from the start
# of the next animation frame (this probe asks for it before the page can) through the page's frame
# callbacks and the style, layout, paint and commit of that frame: the end is a task posted from the
# frame's last callback, which runs once the frame's rendering is done. Idle time between the
# handlers and the frame is not counted. window.__cost: milliseconds per update; window.__work: the
# same up to the end of the frame's style and layout (forced in its last callback), without paint.
PROBE = """
window.__cost = []; window.__work = []; window.__frames = []; window.__long = [];
let messageStart = null;
const RealWebSocket = window.WebSocket;
window.WebSocket = class extends RealWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", () => { messageStart = performance.now(); });  // before the client's
  }
};
const afterFrame = new MessageChannel();
let frameDone = [];
afterFrame.port1.onmessage = () => { const now = performance.now(); for (const fn of frameDone.splice(0)) fn(now); };
let wrapped;
Object.defineProperty(window, "io", { configurable: true, get() { return wrapped; }, set(real) {
  wrapped = function (...args) {
    const socket = real(...args);
    socket.on("tasks", (data) => {
      const named = [...(data.tasks || []), ...(data.changes || [])];
      if (!window.__measure || !named.some((t) => t.id === window.__measure)) return;
      const arrived = messageStart ?? performance.now();
      let frameStart = null;
      requestAnimationFrame(() => { frameStart = performance.now(); });
      queueMicrotask(() => {
        const handlers = performance.now() - arrived;
        requestAnimationFrame(() => {
          void document.documentElement.offsetHeight;  // style and layout now (the frame would do them anyway)
          window.__work.push(handlers + (performance.now() - frameStart));
          frameDone.push((end) => window.__cost.push(handlers + (end - frameStart)));
          afterFrame.port2.postMessage(null);
        });
      });
    });
    return socket;
  };
  Object.assign(wrapped, real);
}});
window.__frameLoop = () => {
  let last = performance.now();
  const tick = (now) => {
    window.__frames.push(now - last); last = now;
    if (window.__framing) requestAnimationFrame(tick);
  };
  window.__framing = true; requestAnimationFrame(tick);
};
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
"""


def fill_history(client: redis.Redis, count: int, name: str = "tasks.demo.steps") -> None:
    """Write `count` ended tasks into the index, newest a minute ago, as the listener stores them."""
    now = time.time() - 60
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        created = now - n
        record = pending_record(f"history-{count}-{n:06d}", name, None, created, None)
        record.update(state="SUCCESS", version=5, result=n,
                      started=datetime.fromtimestamp(created + 0.1, UTC).isoformat(),
                      finished=datetime.fromtimestamp(created + 0.6, UTC).isoformat(),
                      progress={"current": 10, "total": 10, "percent": 100.0, "message": "done"})
        pipe.hset(DATA_KEY, record["id"], json.dumps(record))
        pipe.hset(VERSION_KEY, record["id"], 5)
        pipe.zadd(RECENT_KEY, {record["id"]: created})
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def clear_history(client: redis.Redis) -> None:
    ids = [i for i in client.zrange(RECENT_KEY, 0, -1) if i.startswith(b"history-")]
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        client.hdel(DATA_KEY, *chunk)
        client.hdel(VERSION_KEY, *chunk)
        client.zrem(RECENT_KEY, *chunk)


def launch(url: str, steps: int, delay: float) -> str:
    import requests

    answer = requests.post(f"{url}/api/tasks", timeout=10, json={
        "task": "steps", "params": {"steps": steps, "delay": delay}, "duplicate": True})
    answer.raise_for_status()
    return answer.json()["id"]


# Chromium's main-thread accounting (Performance.getMetrics), in seconds: every task, then its script,
# layout and style parts (paint and commit are the rest of TaskDuration).
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def _metrics(cdp: Any) -> dict[str, float]:
    values = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {name: values[name] for name in METRICS}


def _rates(cdp: Any, seconds: float) -> dict[str, float]:
    """Main-thread seconds per second of each METRICS entry over the next `seconds`."""
    start, before = time.monotonic(), _metrics(cdp)
    time.sleep(seconds)
    after, took = _metrics(cdp), time.monotonic() - start
    return {name: (after[name] - before[name]) / took for name in METRICS}


def _settle(cdp: Any, limit: float = 20.0) -> None:
    """Wait (at most `limit` s) until the page spends under 2% of a second's main thread: a snapshot
    of 10,000 tasks is still being handled for a while after the first row shows."""
    deadline = time.monotonic() + limit
    while _rates(cdp, 1.0)["TaskDuration"] > 0.02 and time.monotonic() < deadline:
        pass


def update_cost(page: Page, url: str, updates: int) -> tuple[list[float], list[float], dict[str, Any]]:
    """One running task's pushed progress updates, with whatever history the index holds.

    Returns (milliseconds per update as PROBE times it: message, handlers and the frame that shows
    it; the same without the frame's paint and commit; and Chromium's own accounting of the whole
    page's main thread over the same updates, less what the same page spends over as long while
    idle, per update: {"task_ms", "script_ms", "layout_ms", "style_ms", "updates",
    "busy_ms_per_s_during_updates", "busy_ms_per_s_idle"}).
    Nothing polls the page while either is measured (a poll is main-thread work too)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(url)
    page.wait_for_selector("[data-task-id]", state="attached", timeout=180_000)
    _settle(cdp)
    seconds = max(4.0, updates * 0.1)
    idle = _rates(cdp, seconds)
    task_id = launch(url, steps=min(1000, updates * 10 + 100), delay=0.1)
    page.evaluate(f"window.__cost = []; window.__work = []; window.__measure = {json.dumps(task_id)}")
    wait_for(lambda: page.evaluate("window.__cost.length") >= 2, 60, interval=0.1, what="a progress update")
    seen = page.evaluate("window.__cost.length")
    during = _rates(cdp, seconds)
    costs, work = page.evaluate("[window.__cost, window.__work]")
    costs, work = costs[seen:], work[seen:]
    cdp.detach()
    page.evaluate("window.__measure = null")
    import requests

    requests.post(f"{url}/api/tasks/{task_id}/cancel", timeout=10)
    count = max(1, len(costs))
    # Reported as measured, never clamped: a page busy with other work while idle can make the
    # difference small or negative, and that is said as it is.
    whole = {f"{name.replace('Duration', '').replace('RecalcStyle', 'style').lower()}_ms":
             round((during[name] - idle[name]) * seconds / count * 1000, 2) for name in METRICS}
    whole.update(updates=count, busy_ms_per_s_during_updates=round(during["TaskDuration"] * 1000, 1),
                 busy_ms_per_s_idle=round(idle["TaskDuration"] * 1000, 1))
    return costs, work, whole


def burst(page: Page, stack: Stack, count: int) -> dict[str, Any]:
    """Frame gaps (ms), long tasks and main-thread seconds while `count` tasks are sent at once from
    another process, from the sending until the last of them ended."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(stack.url)
    page.wait_for_selector("[data-task-id]", state="attached", timeout=180_000)
    _settle(cdp)
    page.evaluate("window.__frames = []; window.__long = []; window.__frameLoop()")
    before, started = _metrics(cdp), time.monotonic()
    sent = stack.python("from tasks.demo import steps\n"
                        f"for _ in range({count}): print(steps.delay(steps=2, delay=0.01).id)")
    ids = sent.stdout.split()
    client = redis.Redis.from_url(stack.redis_url)
    wait_for(lambda: not any(client.smismember(ACTIVE_KEY, ids)), 600, interval=0.5, what="the burst to end")
    took, after = time.monotonic() - started, _metrics(cdp)
    page.evaluate("window.__framing = false")
    cdp.detach()
    return {"frames": page.evaluate("window.__frames"), "long": page.evaluate("window.__long"), "seconds": took,
            "main_thread_s": {name.replace("Duration", "").replace("RecalcStyle", "style").lower():
                              round(after[name] - before[name], 2) for name in METRICS}}
