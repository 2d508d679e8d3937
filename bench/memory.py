"""Memory with a full history: 100,000 tasks streamed as events into a fresh web process and a fresh
Flower. Ours lives in two places (the web process and Redis), Flower's in its process: both parts
are reported, and their sum beside Flower's RSS."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import requests

from bench.common import memory_mb, reset_history
from bench.harness import PYTHON, CpuSampler, Run, flower_events
from celery_dashboard.index import ACTIVE_KEY, DATA_KEY, PARAMS_KEY, RECENT_KEY, VERSION_KEY
from devstack import ROOT

DASHBOARD_KEYS = (DATA_KEY, VERSION_KEY, RECENT_KEY, ACTIVE_KEY, PARAMS_KEY)


def redis_used_mb(client: Any) -> float:
    """Redis' INFO memory used_memory (everything the server holds for its data), in MB."""
    return round(client.info("memory")["used_memory"] / 2**20, 1)


def redis_rss_mb(client: Any) -> float:
    """Redis' INFO memory used_memory_rss: the server process's resident memory, the allocator's
    overhead and fragmentation included (what Flower's RSS is compared with), in MB."""
    return round(client.info("memory")["used_memory_rss"] / 2**20, 1)


def snapshot_probe(url: str) -> dict[str, Any]:
    """One Socket.IO client's snapshot on connect: {"tasks", "bytes", "ms"}."""
    import socketio

    got: dict[str, Any] = {}
    done = threading.Event()
    client = socketio.Client()

    @client.on("snapshot")
    def on_snapshot(data: dict[str, Any]) -> None:
        got["tasks"] = len(data.get("tasks", []))
        got["bytes"] = len(json.dumps(data))
        done.set()

    start = time.perf_counter()
    client.connect(url, transports=["websocket"], wait_timeout=10)
    done.wait(10)
    got["ms"] = round((time.perf_counter() - start) * 1000, 1)
    client.disconnect()
    return got


def measure(run: Run) -> dict[str, Any]:
    import redis

    cfg = run.p["memory"]
    client = redis.Redis.from_url(run.stack.redis_url)
    run.stop_worker()
    reset_history(client)
    client.delete("celery")
    run.restart_web()
    flower_proc, flower_url = run.start_flower("flower-memory")
    try:
        web_pid, flower_pid = run.web_pid, flower_proc.pid
        before = {"web": memory_mb(web_pid), "flower": memory_mb(flower_pid), "redis_used_mb": redis_used_mb(client),
                  "redis_rss_mb": redis_rss_mb(client)}
        n = cfg["tasks"]
        kinds = "received,progress,succeeded"
        events = 3 * n
        flower_base = flower_events(flower_url)
        flower_received_base = flower_events(flower_url, kind="task-received")
        with CpuSampler(web_pid) as web_cpu:
            flood = subprocess.run(
                [PYTHON, "-m", "bench.storm", "flood", "--tasks", str(n), "--progress", "1", "--kinds", kinds,
                 "--rate", str(cfg["rate"]), "--max-seconds", "90"],
                cwd=ROOT, env=dict(run.stack.env), capture_output=True, text=True, timeout=200)
            result = json.loads(flood.stdout.strip().splitlines()[-1])
            # Wait for both to take everything in; Flower is given up on after 10 s without progress.
            deadline = time.monotonic() + cfg["settle_s"]
            web_done = flower_done = None
            changed_at, flower_count = time.time(), -1
            while time.monotonic() < deadline:
                if web_done is None and client.zcard(RECENT_KEY) >= n and client.scard(ACTIVE_KEY) == 0:
                    web_done = time.time()
                if flower_done is None:
                    try:
                        count = flower_events(flower_url) - flower_base
                    except requests.RequestException:
                        count = flower_count
                    if count != flower_count:
                        changed_at, flower_count = time.time(), count
                    if count >= events:
                        flower_done = time.time()
                if web_done is not None and (flower_done is not None or time.time() - changed_at > 10):
                    break
                time.sleep(0.5)
            cpu = web_cpu.window(result["started_at"], web_done or time.time())
        time.sleep(1.0)
        stored = client.zcard(RECENT_KEY)
        dashboard_bytes = {key: client.memory_usage(key, samples=0) or 0 for key in DASHBOARD_KEYS}
        sample = []
        for key in client.scan_iter(match="celery-task-meta-*", count=1000):
            sample.append(key)
            if len(sample) >= 200:
                break
        backend_bytes = [client.memory_usage(key, samples=0) or 0 for key in sample]
        after = {"web": memory_mb(web_pid), "flower": memory_mb(flower_pid), "redis_used_mb": redis_used_mb(client),
                 "redis_rss_mb": redis_rss_mb(client)}
        flower_seen = flower_events(flower_url) - flower_base
        snapshot = snapshot_probe(run.web_url)
        page_start = time.perf_counter()
        page = requests.get(f"{run.web_url}/api/tasks", params={"limit": 50}, timeout=30)
        page_ms = (time.perf_counter() - page_start) * 1000
        after_reads = memory_mb(web_pid)
        flower_tasks = flower_events(flower_url, kind="task-received") - flower_received_base
    finally:
        flower_proc.stop()
    dashboard_mb = round(sum(dashboard_bytes.values()) / 2**20, 1)
    web_rss = after_reads.get("rss") or after["web"].get("rss") or 0.0
    return {
        "settings": {**cfg, "events_per_task": 3, "kinds": kinds},
        "flood": {k: result.get(k) for k in ("events", "seconds", "rate", "prepare_s")},
        "tasks_in_history": stored, "web_settled_s": round(web_done - result["ended_at"], 1) if web_done else None,
        "web_cpu_fill": cpu,
        "flower_events_seen": flower_seen, "flower_events_expected": events, "flower_tasks_seen": flower_tasks,
        "flower_settled_s": round(flower_done - result["ended_at"], 1) if flower_done else None,
        "before_mb": before, "after_mb": after, "web_after_reads_mb": after_reads,
        "dashboard_keys_bytes": dashboard_bytes, "dashboard_keys_mb": dashboard_mb,
        "redis_bytes_per_task": round(sum(dashboard_bytes.values()) / stored, 1) if stored else None,
        "backend_bytes_per_task_sample": round(sum(backend_bytes) / len(backend_bytes), 1) if backend_bytes else None,
        # The sums: the web process and everything Redis holds (the result backend's entries too, which a
        # deployment with Flower alone also has), and the web process with only the dashboard's own keys.
        "ours_total_mb": round(web_rss + after["redis_used_mb"], 1),
        "ours_total_growth_mb": round(web_rss + after["redis_used_mb"] - before["redis_used_mb"], 1),
        "ours_process_plus_own_keys_mb": round(web_rss + dashboard_mb, 1),
        # RSS against RSS: the web process and redis-server's own resident memory (used_memory leaves
        # out the allocator's overhead, which Flower's RSS holds).
        "ours_total_rss_mb": round(web_rss + after["redis_rss_mb"], 1),
        "flower_rss_mb": after["flower"].get("rss"),
        "snapshot": snapshot, "page_50_ms": round(page_ms, 1), "page_50_status": page.status_code,
    }
