"""A swarm of Socket.IO clients (python-socketio AsyncClient, websocket transport) in one process.

    python -m bench.swarm --url URL --clients 500 --ids-file IDS --out STATS.json [--max-wait 120]

Connects the clients, prints {"ready": ...} on stdout, then records for every pushed task object
whose id is in IDS its lag (receive wall time minus the object's `updated`; for a terminal state
minus its `finished`) and which terminal states each client got. It stops when every client has
every terminal state, when "stop" arrives on stdin, or after --max-wait seconds; then it writes
its statistics to --out and prints {"done": ...}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from datetime import datetime
from typing import Any

import socketio

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


class Swarm:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.parsed: dict[str, float] = {}
        self.lag: dict[int, int] = {}
        self.terminal_lag: dict[int, int] = {}
        self.messages = self.records = self.via_snapshot = 0
        self.connects = self.disconnects = 0
        self.complete = 0
        self.last_terminal_at: float | None = None
        self.completed_at: float | None = None
        self.all_done = asyncio.Event()
        self.n_clients = 0

    def epoch(self, value: str) -> float:
        found = self.parsed.get(value)
        if found is None:
            if len(self.parsed) > 200_000:
                self.parsed.clear()
            found = self.parsed[value] = datetime.fromisoformat(value).timestamp()
        return found

    def client(self, url: str) -> tuple[socketio.AsyncClient, dict[str, Any]]:
        # The standard json module: engineio's default wraps it with a Python callback per integer (a
        # guard for servers), which made decoding a third of this process's time.
        sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=2, json=json)
        state: dict[str, Any] = {"terminal": set(), "connected_once": False}

        def got_terminal(task_id: str, now: float) -> None:
            done = state["terminal"]
            if task_id not in done:
                done.add(task_id)
                self.last_terminal_at = now
                if len(done) == len(self.expected):
                    self.complete += 1
                    if self.complete == self.n_clients:
                        self.completed_at = now
                        self.all_done.set()

        @sio.on("tasks")
        async def on_tasks(data: dict[str, Any]) -> None:
            now = time.time()
            self.messages += 1
            lag, expected, parsed = self.lag, self.expected, self.parsed
            for task in data.get("tasks", ()):
                if task.get("id") not in expected:
                    continue
                self.records += 1
                terminal = task.get("state") in TERMINAL
                stamp = task.get("finished") if terminal else task.get("updated")
                if stamp:
                    sent = parsed.get(stamp)
                    if sent is None:
                        sent = self.epoch(stamp)
                    ms = max(0, int((now - sent) * 1000))
                    lag[ms] = lag.get(ms, 0) + 1
                    if terminal:
                        self.terminal_lag[ms] = self.terminal_lag.get(ms, 0) + 1
                if terminal:
                    got_terminal(task["id"], now)

        @sio.on("snapshot")
        async def on_snapshot(data: dict[str, Any]) -> None:
            now = time.time()
            for task in data.get("tasks", ()):
                if task.get("id") in self.expected and task.get("state") in TERMINAL \
                        and task["id"] not in state["terminal"]:
                    self.via_snapshot += 1
                    got_terminal(task["id"], now)

        @sio.on("connect")
        async def on_connect() -> None:
            self.connects += 1

        @sio.on("disconnect")
        async def on_disconnect(*_: Any) -> None:
            self.disconnects += 1

        return sio, state


def watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    loop.call_soon_threadsafe(stop.set)  # "stop", or the controller went away


async def run(url: str, n: int, ids: list[str], out: str, max_wait: float, connect_timeout: float) -> dict[str, Any]:
    swarm = Swarm(set(ids))
    clients = [swarm.client(url) for _ in range(n)]
    gate = asyncio.Semaphore(25)
    failures: list[str] = []

    async def connect(sio: socketio.AsyncClient) -> None:
        async with gate:
            try:
                await sio.connect(url, transports=["websocket"], wait_timeout=20)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(repr(exc)[:200])

    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(connect(sio) for sio, _ in clients)), connect_timeout)
    except TimeoutError:
        failures.append("connect phase timed out")
    connect_s = time.monotonic() - start
    connected = sum(1 for sio, _ in clients if sio.connected)
    swarm.n_clients = connected
    print(json.dumps({"ready": connected, "failed": n - connected, "connect_s": round(connect_s, 2)}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=watch_stdin, args=(loop, stop), daemon=True).start()
    done_wait = asyncio.ensure_future(swarm.all_done.wait())
    stop_wait = asyncio.ensure_future(stop.wait())
    finished, _ = await asyncio.wait({done_wait, stop_wait}, timeout=max_wait, return_when=asyncio.FIRST_COMPLETED)
    reason = "complete" if done_wait in finished else "stop" if stop_wait in finished else "max-wait"
    for waiter in (done_wait, stop_wait):
        waiter.cancel()

    stats = {
        "clients": n, "connected": connected, "connect_failed": n - connected, "connect_s": round(connect_s, 2),
        "connect_errors": failures[:5], "expected_tasks": len(ids),
        "terminal_delivered": sum(len(state["terminal"]) for _, state in clients),
        "terminal_via_snapshot": swarm.via_snapshot, "complete_clients": swarm.complete,
        "completed_at": swarm.completed_at, "last_terminal_at": swarm.last_terminal_at,
        "messages": swarm.messages, "records": swarm.records,
        "reconnects": max(0, swarm.connects - connected), "disconnects": swarm.disconnects,
        "stopped_by": reason, "lag_ms": swarm.lag, "terminal_lag_ms": swarm.terminal_lag,
    }
    with open(out, "w") as handle:
        json.dump(stats, handle)

    async def leave(sio: socketio.AsyncClient) -> None:
        try:
            await asyncio.wait_for(sio.disconnect(), 5)
        except Exception:  # noqa: BLE001 - leaving anyway
            pass

    try:
        await asyncio.wait_for(asyncio.gather(*(leave(sio) for sio, _ in clients)), 15)
    except TimeoutError:
        pass
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-wait", type=float, default=120.0, help="seconds after ready, at most")
    parser.add_argument("--connect-timeout", type=float, default=90.0)
    args = parser.parse_args()
    with open(args.ids_file) as handle:
        ids = json.load(handle)
    stats = asyncio.run(run(args.url, args.clients, ids, args.out, args.max_wait, args.connect_timeout))
    print(json.dumps({"done": stats["stopped_by"], "complete_clients": stats["complete_clients"]}), flush=True)


if __name__ == "__main__":
    main()
