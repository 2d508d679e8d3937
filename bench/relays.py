"""Fan-out: our web process, the naive relay and the message-queue baseline, each watched by 1 to
1,000 Socket.IO clients in one client process during a storm of real tasks (bench/fanout.measure:
lag over ALL clients and for the client that joined last, messages per client per tick, bytes per
progress update). One relay runs at a time; the real Celery worker runs the storm's tasks."""
from __future__ import annotations

import time
import traceback
from typing import Any

from bench import baselines, fanout
from bench.common import memory_mb, wait_idle
from bench.harness import CpuSampler, Profile, Run, log

RELAYS = ("ours", "naive", "mq")


def measure(run: Run) -> dict[str, Any]:
    """{"settings", "rounds": [{"relay", "clients", <bench.fanout.measure's result>, "server_cpu",
    "server_rss_mb"} or {"relay", "clients", "error" | "skipped"}]}."""
    cfg = run.p["fanout"]
    run.ensure_worker()
    rounds: list[dict[str, Any]] = []
    for relay_name in RELAYS:
        counts = cfg["clients"] if relay_name == "ours" else cfg["baseline_clients"]
        if run.remaining() < cfg["reserve_s"]:
            rounds += [{"relay": relay_name, "clients": n, "skipped": "time budget"} for n in counts]
            continue
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
                r = rounds[-1]
                log(f"    delivered {r.get('delivered_pct')}%, lag {r.get('lag_ms')}, last joiner "
                    f"{r.get('last_joiner_lag_ms')}, server cpu {r.get('server_cpu')}")
                wait_idle(relay.pid, timeout=10)
        finally:
            if relay_name != "ours":
                relay.stop()
    return {"settings": cfg, "rounds": rounds}


def one_round(run: Run, relay: baselines.Relay, clients: int) -> dict[str, Any]:
    cfg = run.p["fanout"]
    profile = None
    if run.profile and relay.name == "ours" and clients == max(cfg["clients"]):
        profile = Profile(relay.pid, 20, f"web-fanout-{clients}", run.out)
    try:
        with CpuSampler(relay.pid) as sampler, CpuSampler(None) as machine:
            t0 = time.time()
            result = fanout.measure(relay.url, clients, tasks=cfg["tasks"], steps=cfg["steps"],
                                    timeout=cfg["timeout_s"])
            t1 = time.time()
            storm_s = (result.get("tasks") or {}).get("storm_s") or 0
            result["server_cpu"] = sampler.window(t1 - storm_s, t1) if storm_s else sampler.window(t0, t1)
            result["machine_cpu"] = machine.window(t1 - storm_s, t1) if storm_s else machine.window(t0, t1)
            result["server_rss_mb"] = {"peak_during": sampler.peak_rss, **memory_mb(relay.pid)}
    except Exception as exc:  # noqa: BLE001 - recorded, the next round still runs
        (run.logdir / f"error-fanout-{relay.name}-{clients}.txt").write_text(traceback.format_exc())
        return {"relay": relay.name, "clients": clients, "error": f"{type(exc).__name__}: {exc}"}
    if profile:
        run.profiles[profile.name] = profile.summary()
    return {"relay": relay.name, **result}
