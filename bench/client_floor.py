"""The measuring client's own floor: what N python-socketio clients in one asyncio process take to
receive a message from a server that does nothing else.

    python -m bench.client_floor --port 5099          # the bare server (Flask-SocketIO, eventlet)
    python -m bench.client_floor --clients 500 --bytes 5400   # starts the server, then measures

The server is our web's stack with nothing in it (Flask-SocketIO on eventlet, as bench/naive_relay.py):
no Redis, no store, no tick to wait for. Asked by POST /start {"bytes", "count", "tick"}, it emits
`count` "tasks" messages of about `bytes` bytes (task objects of our pushes' shape), one per tick (it
sleeps `tick` seconds after each emit, so two are never less than a tick apart), to every client,
each with the time it was emitted. The clients (bench/fanout.py's client
classes, websocket, the standard json module) note each message's receive time.

Lag here = receive time minus emit time: the fan-out's lag (bench/fanout.py) without the tick's wait,
the Celery events and the store. It is a reference, not a figure to subtract: what the client
process alone adds at that message size and rate, measured in runs of its own, so not a strict lower
bound. The fan-out table reports it beside ours.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

# A pushed change and a whole task object as our storm sends them (bench/fanout.py measures their size).
CHANGE = {"id": "f701018f-84cf-42b4-938b-6b894071a11a", "version": 3, "base": 2, "state": "SUCCESS",
          "progress": {"current": 250, "total": 250, "percent": 100.0, "message": "step 250 of 250"},
          "result": {"steps": 250}, "finished": "2026-11-30T14:05:43.036392+00:00",
          "updated": "2026-11-30T14:05:43.036392+00:00", "confidence": 2,
          "attempts": [{"retries": 0, "worker": "worker@vm", "started": "2026-11-30T14:05:43.006010+00:00",
                        "finished": "2026-11-30T14:05:43.036392+00:00", "error": None}]}
WHOLE = {"id": "4a684dd0-5e28-443d-b35d-4ccf305218e7", "name": "tasks.demo.steps", "state": "STARTED", "version": 2,
         "progress": None, "result": None, "result_truncated": False, "error": None,
         "created": "2026-11-30T14:01:26.213020+00:00", "started": "2026-11-30T14:01:26.218583+00:00",
         "finished": None, "worker": "worker@vm", "worker_status": None, "parent": None, "retries": 0,
         "updated": "2026-11-30T14:01:26.218583+00:00", "owner": "local", "confidence": None, "clock_skew": False,
         "cooperative": None, "args": "()", "kwargs": "{'steps': 250, 'delay': 0}", "queue": "dashboard.demo",
         "exchange": "", "routing_key": "dashboard.demo", "received": "2026-11-30T14:01:26.216990+00:00",
         "attempts": [{"retries": 0, "worker": "worker@vm", "started": "2026-11-30T14:01:26.218583+00:00",
                       "finished": None, "error": None}], "retry_of": None}


def payload(size: int) -> dict[str, Any]:
    """A "tasks" message of about `size` bytes of compact JSON: whole objects and changes, half each."""
    tasks: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    message = {"tasks": tasks, "changes": changes, "batch": 0, "emitted": 0.0}
    while len(json.dumps(message, separators=(",", ":"))) < size:
        (tasks if len(tasks) <= len(changes) else changes).append(dict(WHOLE if len(tasks) <= len(changes)
                                                                       else CHANGE))
    return message


def serve(port: int, host: str = "127.0.0.1") -> None:
    """The bare server, forever (see the module's text)."""
    import eventlet

    eventlet.monkey_patch()
    from flask import Flask, jsonify, request
    from flask_socketio import SocketIO

    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="eventlet", ping_interval=20, ping_timeout=20, json=json)

    def pump(size: int, count: int, tick: float) -> None:
        message = payload(size)
        for number in range(count):
            message["batch"], message["emitted"] = number, time.time()
            socketio.emit("tasks", message)
            socketio.sleep(tick)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"clients": len(socketio.server.eio.sockets) if socketio.server is not None else 0})

    @app.post("/start")
    def start() -> Any:
        body = request.get_json(force=True)
        socketio.start_background_task(pump, int(body["bytes"]), int(body["count"]), float(body["tick"]))
        return jsonify({"bytes": len(json.dumps(payload(int(body["bytes"])), separators=(",", ":")))})

    socketio.run(app, host=host, port=port, log_output=False)


