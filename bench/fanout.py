"""Fan-out as issue 11 measured it: N Socket.IO clients in one asyncio process watch a storm of real tasks.

    python -m bench.fanout --clients 500            # starts redis-server, a Celery worker and the web
    python -m bench.fanout --clients 1 20 100 500   # one stack, one storm per client count
    python -m bench.fanout --url http://127.0.0.1:5000 --clients 100   # against a running web

The clients are python-socketio AsyncClients on the websocket transport, all in this one process,
signed in through the web's local access, or with the `cookies` given. The last of them
connects after all the others (python-socketio's stock manager sends to a room in join order, so
there it is served last; ours takes turns, web.sockets.TakingTurns, and the client's own process
still reads it among 500 others).
Then the storm: `tasks` `steps` tasks of `steps` steps and no delay, launched by as many sequential
POST /api/tasks. A task's lag, for each client, is the moment that client receives the task's
terminal state minus the task's `finished` time (one machine, one clock).

Reported (`measure`): terminal states delivered over all clients (%), lag percentiles over all
clients and for the last joiner alone, "tasks" messages per client per push tick (PUSH_INTERVAL,
counted in fixed windows of one tick from the first launch on; receive-side jitter can put two
batches sent one tick apart into one window; and exactly, per batch, where the server numbers its
batches as ours does: a batch is at most one per tick), and the bytes of a progress update as sent (a delta
where the server sent one) beside the bytes of the full task object it stands for. Where the lag goes
(`lag_split`): each task's `finished` to the first client that had its end (the server's part: the
event's way in, the wait for the tick, the store, the emit), then that first receipt to every other
client's (the sends, and this one process reading 500 sockets); and the gaps between two messages
to one client as received (under a tick: jitter, which the per-tick window count counts twice).

The clients' process runs each storm with Python's cyclic garbage collector off
(bench.common.collector_paused): a full collection walks every client's objects, and its pauses
(up to 465 ms each at 1,000 clients) would be counted as the server's lag.

The clients merge what they receive as the page does (static/js/transport.js): a pushed delta
(`changes`) applies to the task at its `base` version; one that cannot apply is counted
(`deltas_unapplied`).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import engineio
import socketio

from bench.common import collector_paused, cpu_seconds, histogram_percentiles, per_tick_windows, tick_s

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
CONNECT_GATE = 25  # connections opened at once
SAMPLED = 2  # clients that also measure bytes (the first and the last joiner: every client gets the same)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class _CountingEngineIO(engineio.AsyncClient):
    """An engine.io client that notes the size of each text packet it receives (its wire payload)."""

    on_size: Any = None

    async def _receive_packet(self, pkt: Any) -> None:
        if self.on_size is not None and isinstance(pkt.data, str):
            self.on_size(len(pkt.data.encode()) + 1)  # + the engine.io packet type
        await super()._receive_packet(pkt)


class _Client(socketio.AsyncClient):
    def _engineio_client_class(self) -> type:
        return _CountingEngineIO


class Watcher:
    """One client: the tasks it holds (merged as the page merges), when it got each terminal state."""

    def __init__(self, run: Run, sampled: bool) -> None:
        self.run = run
        self.sampled = sampled
        # The standard json module: engineio's default wraps it with a Python callback per integer.
        self.sio = _Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=2, json=json)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.ended: dict[str, float] = {}  # task id -> ms from its `finished` to its terminal state here
        self.ended_at: dict[str, float] = {}  # task id -> when (epoch s) its terminal state came here
        self.done = 0  # expected tasks among them
        self.message_times: list[float] = []
        self.batch_numbers: list[int] = []  # the server's number of each batch received (ours sends one)
        self.numbered_times: list[float] = []  # when each of those came (monotonic s)
        self.last_size = 0
        self.reconnects = -1
        if sampled:
            self.sio.eio.on_size = self._size
        self.sio.on("snapshot", self.on_snapshot)
        self.sio.on("tasks", self.on_tasks)
        self.sio.on("connect", self.on_connect)

    def _size(self, size: int) -> None:
        self.last_size = size

    async def on_connect(self) -> None:
        self.reconnects += 1

    async def on_snapshot(self, data: dict[str, Any]) -> None:
        now = time.time()
        for task in data.get("tasks", ()):
            self.tasks[task["id"]] = task
            self._check(task, now, via_snapshot=True)

    async def on_tasks(self, data: dict[str, Any]) -> None:
        now = time.time()
        run = self.run
        if run.storm_started is not None:
            self.message_times.append(time.monotonic())
            if isinstance(data.get("batch"), int):
                self.batch_numbers.append(data["batch"])
                self.numbered_times.append(self.message_times[-1])
        size, self.last_size = self.last_size, 0
        if self.sampled and size:
            run.message_bytes.append(size)
        for task in data.get("tasks", ()):
            held = task["id"] in self.tasks
            self.tasks[task["id"]] = task
            if self.sampled and task["id"] in run.expected:
                run.note_update(task, task, first=not held)
            self._check(task, now)
        for change in data.get("changes", ()):
            held = self.tasks.get(change["id"])
            if held is None or held.get("version") != change.get("base"):
                run.deltas_unapplied += 1
                continue
            merged = {**held, **change}
            merged.pop("base", None)
            self.tasks[change["id"]] = merged
            if self.sampled and change["id"] in run.expected:
                run.note_update(change, merged)
            self._check(merged, now)

    def _check(self, task: dict[str, Any], now: float, via_snapshot: bool = False) -> None:
        task_id = task["id"]
        if task_id in self.ended or task.get("state") not in TERMINAL:
            return
        if via_snapshot and self.run.storm_started is None:  # ended before this storm: not one of its tasks
            self.ended[task_id] = -1.0
            return
        finished = task.get("finished")
        self.ended[task_id] = max(0.0, (now - _epoch(finished)) * 1000) if finished else 0.0
        self.ended_at[task_id] = now
        if task_id in self.run.expected:
            self.done += 1
            self.run.got_terminal(self)

    def lags(self) -> list[float]:
        return [self.ended[i] for i in self.run.expected if self.ended.get(i, -1.0) >= 0]


def batch_rate(watcher: Watcher) -> float | None:
    """Distinct server batches per second at `watcher`: (batches - 1) / (last receipt - first
    receipt) over the messages that carried a batch number; None with fewer than two."""
    first: dict[int, float] = {}
    for number, at in zip(watcher.batch_numbers, watcher.numbered_times, strict=False):
        first.setdefault(number, at)
    if len(first) < 2:
        return None
    span = max(first.values()) - min(first.values())
    return round((len(first) - 1) / span, 1) if span > 0 else None


class Run:
    """The shared counters of one measurement."""

    def __init__(self) -> None:
        self.expected: set[str] = set()
        self.watchers: list[Watcher] = []
        self.storm_started: float | None = None
        self.storm_cpu = 0.0  # this process's CPU time when the storm began
        self.launched = False
        self.waiting_for = 0  # clients that connected (one that never did counts as not delivered)
        self.complete = 0
        self.all_done = asyncio.Event()
        self.deltas_unapplied = 0
        self.update_bytes: list[int] = []       # a progress update's object as sent (delta or full)
        self.update_full_bytes: list[int] = []  # the full task object it stands for
        self.first_sightings = 0  # progress of a task the client had no copy of yet (whole by need)
        self.first_sighting_bytes: list[int] = []  # those updates as sent
        self.storm_started_epoch = 0.0
        self.message_bytes: list[int] = []  # a "tasks" message on the wire (engine.io packet)

    def got_terminal(self, watcher: Watcher) -> None:
        if self.launched and watcher.done == len(self.expected):
            self.complete += 1
            if self.complete >= self.waiting_for:
                self.all_done.set()

    def note_update(self, sent: dict[str, Any], full: dict[str, Any], first: bool = False) -> None:
        """A sampled client got a task's progress (not an ending): `sent` as it came (a delta or the
        whole object), `full` the object it stands for. `first`: the client held no copy of the task,
        so only the whole object could serve (its launch and its first progress in one batch): counted
        apart, not as an update that could have been a delta."""
        if full.get("state") in TERMINAL or not full.get("progress"):
            return
        if first:
            self.first_sightings += 1
            self.first_sighting_bytes.append(len(json.dumps(sent, separators=(",", ":"))))
            return
        self.update_bytes.append(len(json.dumps(sent, separators=(",", ":"))))
        self.update_full_bytes.append(len(json.dumps(full, separators=(",", ":"))))


def _ms_percentiles(values: list[float], keys: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> dict[str, Any]:
    histogram: dict[int, int] = {}
    for value in values:
        histogram[int(value)] = histogram.get(int(value), 0) + 1
    found = histogram_percentiles(histogram, tuple(k for k in keys if k != "max"))
    return {k: found.get(k) for k in keys} | {"max": found.get("max"), "n": found.get("n", 0)}


def lag_split(watchers: list[Watcher], expected: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lag of every (client, task) in two parts, as ms percentiles: ({"p50", "p95", "p99", "max", "n"}
    of each task's `finished` to the first client that had its terminal state, one value per task;
    the same of each client's receipt after that first one, one value per client and task)."""
    first: dict[str, tuple[float, float]] = {}  # task id -> (first receipt, its lag ms)
    for watcher in watchers:
        for task_id, at in watcher.ended_at.items():
            if task_id in expected and watcher.ended.get(task_id, -1.0) >= 0 and at < first.get(task_id, (1e18, 0))[0]:
                first[task_id] = (at, watcher.ended[task_id])
    after = [(at - first[task_id][0]) * 1000 for watcher in watchers for task_id, at in watcher.ended_at.items()
             if task_id in first and watcher.ended.get(task_id, -1.0) >= 0]
    return _ms_percentiles([lag for _, lag in first.values()]), _ms_percentiles(after)


