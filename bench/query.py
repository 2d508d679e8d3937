"""How long one search of the task list takes over a full index (HISTORY_LIMIT tasks), on a real
redis-server started here on a free port.

    python -m bench.query [--tasks 10000] [--runs 20]

Fills the index with realistic task objects (states, names, queues, workers, masked arguments,
creation times over an hour) through TaskStore.merge, then times TaskStore.query for an empty
filter and for every filter at once. Prints one JSON line: milliseconds, median and worst.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis

from web import records
from web.filters import Page, TaskFilter
from web.store import TaskStore

STATES = ("SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "PROGRESS", "PENDING", "REVOKED", "RETRY")
NAMES = ("tasks.demo.steps", "tasks.demo.fail", "tasks.demo.batch", "app.reports.build")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill(store: TaskStore, count: int, now: float) -> None:
    for start in range(0, count, 1000):
        updates = {}
        for i in range(start, min(count, start + 1000)):
            task_id = f"{i:08x}-task"
            updates[task_id] = {
                "id": task_id, "state": STATES[i % len(STATES)], "name": NAMES[i % len(NAMES)],
                "created": records.iso(now - 3600 + i * 3600 / count), "owner": f"user{i % 5}",
                "queue": "celery" if i % 3 else "reports", "worker": f"celery@host{i % 4}",
                "args": f"({i}, 'customer-{i % 97}')", "kwargs": "{'password': ********, 'retries': 3}",
                "progress": {"current": 3, "total": 10, "percent": 30.0, "message": "step 3 of 10"},
            }
        store.merge(updates)


def timed(store: TaskStore, flt: TaskFilter, page: Page, runs: int) -> dict[str, float]:
    spent = []
    for _ in range(runs):
        start = time.perf_counter()
        store.query(flt, page.limit, page.offset, None, page.sort)
        spent.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(spent), 1), "max_ms": round(max(spent), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    port, workdir = free_port(), tempfile.mkdtemp()
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        now = time.time()
        store = TaskStore(client, options.tasks)
        fill(store, options.tasks, now)
        every = TaskFilter.from_args({"state": "FAILURE,SUCCESS", "name": "demo", "queue": "celery",
                                      "worker": "host1", "since": str(now - 3000), "until": str(now),
                                      "q": "customer-1"})
        found = store.query(every, 50, 0, None)
        print(json.dumps({
            "tasks": options.tasks,
            "empty filter, first page": timed(store, TaskFilter(), Page(), options.runs),
            "two states, first page": timed(store, TaskFilter.from_args({"state": "FAILURE,PROGRESS"}), Page(),
                                            options.runs),
            "every filter, first page": timed(store, every, Page(), options.runs),
            "every filter, oldest first, page 3": timed(store, every, Page(50, 100, "oldest"), options.runs),
            "every filter matched": found["total"],
        }))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
