"""Whether large results make everyone else wait: the web's other users and live updates while
large results are read and while tasks with large results end.

    python -m bench.heavy_results                      # the figures in the README
    python -m bench.heavy_results --readers 6 --read-rows 120000 --tasks 20 --task-rows 12000

Starts its own redis-server, a prefork worker (2 processes) of bench/heavyapp.py and one web
process. A Socket.IO client (websocket) follows a task reporting progress every 50 ms; another
user lists the tasks (GET /api/tasks?limit=20) every 100 ms. Two scenes, each reported as the
longest wait of that user, the longest gap between two live batches of the ticking task, and how
long the scene took:

- `reads`: R readers at once GET /api/tasks/<id>/result of one task's result of N rows
  (120,000 rows: 7.8 MB in Redis), each reader's seconds beside;
- `endings`: T tasks each returning M rows (12,000: 0.8 MB) sent together, until all are shown
  SUCCESS.

A development tool (a fresh user's review found the first; the second is the same fault on the
ingest side), not a step of `make bench`: its figures are the README's.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.common import percentiles


class Watch:
    """The other user and the live client, while a scene runs."""

    def __init__(self, url: str, app: Any) -> None:
        import socketio

        self.url, self.arrivals, self.waits = url, [], []
        self.ticking = app.send_task("heavyapp.tick", (2000, 0.05)).id
        self.client = socketio.Client(reconnection=False)
        self.client.on("tasks", lambda data: self.arrivals.append(time.monotonic())
                       if any(t["id"] == self.ticking for t in data["tasks"]) else None)
        self.client.connect(url, transports=["websocket"], wait_timeout=20)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._look)

    def _look(self) -> None:
        while not self.done.is_set():
            start = time.monotonic()
            answer = requests.get(f"{self.url}/api/tasks", params={"limit": 20}, timeout=120)
            self.waits.append((answer.status_code, time.monotonic() - start))
            time.sleep(0.1)

    def scene(self, run: Any) -> dict[str, Any]:
        """Run `run()` while watching: {"other_user": {...}, "live_gap_max_s", "scene_s", "ran": run's}."""
        self.arrivals.clear()
        self.waits.clear()
        self.done.clear()
        self.thread = threading.Thread(target=self._look)
        self.thread.start()
        time.sleep(1)
        start = time.monotonic()
        ran = run()
        end = time.monotonic()
        time.sleep(0.5)
        self.done.set()
        self.thread.join()
        during = [a for a in self.arrivals if start <= a <= end + 0.5]
        gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
        return {"other_user": {"statuses": sorted({s for s, _ in self.waits}),
                               "wait_s": percentiles([w for _, w in self.waits], 2)},
                "live_gap_max_s": round(max(gaps), 2) if gaps else None, "live_batches": len(during),
                "scene_s": round(end - start, 2), "ran": ran}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--read-rows", type=int, default=120_000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--task-rows", type=int, default=12_000)
    args = parser.parse_args()

    from devstack.processes import wait_for
    from devstack.stack import Stack

    stack = Stack(env={"CELERY_APP": "bench.heavyapp"})
    try:
        stack.start_redis()
        stack.start_worker(app="bench.heavyapp", pool="prefork", concurrency=2)
        url = stack.start_web()
        os.environ["REDIS_URL"] = stack.redis_url
        from bench.heavyapp import app

        def shown(ids: list[str]) -> bool:
            return all(requests.get(f"{url}/api/tasks/{i}", timeout=60).json().get("state") == "SUCCESS" for i in ids)

        big = app.send_task("heavyapp.rows", (args.read_rows,)).id
        wait_for(lambda: shown([big]), 120, what="the large result")
        watch = Watch(url, app)
        out: dict[str, Any] = {"settings": vars(args)}

        def reads() -> dict[str, Any]:
            def one(_: int) -> tuple[int, float]:
                start = time.monotonic()
                answer = requests.get(f"{url}/api/tasks/{big}/result", timeout=300)
                return answer.status_code, round(time.monotonic() - start, 2)

            with ThreadPoolExecutor(args.readers) as pool:
                answers = list(pool.map(one, range(args.readers)))
            return {"statuses": sorted({s for s, _ in answers}), "reader_s": sorted(s for _, s in answers)}

        out["reads"] = watch.scene(reads)

        def endings() -> dict[str, Any]:
            ids = [app.send_task("heavyapp.rows", (args.task_rows,)).id for _ in range(args.tasks)]
            wait_for(lambda: shown(ids), 300, what="the tasks' endings")
            return {"tasks": len(ids)}

        out["endings"] = watch.scene(endings)
        watch.client.disconnect()
        print(json.dumps(out, indent=1))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
