"""Browser render benchmark: what one live update costs the page, and how smooth it stays in a burst.

Measures, in headless Chromium against the real stack (redis-server, a Celery worker, the web):
- click on Launch to the task's row on the page, and to its first visible progress;
- the main-thread cost of one pushed progress update, with 1,000 and with 10,000 tasks in history:
  from the Socket.IO message's arrival through the page's handlers, its next animation-frame
  callbacks and the style and layout they cause (a forced layout read at the end);
- frame times (requestAnimationFrame gaps) while 1,500 tasks are sent in a burst, and the share
  of the burst the main thread spent in long tasks (> 50 ms, the Long Tasks API).

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
from tests.support import Stack, wait_for

# When each task's row first shows, when its bar first moves, and each Launch click (ms, the
# page's clock): shared by every browser probe.
ROWS = """
window.__rows = {}; window.__first = {}; window.__clicks = [];
document.addEventListener("submit", () => window.__clicks.push(performance.now()), true);
new MutationObserver(() => {
  for (const row of document.querySelectorAll("[data-task-id]")) {
    const id = row.dataset.taskId;
    if (!(id in window.__rows)) window.__rows[id] = performance.now();
    const bar = row.querySelector("[role=progressbar]");
    if (bar && !(id in window.__first) && Number(bar.getAttribute("aria-valuenow")) > 0) {
      window.__first[id] = performance.now();
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"] });
"""

# Installed before the page's own scripts. Wraps the Socket.IO client so this probe's "tasks"
# handler runs before the page's: it notes the arrival, asks for an animation frame before the
# page can (the frame's start), and after the page's handlers (a microtask) asks for one more
# (runs after the page's own frame callbacks), where it forces style and layout and stops the clock.
PROBE = """
window.__cost = []; window.__frames = []; window.__long = [];
let wrapped;
Object.defineProperty(window, "io", { configurable: true, get() { return wrapped; }, set(real) {
  wrapped = function (...args) {
    const socket = real(...args);
    socket.on("tasks", (data) => {
      if (!window.__measure || !data.tasks.some((t) => t.id === window.__measure)) return;
      const arrived = performance.now();
      let frameStart = null;
      requestAnimationFrame(() => { frameStart = performance.now(); });
      queueMicrotask(() => {
        const handlers = performance.now() - arrived;
        requestAnimationFrame(() => {
          void document.documentElement.offsetHeight;  // style and layout of what changed
          window.__cost.push(handlers + (performance.now() - frameStart));
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
""" + ROWS


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


def _busy(cdp: Any) -> float:
    """Seconds the page's main thread has been busy so far (Chromium's Performance.getMetrics
    TaskDuration: script, style, layout, paint, everything)."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def _ended(url: str, task_id: str) -> bool:
    import requests

    return requests.get(f"{url}/api/tasks/{task_id}", timeout=10).json()["state"] == "SUCCESS"


def update_cost(page: Page, url: str, updates: int) -> tuple[list[float], float, dict[str, Any]]:
    """One running task's pushed progress updates: (milliseconds of main-thread work per update as
    the probe times it, and the page's whole main-thread time per update from Chromium's own
    accounting, less what the page spends idle over the same time)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.goto(url)
    page.wait_for_selector("[data-task-id]", state="attached", timeout=180_000)
    time.sleep(2)  # the snapshot's rendering settles
    idle_from, idle_busy = time.monotonic(), _busy(cdp)
    time.sleep(3)
    idle_rate = (_busy(cdp) - idle_busy) / (time.monotonic() - idle_from)
    page.evaluate("window.__cost = []")
    task_id = launch(url, steps=max(updates * 5, 50), delay=0.1)
    page.evaluate(f"window.__measure = {json.dumps(task_id)}")
    wait_for(lambda: page.evaluate("window.__cost.length") >= 1, 60, interval=0.05, what="a progress update")
    start, busy, seen = time.monotonic(), _busy(cdp), page.evaluate("window.__cost.length")
    # Until `updates` more have been handled, or the task ended (a slow page merges what waits).
    wait_for(lambda: page.evaluate("window.__cost.length") >= seen + updates or _ended(url, task_id), 300,
             interval=0.2, what="progress updates")
    elapsed, spent = time.monotonic() - start, _busy(cdp) - busy
    count = max(1, page.evaluate("window.__cost.length") - seen)
    cdp.detach()
    # Reported as measured, never clamped: a page busy with other work while idle (its clocks,
    # a snapshot settling) can make the difference small or negative, and that is said as it is.
    return page.evaluate("window.__cost"), (spent - idle_rate * elapsed) / count * 1000, {
        "busy_ms_per_s_during_updates": round(spent / elapsed * 1000, 1),
        "busy_ms_per_s_idle": round(idle_rate * 1000, 1), "updates": count}


def burst(page: Page, stack: Stack, count: int) -> dict[str, Any]:
    """Frame gaps (ms) and long tasks while `count` tasks are sent at once from another process."""
    page.goto(stack.url)
    page.wait_for_selector("[data-task-id]", state="attached", timeout=180_000)
    page.evaluate("window.__frames = []; window.__long = []; window.__frameLoop()")
    started = time.monotonic()
    sent = stack.python("from tasks.demo import steps\n"
                        f"for _ in range({count}): print(steps.delay(steps=2, delay=0.01).id)")
    ids = sent.stdout.split()
    client = redis.Redis.from_url(stack.redis_url)
    wait_for(lambda: not any(client.smismember(ACTIVE_KEY, ids)), 600, interval=0.5, what="the burst to end")
    took = time.monotonic() - started
    page.evaluate("window.__framing = false")
    return {"frames": page.evaluate("window.__frames"), "long": page.evaluate("window.__long"), "seconds": took}