async def _measure(url: str, clients: int, size: int, count: int, tick: float, timeout: float) -> dict[str, Any]:
    import aiohttp

    from bench.common import collector_paused, histogram_percentiles, per_tick_windows
    from bench.fanout import CONNECT_GATE, _Client, _ms_percentiles, leave_all

    lags: list[float] = []
    received = 0
    done = asyncio.Event()
    times: list[list[float]] = [[] for _ in range(clients)]  # each client's receive times (monotonic)

    def on_tasks_of(mine: list[float]) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def on_tasks(data: dict[str, Any]) -> None:
            nonlocal received
            mine.append(time.monotonic())
            lags.append((time.time() - data["emitted"]) * 1000)
            for change in data.get("changes", ()):  # as the fan-out's clients look at each object
                change.get("state")
            received += 1
            if received >= clients * count:
                done.set()
        return on_tasks

    sios = []
    for mine in times:
        sio = _Client(reconnection=False, json=json)
        sio.on("tasks", on_tasks_of(mine))
        sios.append(sio)
    gate = asyncio.Semaphore(CONNECT_GATE)

    async def connect(sio: Any) -> None:
        async with gate:
            await sio.connect(url, transports=["websocket"], wait_timeout=30)

    await asyncio.gather(*(connect(s) for s in sios))
    await asyncio.sleep(0.5)
    # As in the fan-out's storm (bench.common.collector_paused), the collector is paused, its full
    # collection done, before the server starts sending: a collection of the clients' objects inside
    # the timed window (276 ms with a large heap) made the first messages late and put several in
    # one tick window (the floor at 1 client: lag p95 262 ms, 7 messages in one window in run K).
    with collector_paused():
        started = time.monotonic()  # the windows start here, as the fan-out's with its storm
        cpu = time.process_time()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/start", json={"bytes": size, "count": count, "tick": tick}) as answer:
                sent_bytes = (await answer.json())["bytes"]
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
    await leave_all(sios)
    return {"clients": clients, "message_bytes": sent_bytes, "messages": count, "tick_s": tick,
            "delivered_pct": round(100 * received / (clients * count), 2),
            "lag_ms": _ms_percentiles(lags),
            # One message per tick sent: by receive time, what the client alone puts in one tick window.
            "messages_per_client_per_tick": histogram_percentiles(per_tick_windows(times, started, tick)),
            "client_us_per_message": round(cpu / max(1, received) * 1e6),
            "client_process_cpu_pct": round(100 * cpu / max(wall, 1e-9), 1)}


def measure(url: str, clients: int, size: int, count: int = 30, tick: float = 0.1,
            timeout: float = 60.0) -> dict[str, Any]:
    """`clients` clients in this process receive `count` messages of about `size` bytes, one per `tick`
    seconds, from the bare server at `url`. Returns {"clients", "message_bytes" (as sent), "messages",
    "tick_s", "delivered_pct", "lag_ms" ({"p50", "p95", "p99", "max", "n"}: ms from emit to receive),
    "client_us_per_message" (this process's CPU µs per message received), "client_process_cpu_pct"}."""
    return asyncio.run(_measure(url.rstrip("/"), clients, size, count, tick, timeout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, help="serve on this port (the bare server)")
    parser.add_argument("--clients", type=int, nargs="+", default=[500])
    parser.add_argument("--bytes", type=int, nargs="+", default=[5400])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--tick", type=float, default=0.1)
    args = parser.parse_args()
    if args.port:
        serve(args.port)
        return
    import os
    import tempfile
    from pathlib import Path

    import requests

    from bench.harness import PYTHON
    from devstack import Process, free_port, wait_for

    port = free_port()
    server = Process(f"client-floor-{port}", [PYTHON, "-m", "bench.client_floor", "--port", str(port)],
                     dict(os.environ), Path(tempfile.mkdtemp(prefix="client-floor-")))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, what="bare server")
        for clients in args.clients:
            for size in args.bytes:
                print(json.dumps(measure(url, clients, size, args.count, args.tick)), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
