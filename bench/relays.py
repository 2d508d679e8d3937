"""Fan-out: our web process, the naive relay and the message-queue baseline, each watched by 1 to
1,000 Socket.IO clients in one client process during a storm of real tasks (bench/fanout.measure:
lag over ALL clients and for the client that joined last, messages per client per tick, bytes per
progress update). One relay runs at a time; the real Celery worker runs the storm's tasks.

Then the measuring client's floor (bench/client_floor.py): the same client counts receive messages of
our rounds' mean size, one per tick, from a bare Flask-SocketIO server that does nothing else."""
from __future__ import annotations

import time
import traceback
from typing import Any

from bench import baselines, client_floor, fanout
from bench.common import memory_mb, tick_s, wait_idle
from bench.harness import CpuSampler, Profile, Run, log

RELAYS = ("ours", "naive", "mq")


def measure(run: Run) -> dict[str, Any]:
    """{"settings", "rounds": [{"relay" ("ours", "naive", "mq"; "ours-collector": ours again with the
    clients' garbage collector on, at the `collector_on_clients` counts), "clients",
    <bench.fanout.measure's result>, "server_cpu", "server_rss_mb"} or {"relay", "clients", "error" |
    "skipped"}], "client_floor": [<bench.client_floor.measure's result> or {"clients", "error"}], one
    per round of ours}."""
    cfg = run.p["fanout"]
    run.ensure_worker()
    rounds: list[dict[str, Any]] = []
    ours_stopped = False
    try:
        for relay_name in RELAYS:
            if relay_name != "ours" and not ours_stopped:
                # Our web would take in the baselines' storms' events beside them, on the same 2 cores:
                # a load only the baselines would carry. It is stopped for their rounds.
                run.stop_web()
                ours_stopped = True
            _relay_rounds(run, cfg, relay_name, rounds)
    finally:
        if ours_stopped:
            run.start_web()
    return {"settings": cfg, "rounds": rounds, "client_floor": floor(run, rounds)}


def _relay_rounds(run: Run, cfg: dict[str, Any], relay_name: str, rounds: list[dict[str, Any]]) -> None:
    """The rounds of one relay (each of its client counts), appended to `rounds`."""
    counts = cfg["clients"] if relay_name == "ours" else cfg["baseline_clients"]
    if run.remaining() < cfg["reserve_s"]:
        rounds += [{"relay": relay_name, "clients": n, "skipped": "time budget"} for n in counts]
        return
    relay = baselines.start(run, relay_name)
    try:
        # A short storm first, not counted: the worker's processes and the relay's first connections
        # warm up (the message-queue worker imports Flask-SocketIO at its first emit).
        fanout.measure(relay.url, 1, tasks=4, steps=5, timeout=15)
        for clients in counts:
            if run.remaining() < cfg["reserve_s"]:
                rounds.append({"relay": relay_name, "clients": clients, "skipped": "time budget"})
                continue
            log(f"  fan-out {relay_name} x {clients} clients")
            rounds.append(one_round(run, relay, clients))
            report(rounds[-1])
            wait_idle(relay.pid, timeout=10)
        if relay_name == "ours":  # the figure that does not flatter, beside: as Python runs by default
            for clients in cfg.get("collector_on_clients") or []:
                if run.remaining() < cfg["reserve_s"]:
                    continue
                log(f"  fan-out ours x {clients} clients, the clients' garbage collector on")
                rounds.append({**one_round(run, relay, clients, collector=True), "relay": "ours-collector"})
                report(rounds[-1])
                wait_idle(relay.pid, timeout=10)
    finally:
        if relay_name != "ours":
            relay.stop()


