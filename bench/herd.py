"""A herd of clients connecting at once, and what a client already connected sees meanwhile.

    python -m bench.herd 1000          # starts redis-server, a Celery worker and the web
    python -m bench.herd 500 1000      # one stack, one herd per count

The history is first topped up to 200 ended tasks (real launches), so each new client's snapshot is
full, as after a restart of a dashboard in use. A watcher client connects, launches two `steps`
tasks that report every 0.1 s for `--seconds`, and notes when each pushed batch arrives; after 4 s,
N clients (python-socketio AsyncClients, websocket, all in this one process) connect at once, wait
for their snapshots and leave. Reported per herd: the watcher's batches and its three longest gaps
between two of them (ms; the tasks report every 0.1 s, so a batch is due that often), the snapshots received and
the seconds until the last one.

Before web.pusher.Pusher.snapshot_turn, 1,000 clients connecting held the watcher's updates back
for 13.3 s: each snapshot held the pusher's lock, and a due batch waited behind every one of them.
This is a development tool, not a step of `make bench`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


async def _watch(url: str, seconds: float, out: dict[str, Any]) -> None:
    import aiohttp
    import socketio

    sio = socketio.AsyncClient(json=json)
    times: list[float] = []

    @sio.on("tasks")
    async def batch(_: Any) -> None:
        times.append(time.monotonic())

    await sio.connect(url, transports=["websocket"], auth={"deltas": True})
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            body = {"task": "steps", "params": {"steps": int(seconds * 10), "delay": 0.1}, "duplicate": True}
            async with http.post(f"{url}/api/tasks", json=body, headers={"Origin": url}) as answer:
                answer.raise_for_status()
    await asyncio.sleep(seconds)
    gaps = sorted((b - a) * 1000 for a, b in zip(times, times[1:], strict=False))
    out["watcher_batches"] = len(times)
    out["watcher_longest_gaps_ms"] = [round(g) for g in gaps[-3:]]
    await sio.disconnect()


async def _herd(url: str, clients: int, after: float, out: dict[str, Any]) -> None:
    import socketio

    await asyncio.sleep(after)
    herd = [socketio.AsyncClient(reconnection=False, json=json) for _ in range(clients)]
    got = [0]
    for sio in herd:
        sio.on("snapshot", lambda _: got.__setitem__(0, got[0] + 1))
    start = time.monotonic()

    async def connect(sio: Any) -> None:
        try:
            await sio.connect(url, transports=["websocket"], auth={"deltas": True}, wait_timeout=30)
        except Exception:  # noqa: BLE001 - counted: its snapshot never comes
            pass

    await asyncio.gather(*(connect(sio) for sio in herd))
    while got[0] < clients and time.monotonic() - start < 60:
        await asyncio.sleep(0.05)
    out["snapshots"] = got[0]
    out["snapshots_s"] = round(time.monotonic() - start, 1)
    await asyncio.gather(*(sio.disconnect() for sio in herd if sio.connected))


def collections(url: str) -> dict[str, float]:
    """The web's full (generation 2) collections so far, from its /metrics (web.pauses): {"count",
    "seconds" in all, "longest" since start}. A loopback run: the local admin may read it."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    found = {"count": 0.0, "seconds": 0.0, "longest": 0.0}
    names = {"dashboard_gc_pause_seconds_count": "count", "dashboard_gc_pause_seconds_sum": "seconds",
             "dashboard_gc_longest_pause_seconds": "longest"}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in names and sample.labels.get("generation") == "2":
                found[names[sample.name]] = sample.value
    return found


async def measure(url: str, clients: int, seconds: float = 25.0) -> dict[str, Any]:
    """One herd of `clients` against the web at `url` while a watcher watches: {"clients",
    "watcher_batches", "watcher_longest_gaps_ms", "snapshots", "snapshots_s", "web_full_collections":
    the web's generation-2 collections meanwhile {"count", "ms" in all, "longest_ms_since_start"}}."""
    out: dict[str, Any] = {"clients": clients}
    before = collections(url)
    await asyncio.gather(_watch(url, seconds, out), _herd(url, clients, 4.0, out))
    after = collections(url)
    out["web_full_collections"] = {"count": int(after["count"] - before["count"]),
                                   "ms": round((after["seconds"] - before["seconds"]) * 1000),
                                   "longest_ms_since_start": round(after["longest"] * 1000)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", type=int, nargs="+")
    parser.add_argument("--seconds", type=float, default=25.0, help="how long the watcher watches")
    args = parser.parse_args()
    from bench.relays import HISTORY, top_up_history
    from devstack import Stack

    stack = Stack(env={"MAX_CONNECTIONS": str(max(args.clients) + 100)})
    try:
        stack.start_redis()
        stack.start_worker()
        url = stack.start_web()
        top_up_history(stack.redis_url, url, HISTORY)
        for clients in args.clients:
            print(json.dumps(asyncio.run(measure(url, clients, args.seconds))), flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