async def _csrf(http: aiohttp.ClientSession, base_url: str) -> str | None:
    async with http.get(f"{base_url}/") as page:
        found = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
    return found[1] if found else None


async def _storm(run: Run, http: aiohttp.ClientSession, base_url: str, post_headers: dict[str, str], tasks: int,
                 steps: int, timeout: float, ids: list[str], launch_ms: list[float]) -> str:
    """Launch the storm's tasks one POST at a time, then wait for every client's terminal states;
    "complete" or "timeout". Raises RuntimeError when a launch is refused."""
    run.storm_started, run.storm_cpu = time.monotonic(), time.process_time()
    run.storm_started_epoch = time.time()
    for _ in range(tasks):
        t0 = time.monotonic()
        launch = {"task": "steps", "params": {"steps": steps, "delay": 0}, "duplicate": True}
        async with http.post(f"{base_url}/api/tasks", json=launch, headers=post_headers) as answer:
            body = await answer.json()
        if answer.status >= 300:
            await leave_all([w.sio for w in run.watchers])
            raise RuntimeError(f"launch refused ({answer.status}): {body}")
        launch_ms.append((time.monotonic() - t0) * 1000)
        ids.append(body["id"])
        run.expected.add(body["id"])
    run.launched = True
    for watcher in run.watchers:  # terminal states that came before their id was known
        watcher.done = sum(1 for i in ids if watcher.ended.get(i, -1.0) >= 0)
        run.got_terminal(watcher)
    try:
        await asyncio.wait_for(run.all_done.wait(), timeout)
        return "complete"
    except TimeoutError:
        return "timeout"


