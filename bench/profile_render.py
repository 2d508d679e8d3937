"""Where the page's main-thread time goes: one progress update at 10,000 tasks in history, and a burst.

Starts the real stack (redis-server, a Celery worker, the web) and headless Chromium, then records
a Chromium performance trace (the DevTools timeline categories) and a V8 CPU profile while a
running task pushes progress updates with 10,000 ended tasks in the index, and again while a burst
of tasks is sent. Prints the main thread's busiest trace events (self time) and JavaScript
functions (self time), per update or per burst. Not part of `make bench-latency`: a tool for
finding a cause, run by hand:

    .venv/bin/python -m bench.profile_render [--history 10000] [--updates 40] [--burst 1500]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

import redis
from playwright.sync_api import Browser, Page, sync_playwright

from bench import render
from bench.latency import RESULTS
from devstack import CHROMIUM, CHROMIUM_ARGS, Stack, wait_for

CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink.user_timing"]


def main_thread_self_times(trace: dict[str, Any]) -> tuple[Counter[str], float]:
    """({event name: self milliseconds} on the page renderer's main thread, its whole busy ms)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    mains = {(e["pid"], e["tid"]) for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"}
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in events:
        if (e.get("pid"), e.get("tid")) in mains and e.get("ph") in ("X", "B", "E"):
            by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
    # The page's renderer is the main thread that ran the most.
    best: tuple[Counter[str], float] = (Counter(), 0.0)
    for thread in by_thread.values():
        spans: list[tuple[float, float, str]] = []
        open_: list[dict[str, Any]] = []
        for e in sorted(thread, key=lambda e: e["ts"]):
            if e["ph"] == "X":
                spans.append((e["ts"], e["ts"] + e.get("dur", 0), e["name"]))
            elif e["ph"] == "B":
                open_.append(e)
            elif open_:
                b = open_.pop()
                spans.append((b["ts"], e["ts"], b["name"]))
        spans.sort(key=lambda s: (s[0], -s[1]))
        selfs: Counter[str] = Counter()
        stack: list[list[Any]] = []  # [end, name, self]
        busy = 0.0

        for start, end, name in spans:
            while stack and stack[-1][0] <= start:
                done = stack.pop()
                selfs[done[1]] += done[2] / 1000
            if stack:
                stack[-1][2] -= min(end, stack[-1][0]) - start
            else:
                busy += end - start
            stack.append([end, name, end - start])
        for done in stack:
            selfs[done[1]] += done[2] / 1000
        if busy > best[1]:
            best = (selfs, busy)
    return best[0], best[1] / 1000


def js_self_times(profile: dict[str, Any]) -> Counter[str]:
    """{function (file:line): self milliseconds} from a V8 CPU profile."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    out: Counter[str] = Counter()
    deltas = profile.get("timeDeltas", [])
    for sample, delta in zip(profile.get("samples", []), deltas[1:] + [0], strict=False):
        frame = nodes[sample]["callFrame"]
        where = frame["url"].rsplit("/", 1)[-1]
        out[f"{frame['functionName'] or '(anonymous)'} {where}:{frame['lineNumber'] + 1}" if where
            else frame["functionName"]] += delta / 1000
    return out


def record(browser: Browser, page: Page, action: Any) -> tuple[Counter[str], float, Counter[str]]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 200})
    browser.start_tracing(page=page, categories=CATEGORIES)
    cdp.send("Profiler.start")
    action()
    profile = cdp.send("Profiler.stop")["profile"]
    trace = json.loads(browser.stop_tracing())
    cdp.detach()
    selfs, busy = main_thread_self_times(trace)
    return selfs, busy, js_self_times(profile)


def show(title: str, selfs: Counter[str], busy: float, js: Counter[str], per: int, top: int) -> None:
    print(f"\n## {title}: main thread busy {busy:.0f} ms, {busy / per:.2f} ms per unit ({per})")
    for name, ms in selfs.most_common(top):
        print(f"  {ms / per:8.3f} ms  {name}")
    print("  JavaScript (self, sampled):")
    for name, ms in js.most_common(top):
        print(f"  {ms / per:8.3f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--burst", type=int, default=1500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stack = Stack(logdir=RESULTS / "logs", env={"SNAPSHOT_LIMIT": "10000"})
    try:
        stack.start_redis()
        stack.start_worker()
        url = stack.start_web()
        client = redis.Redis.from_url(stack.redis_url)
        render.fill_history(client, args.history)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(render.PROBE)
            page.goto(url)
            page.wait_for_selector("[data-task-id]", state="attached", timeout=180_000)
            time.sleep(3)
            counted: dict[str, int] = {}

            def updates() -> None:
                task_id = render.launch(url, steps=args.updates * 5, delay=0.1)
                page.evaluate(f"window.__cost = []; window.__measure = {json.dumps(task_id)}")
                wait_for(lambda: page.evaluate("window.__cost.length") >= args.updates, 120, interval=0.5,
                         what="progress updates")
                counted["updates"] = page.evaluate("window.__cost.length")

            selfs, busy, js = record(browser, page, updates)
            show(f"progress updates, {args.history} tasks in history", selfs, busy, js, counted["updates"], args.top)
            print("  probe's per-update ms:", sorted(round(c, 2) for c in page.evaluate("window.__cost")))
            render.clear_history(client)
            if args.burst:
                selfs, busy, js = record(browser, page, lambda: render.burst(page, stack, args.burst))
                show(f"burst of {args.burst} tasks", selfs, busy, js, 1, args.top)
            browser.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
