"""Idle latency: a worker's progress call to a connected python-socketio client, one task at a time,
through our web process and each baseline (bench.latency.socket_client_latency)."""
from __future__ import annotations

from typing import Any

from bench import baselines
from bench.common import percentiles
from bench.harness import Run
from bench.latency import socket_client_latency


def measure(run: Run) -> dict[str, Any]:
    """{"regimes": [{"settings", "ours": percentiles (ms), "naive": ..., "mq": ...}]}. Two regimes: one
    task reporting every 250 ms, and one at the throttle's top rate (a report every PROGRESS_INTERVAL)."""
    run.ensure_worker()
    regimes: list[dict[str, Any]] = [{"settings": cfg} for cfg in run.p["latency"]]
    for name in ("ours", "naive", "mq"):
        relay = baselines.start(run, name)
        try:
            for regime in regimes:
                cfg = regime["settings"]
                regime[name] = percentiles(socket_client_latency(relay.url, cfg["tasks"], steps=cfg["steps"],
                                                                 delay=cfg["delay"]))
        finally:
            if name != "ours":
                relay.stop()
    return {"regimes": regimes}