def floor(run: Run, rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client floor at each of our rounds' client count and mean message size (bench.client_floor)."""
    ours = [r for r in rounds if r.get("relay") == "ours" and r.get("bytes_per_message_mean")]
    if not ours:
        return []
    proc, url = run.start_relay("bench.client_floor")
    found = []
    try:
        for r in ours:
            log(f"  client floor x {r['clients']} clients, {r['bytes_per_message_mean']:.0f} B per message")
            try:
                found.append(client_floor.measure(url, r["clients"], int(r["bytes_per_message_mean"]),
                                                  tick=tick_s()))
            except Exception as exc:  # noqa: BLE001 - recorded, the next count still runs
                found.append({"clients": r["clients"], "error": f"{type(exc).__name__}: {exc}"})
            wait_idle(proc.pid, timeout=10)
    finally:
        proc.stop()
    return found


def report(r: dict[str, Any]) -> None:
    log(f"    delivered {r.get('delivered_pct')}%, lag {r.get('lag_ms')}, last joiner "
        f"{r.get('last_joiner_lag_ms')}, server cpu {r.get('server_cpu')}")


HISTORY = 200  # tasks of history before each of our rounds: the web's SNAPSHOT_LIMIT, a full snapshot


def top_up_history(redis_url: str, url: str, tasks: int = HISTORY, timeout: float = 60.0) -> int:
    """Launch real `steps` tasks (one step, no delay) through the web at `url` until the history in
    the Redis at `redis_url` holds `tasks`, and wait until those launched have ended: every client
    of the next round then gets a full snapshot, as on any dashboard in use (the rounds used to
    start from whatever earlier steps had left: a 1,000-client round took 4.5 s to connect on an
    empty history and 14 s on 200-300 tasks, the breaker's count). Only its own tasks are waited
    for: a task another step left unfinished (a baseline's, whose end our listener never saw) must
    not hold the round. Returns the tasks launched; after `timeout` s it logs what is still
    unfinished and returns."""
    import redis
    import requests

    from celery_dashboard.index import ACTIVE_KEY, RECENT_KEY

    client = redis.Redis.from_url(redis_url)
    ids: list[str] = []
    body = {"task": "steps", "params": {"steps": 1, "delay": 0}, "duplicate": True}
    with requests.Session() as http:
        for _ in range(max(0, tasks - int(client.zcard(RECENT_KEY)))):
            answer = http.post(f"{url}/api/tasks", json=body, headers={"Origin": url}, timeout=10)
            answer.raise_for_status()
            ids.append(answer.json()["id"])
    launched = len(ids)
    deadline = time.monotonic() + timeout
    while ids:
        ids = [i for i, active in zip(ids, client.smismember(ACTIVE_KEY, ids), strict=True) if active]
        if ids and time.monotonic() > deadline:
            log(f"  history top-up: {len(ids)} of its tasks still unfinished after {timeout:.0f} s")
            break
        time.sleep(0.2)
    return launched


def one_round(run: Run, relay: baselines.Relay, clients: int, collector: bool = False) -> dict[str, Any]:
    cfg = run.p["fanout"]
    if relay.name == "ours":
        top_up_history(run.stack.redis_url, relay.url, cfg.get("history", HISTORY))
        wait_idle(relay.pid, timeout=10)
    profile = None
    if run.profile and relay.name == "ours" and clients == max(cfg["clients"]):
        profile = Profile(relay.pid, 20, f"web-fanout-{clients}", run.out)
    try:
        with CpuSampler(relay.pid) as sampler, CpuSampler(None) as machine:
            t0 = time.time()
            result = fanout.measure(relay.url, clients, tasks=cfg["tasks"], steps=cfg["steps"],
                                    timeout=cfg["timeout_s"], collector=collector)
            t1 = time.time()
            # The storm's own bounds: fanout.measure returns after its clients have left, which is
            # not the storm's work (the bench review found the window ending there).
            storm = result.get("tasks") or {}
            start, end = storm.get("started_epoch") or t0, storm.get("ended_epoch") or t1
            result["server_cpu"] = sampler.window(start, end)
            result["machine_cpu"] = machine.window(start, end)
            result["server_rss_mb"] = {"peak_during": sampler.peak_rss, **memory_mb(relay.pid)}
    except Exception as exc:  # noqa: BLE001 - recorded, the next round still runs
        (run.logdir / f"error-fanout-{relay.name}-{clients}.txt").write_text(traceback.format_exc())
        return {"relay": relay.name, "clients": clients, "error": f"{type(exc).__name__}: {exc}"}
    if profile:
        run.profiles[profile.name] = profile.summary()
    return {"relay": relay.name, **result}