async def _measure(base_url: str, clients: int, tasks: int, steps: int, cookies: dict | None,
                   timeout: float, on_storm: Callable[[], Any] | None, collector: bool) -> dict[str, Any]:
    base_url = base_url.rstrip("/")
    run = Run()
    run.watchers = [Watcher(run, sampled=i in (0, clients - 1)) for i in range(clients)]
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
    gate = asyncio.Semaphore(CONNECT_GATE)
    errors: list[str] = []

    async def connect(watcher: Watcher) -> None:
        async with gate:
            try:
                await watcher.sio.connect(base_url, transports=["websocket"], headers=headers, wait_timeout=30,
                                          auth={"deltas": True})
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc)[:200])

    started = time.monotonic()
    *first, last = run.watchers
    await asyncio.gather(*(connect(w) for w in first))
    await asyncio.sleep(0.2)
    await connect(last)  # joins after every other client
    connect_s = time.monotonic() - started
    connected = run.waiting_for = sum(1 for w in run.watchers if w.sio.connected)
    await asyncio.sleep(1.0)  # the snapshots are in

    ids: list[str] = []
    launch_ms: list[float] = []
    async with aiohttp.ClientSession(cookies=cookies or {}) as http:
        post_headers = {"Origin": base_url}
        if cookies:
            token = await _csrf(http, base_url)
            if token:
                post_headers["X-CSRFToken"] = token
        storm_over = on_storm() if on_storm is not None else None
        with contextlib.nullcontext() if collector else collector_paused():
            stopped_by = await _storm(run, http, base_url, post_headers, tasks, steps, timeout, ids, launch_ms)
    storm_s = time.monotonic() - run.storm_started
    own_cpu = time.process_time() - run.storm_cpu
    storm_ended_epoch = time.time()

    lags = [lag for w in run.watchers for lag in w.lags()]
    delivered = sum(w.done for w in run.watchers)
    tick = tick_s()
    tick_stats = histogram_percentiles(per_tick_windows((w.message_times for w in run.watchers),
                                                        run.storm_started, tick))
    split = lag_split(run.watchers, run.expected)
    gaps = [(b - a) * 1000 for w in run.watchers for a, b in zip(w.message_times, w.message_times[1:], strict=False)]
    # Exactly, where the server numbers its batches (ours): messages per client per server batch.
    per_batch = [max(Counter(w.batch_numbers).values()) for w in run.watchers if w.batch_numbers]
    messages = sum(len(w.message_times) for w in run.watchers)

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 1) if values else None

    result = {
        "clients": clients, "client_collector": "on" if collector else "paused",
        "connected": connected, "connect_errors": errors[:5], "connect_s": round(connect_s, 2),
        "tasks": {"launched": len(ids), "steps": steps, "launch_ms_mean": mean([int(v) for v in launch_ms]),
                  "storm_s": round(storm_s, 2), "stopped_by": stopped_by,
                  # The storm's own wall-clock bounds (epoch s), for the server's CPU over it
                  # (bench.relays.one_round): the clients leave only after these.
                  "started_epoch": run.storm_started_epoch, "ended_epoch": storm_ended_epoch},
        # This process's CPU over the storm, as a share of one core: near 100, the clients are the bottleneck.
        "client_process_cpu_pct": round(100 * own_cpu / max(storm_s, 1e-9), 1),
        "delivered_pct": round(100 * delivered / (clients * len(ids)), 2) if ids else 0.0,
        "lag_ms": _ms_percentiles(lags),
        "last_joiner_lag_ms": _ms_percentiles(last.lags()),
        # Our server takes turns in its send order (web.sockets), so the last joiner is not always
        # served last: the worst client's own p99 stands beside it.
        "worst_client_p99_ms": max((_ms_percentiles(w.lags()).get("p99") or 0.0 for w in run.watchers
                                    if w.lags()), default=None),
        # Where the lag is spent: from `finished` until the first client had the terminal state (the
        # event's way in, the wait for the tick, the store, the emit), then from the first client to
        # each other one (the sends to every client, and this one client process reading them all).
        "lag_to_first_client_ms": split[0],
        "lag_after_first_client_ms": split[1],
        # The time between two messages to one client, as received: the server sends a batch per tick at
        # most, so gaps under one tick are jitter (of the sends, or of this process's reading).
        "message_gap_ms": {k: v for k, v in _ms_percentiles(gaps, ("p1", "p10", "p50")).items() if k != "max"},
        "messages_per_client_per_tick": {"p99": tick_stats.get("p99"), "max": tick_stats.get("max"),
                                         "tick_s": tick},
        "messages_per_client_per_batch_max": max(per_batch) if per_batch else None,
        # The server's batches per second as the first client received them: the distinct batches
        # after the first over the time from the first to the last (n batches span n - 1 ticks; a
        # count over the storm's whole length, as before, said 1.5 per tick for a short storm).
        "batches_per_second": batch_rate(run.watchers[0]) if run.watchers else None,
        "messages_per_client": round(messages / max(1, clients), 1),
        "bytes_per_progress_update": {"mean": mean(run.update_bytes), "full_mean": mean(run.update_full_bytes),
                                      "n": len(run.update_bytes), "first_sightings": run.first_sightings,
                                      # every progress update as sent, first sightings (whole) included
                                      "all_mean": mean(run.update_bytes + run.first_sighting_bytes),
                                      "all_n": len(run.update_bytes) + len(run.first_sighting_bytes)},
        "bytes_per_message_mean": mean(run.message_bytes),
        "deltas_unapplied": run.deltas_unapplied,
        "reconnects": sum(max(0, w.reconnects) for w in run.watchers),
    }

    if callable(storm_over):
        result.update(storm_over() or {})
    await leave_all([w.sio for w in run.watchers])
    return result


async def leave_all(clients: list[socketio.AsyncClient]) -> None:
    """Disconnect every client, 100 at a time, each given 5 s."""
    gate = asyncio.Semaphore(100)

    async def leave(sio: socketio.AsyncClient) -> None:
        async with gate:
            try:
                await asyncio.wait_for(sio.disconnect(), 5)
            except Exception:  # noqa: BLE001 - leaving anyway
                pass

    await asyncio.gather(*(leave(c) for c in clients))


def measure(base_url: str, clients: int, *, tasks: int = 40, steps: int = 250, cookies: dict | None = None,
            timeout: float = 120.0, on_storm: Callable[[], Any] | None = None, collector: bool = False) -> dict:
    """Run one storm against a running web at `base_url` with `clients` Socket.IO clients in this process.

    Returns {"clients", "delivered_pct" (terminal states received over clients x tasks, %),
    "lag_ms" and "last_joiner_lag_ms" ({"p50", "p95", "p99", "max", "n"}: ms from a task's
    `finished` to a client receiving its terminal state), "lag_to_first_client_ms" and
    "lag_after_first_client_ms" (the same shape: see `lag_split`), "message_gap_ms" ({"p1", "p10",
    "p50", "n"}: between two messages to one client), "messages_per_client_per_tick" ({"p99",
    "max", "tick_s"}), "bytes_per_progress_update" ({"mean": as sent, "full_mean": the full task
    object, bytes of compact JSON, "n": such updates to a task the sampled client held, "first_sightings":
    progress in the first object a sampled client got of a task, left out of the means}),
    "tasks" ({"launched", "steps", "storm_s", "stopped_by", ...}),
    and a few counters (connected, reconnects, deltas_unapplied, ...)}. `timeout`: seconds after
    the last launch to wait for every terminal state. Needs a Celery worker serving `steps`.
    Raises RuntimeError when a launch is refused. `on_storm` is called just before the first launch
    (to start a profiler, a CPU meter); it may return a function, called when the storm is over,
    whose dict is added to the result. `collector`: leave this process's garbage collector on during
    the storm, as Python runs by default (else it is paused: bench.common.collector_paused).
    """
    return asyncio.run(_measure(base_url, clients, tasks, steps, cookies, timeout, on_storm, collector))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[500])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--url", help="a running web process (default: start redis, a worker and the web)")
    parser.add_argument("--pid", type=int, help="the web process's pid (with --url): its CPU time is reported")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between two storms")
    parser.add_argument("--collector", action="store_true",
                        help="leave the clients' garbage collector on during each storm (Python's default)")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy the web process and this one for --profile-seconds from the first launch "
                             "(raw flamegraph files in DIR, web-<clients>.txt and clients-<clients>.txt)")
    parser.add_argument("--profile-seconds", type=int, default=4)
    args = parser.parse_args()
    stack = None
    url, pid = args.url, args.pid
    if url is None:
        from devstack import Stack

        stack = Stack(env={"MAX_CONNECTIONS": str(max(args.clients) + 100)})
        stack.start_redis()
        stack.start_worker()
        url = stack.start_web()
        pid = stack.web(url).pid
        print(json.dumps({"web_pid": pid, "url": url}), file=sys.stderr, flush=True)
    try:
        for i, clients in enumerate(args.clients):
            if i:
                time.sleep(args.pause)
            spies: list[subprocess.Popen] = []

            def on_storm(clients: int = clients, spies: list = spies) -> Callable[[], dict] | None:
                start = cpu_seconds(pid) if pid else 0.0
                if args.profile and pid:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    for name, target in (("web", pid), ("clients", os.getpid())):
                        spies.append(subprocess.Popen(
                            [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "-r", "100",
                             "-f", "raw", "-d", str(args.profile_seconds), "-o",
                             f"{args.profile}/{name}-{clients}.txt", "--pid", str(target)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                # The web's CPU seconds from the first launch to the last terminal state received.
                return (lambda: {"web_cpu_s": round(cpu_seconds(pid) - start, 2)}) if pid else None

            result = measure(url, clients, tasks=args.tasks, steps=args.steps, timeout=args.timeout,
                             on_storm=on_storm, collector=args.collector)
            for spy in spies:
                spy.wait(args.profile_seconds + 30)
            print(json.dumps(result), flush=True)
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    main()
