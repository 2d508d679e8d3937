"""The load benchmark: our web process side by side with a naive relay (and Flower, and `.delay()`).

    python -m bench.run            # full run, about 7-8 minutes on a 2-core machine
    python -m bench.run --quick    # CI, under a minute: a few clients, small ingest, 5,000 tasks;
                                   # checks that every step ran and produced numbers (exit status 1
                                   # if not), not timings; writes under bench/results/quick/

Starts a private redis-server, a Celery worker, our web process (`python serve.py`), the naive
relay (bench/naive_relay.py) and, for ingest and memory, Flower; the load comes from synthetic
workers (bench/storm.py) and Socket.IO client swarms (bench/swarm.py) in their own processes.
Measures, in one run:

1. idle latency from a worker's progress call to a connected client (a real worker task);
2. fan-out at 1/100/500/1,000 clients during a storm of ~3,000 task events/s;
3. ingest: the highest event rate the listener keeps up with losing nothing, against Flower;
4. launch throughput: POST /api/tasks against a plain `.delay()` loop;
5. memory with 100,000 tasks in history, against Flower; and the progress throttle's cost.

Writes bench/results/report.md, report.json and report.png. Exits 1 if a step produced no numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench import report
from bench.common import (
    RESULTS,
    SYNTHETIC,
    cpu_seconds,
    db_url,
    histogram_percentiles,
    machine_busy_seconds,
    memory_mb,
    merge_histograms,
    percentiles,
    reset_history,
    runqueue_wait_seconds,
    wait_idle,
    write_json,
)
from tests.support import BIN, ROOT, Process, Stack, free_port, wait_for

PYTHON = str(BIN / "python")
NAIVE_DB = 1      # the naive relay's storms go to another logical database: each relay sees only its own
THROTTLE_DB = 2   # the throttle loop's reports stay out of both

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "budget_s": 575,
        "latency": [{"name": "every 250 ms", "tasks": 4, "steps": 12, "delay": 0.25},
                    {"name": "at the throttle's top rate", "tasks": 4, "steps": 20, "delay": 0.1}],
        "fanout": {"clients": [1, 100, 500, 1000], "tasks": 40, "steps": 250, "rate": 3000,
                   "ours_drain_s": 30, "naive_drain_s": 60},
        "throttle": {"calls": 1_000_000, "repeats": 3},
        "launch": {"requests": 2000, "concurrency": 16, "delay_calls": 2000},
        "ingest": {"rates": [5000, 10000, 15000, 20000, 25000, 30000, 0], "web_alone": [20000, 30000, 40000],
                   "flower_alone": [5000, 10000, 15000], "seconds": 4, "max_events": 160_000, "progress": 10},
        "memory": {"tasks": 100_000, "rate": 6_000},
    },
    "quick": {
        "budget_s": 110,
        "latency": [{"name": "every 250 ms", "tasks": 1, "steps": 8, "delay": 0.25},
                    {"name": "at the throttle's top rate", "tasks": 1, "steps": 10, "delay": 0.1}],
        "fanout": {"clients": [1, 20], "tasks": 20, "steps": 50, "rate": 3000,
                   "ours_drain_s": 15, "naive_drain_s": 15},
        "throttle": {"calls": 100_000, "repeats": 1},
        "launch": {"requests": 200, "concurrency": 8, "delay_calls": 200},
        "ingest": {"rates": [5000, 0], "web_alone": [10000], "flower_alone": [5000], "seconds": 1,
                   "max_events": 20_000, "progress": 10},
        "memory": {"tasks": 5_000, "rate": 10_000},
    },
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# ---- small pieces ----------------------------------------------------------------------------

class CpuSampler:
    """Samples a process's CPU time, run-queue wait and RSS every `interval` s (pid None: the whole
    machine's busy time), to read any window afterwards."""

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float]] = []  # wall time, CPU s, wait s (machine: total s)
        self.peak_rss = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.pid is None:
                    self.samples.append((time.time(), *machine_busy_seconds()))
                else:
                    self.samples.append((time.time(), cpu_seconds(self.pid), runqueue_wait_seconds(self.pid)))
                    self.peak_rss = max(self.peak_rss, memory_mb(self.pid).get("rss", 0.0))
            except OSError:
                return
            self.stopped.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join(2)

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """Between two wall-clock times (nearest samples): CPU as % of one core, and the share of the
        time spent runnable but waiting for a CPU (machine: busy % of all cores)."""
        if len(self.samples) < 2 or end <= start:
            return None
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        wall = last[0] - first[0]
        if wall <= 0:
            return None
        if self.pid is None:
            busy, total = last[1] - first[1], last[2] - first[2]
            return {"wall_s": round(wall, 2), "busy_percent_of_all_cores": round(100 * busy / total, 1)
                    if total else None}
        return {"cpu_s": round(last[1] - first[1], 2), "wall_s": round(wall, 2),
                "percent_of_core": round(100 * (last[1] - first[1]) / wall, 1),
                "waiting_for_cpu_percent": round(100 * (last[2] - first[2]) / wall, 1)}


class LineReader:
    """Reads a child's stdout lines in a thread, keeping the JSON ones."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self.thread.start()

    def _run(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except json.JSONDecodeError:
                    pass

    def get(self, key: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if key in line:
                return line
        return None


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """End a child this benchmark started, by its own pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def healthz(url: str, timeout: float = 5.0) -> dict[str, Any]:
    return requests.get(f"{url}/healthz", timeout=timeout).json()


def listener_events(url: str) -> int:
    return int(healthz(url)["listener"]["events"])


def flower_events(url: str, worker: str = SYNTHETIC, kind: str | None = None) -> int:
    """Task events Flower has processed for one worker (its Prometheus counter)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("flower_events_total{") and f'worker="{worker}"' in line:
            if kind is None or f'type="{kind}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


def send_probe(hostname: str = "bench@probe", url: str | None = None) -> None:
    """One worker-heartbeat event (on the broker, or `url`), to see that a listener is subscribed."""
    from tasks.celery_app import celery_app

    with celery_app.connection_for_write(url) as connection:
        dispatcher = celery_app.events.Dispatcher(connection, hostname=hostname)
        dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0, loadavg=[0.0, 0.0, 0.0],
                        sw_ident="bench", sw_ver="0", sw_sys="Linux")
        dispatcher.close()


def flower_knows_probe(url: str) -> bool:
    """Flower counts only task events; a worker event shows up as that worker's online gauge."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return 'flower_worker_online{worker="bench@probe"}' in text


def wait_subscribed(check: Callable[[], bool], timeout: float = 30.0, what: str = "listener",
                    url: str | None = None) -> None:
    """Send probe events until `check` says the listener got one."""

    def seen() -> bool:
        send_probe(url=url)
        time.sleep(0.2)
        return check()

    wait_for(seen, timeout, 0.3, what=f"{what} subscribed")


class Profile:
    """py-spy sampling a process for a while (--profile), summarised by function."""

    def __init__(self, pid: int, seconds: float, name: str, folder: Path = RESULTS) -> None:
        self.name = name
        self.path = folder / f"profile-{name}.txt"
        self.proc = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", "100", "--format", "raw", "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self, top: int = 15) -> dict[str, Any]:
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            stop_child(self.proc)
        if not self.path.exists():
            return {"error": "py-spy wrote nothing"}
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n

        def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
            best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            return [(frame, round(100 * n / total, 1)) for frame, n in best]

        return {"file": self.path.name, "samples": total, "self_percent": ranked(own),
                "inclusive_percent": ranked(inclusive)}


def code_version() -> str:
    """The commit measured, and whether the product's files had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "web", "tasks", "serve.py", "static"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' with uncommitted changes in web/ or tasks/' if dirty else ''}"


# ---- the benchmark -------------------------------------------------------------------------------

class Bench:
    def __init__(self, profile: str) -> None:
        self.name = profile
        self.p = PROFILES[profile]
        self.started = time.monotonic()
        self.results: dict[str, Any] = {"profile": profile}
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        # The quick mode writes beside the full report, never over it.
        self.out = RESULTS if profile == "full" else RESULTS / profile
        self.work = self.out / "work"
        self.logdir = self.out / "logs"
        for folder in (self.work, self.logdir):  # this run's files only
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.stack = Stack(logdir=self.logdir, env={"HISTORY_LIMIT": "200000"})
        self.extra: list[Process] = []
        self.naive: tuple[Process, str] | None = None
        self.flower: tuple[Process, str] | None = None
        self.only: set[str] | None = None
        self.profile = False  # --profile: py-spy on the web process during the heaviest loads
        self.profiles: dict[str, Any] = {}

    # -- time -------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.p["budget_s"] - (time.monotonic() - self.started)

    def step(self, name: str, fn: Callable[[], Any]) -> None:
        log(f"step {name} ({self.remaining():.0f} s of budget left)")
        start = time.monotonic()
        try:
            self.results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken step must not lose the others
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            (self.logdir / f"error-{name}.txt").write_text(traceback.format_exc())
            log(f"step {name} failed: {exc!r}")
        self.timings[name] = round(time.monotonic() - start, 1)
        log(f"step {name} done in {self.timings[name]} s")

    # -- processes ----------------------------------------------------------------------------

    @property
    def web_url(self) -> str:
        return self.stack.url

    @property
    def web_pid(self) -> int:
        return self.stack.web(self.web_url).pid

    def start_naive(self, db: int) -> None:
        if self.naive:
            self.naive[0].stop()
        port = free_port()
        env = dict(self.stack.env, REDIS_URL=db_url(self.stack.redis_url, db))
        proc = Process(f"naive-{port}", [PYTHON, "-m", "bench.naive_relay", "--port", str(port)], env, self.logdir)
        self.extra.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, what="naive relay")
        wait_for(lambda: "listening for Celery events" in proc.output(), 30, what="naive listener")
        self.naive = (proc, url)

    def start_flower(self, name: str, db: int = 0) -> None:
        if self.flower:
            self.flower[0].stop()
        port = free_port()
        broker = db_url(self.stack.redis_url, db)
        env = dict(self.stack.env, REDIS_URL=broker, FLOWER_ADDRESS="127.0.0.1", FLOWER_UNAUTHENTICATED_API="true")
        proc = Process(name, [str(BIN / "celery"), "-A", "tasks.celery_app", "flower", f"--port={port}",
                              "--address=127.0.0.1"], env, self.logdir)
        self.extra.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthcheck", timeout=2).status_code == 200, 60, what="flower")
        self.flower = (proc, url)
        wait_subscribed(lambda: flower_knows_probe(url), 30, "flower", url=broker)

    def start(self) -> None:
        self.stack.start_redis()
        os.environ["REDIS_URL"] = self.stack.redis_url  # before anything imports tasks.*
        self.stack.start_worker()
        self.stack.start_web()
        self.start_naive(0)
        base = listener_events(self.web_url)
        wait_subscribed(lambda: listener_events(self.web_url) > base, 30, "web listener")

    def stop(self) -> None:
        for proc in reversed(self.extra):
            proc.stop()
        self.stack.stop()

    # -- 1. idle latency ------------------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        """Two idle regimes: one task reporting every 250 ms, and one at the throttle's top rate
        (a report every PROGRESS_INTERVAL), where the relay's token bucket paces the pushes."""
        from bench.latency import socket_client_latency

        assert self.naive
        out: dict[str, Any] = {"regimes": []}
        for cfg in self.p["latency"]:
            regime: dict[str, Any] = {"settings": cfg}
            for name, url in (("ours", self.web_url), ("naive", self.naive[1])):
                regime[name] = percentiles(socket_client_latency(url, cfg["tasks"], steps=cfg["steps"],
                                                                 delay=cfg["delay"]))
            out["regimes"].append(regime)
        return out

    # -- 2. fan-out -------------------------------------------------------------------------------

    def fanout_round(self, relay: str, url: str, pid: int, clients: int, storm_db: int,
                     drain_s: float) -> dict[str, Any]:
        """One storm with `clients` connected. From 100 clients on, one of them is a probe in a process
        of its own: the swarm processes share the 2 cores with the server, the probe is never starved
        by its neighbours, so its lag is what the server delivers."""
        cfg = self.p["fanout"]
        tag = f"{relay}-{clients}"
        ids = [str(uuid.uuid4()) for _ in range(cfg["tasks"])]
        ids_file = self.work / f"ids-{tag}.json"
        ids_file.write_text(json.dumps(ids))
        probe = clients >= 100
        rest = clients - probe
        sizes = [rest // 2, rest - rest // 2] if clients >= 500 else [rest]
        sizes = ([1] if probe else []) + sizes
        storm_s = cfg["tasks"] * (cfg["steps"] + 4) / cfg["rate"]
        swarms: list[tuple[subprocess.Popen, LineReader, Path]] = []
        env = dict(self.stack.env)
        try:
            for i, size in enumerate(sizes):
                out = self.work / f"swarm-{tag}-{i}.json"
                out.unlink(missing_ok=True)
                errlog = open(self.logdir / f"swarm-{tag}-{i}.log", "wb")  # noqa: SIM115 - child owns it
                proc = subprocess.Popen(
                    [PYTHON, "-m", "bench.swarm", "--url", url, "--clients", str(size), "--ids-file", str(ids_file),
                     "--out", str(out), "--max-wait", str(storm_s + drain_s + 60)],
                    cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True)
                errlog.close()
                swarms.append((proc, LineReader(proc), out))
            ready = [reader.get("ready", 120) for _, reader, _ in swarms]
            if any(r is None for r in ready):
                raise RuntimeError(f"swarm did not get ready: {ready}")
            time.sleep(1.0)
            try:
                seen_clients = healthz(url)["clients"]
                events_before = listener_events(url)
            except (requests.RequestException, KeyError):
                seen_clients, events_before = None, None
            memory_before = memory_mb(pid)
            storm_env = dict(env, REDIS_URL=db_url(self.stack.redis_url, storm_db))
            samplers = [CpuSampler(proc.pid) for proc, _, _ in swarms] + [CpuSampler(None)]
            for swarm_sampler in samplers:
                swarm_sampler.__enter__()
            profile = None
            if self.profile and relay == "ours" and clients == max(self.p["fanout"]["clients"]):
                profile = Profile(pid, storm_s + 1, f"web-fanout-{clients}", self.out)
            with CpuSampler(pid) as sampler:
                storm_run = subprocess.run(
                    [PYTHON, "-m", "bench.storm", "rate", "--ids-file", str(ids_file), "--steps", str(cfg["steps"]),
                     "--rate", str(cfg["rate"]), "--max-seconds", str(storm_s * 3 + 10)],
                    cwd=ROOT, env=storm_env, capture_output=True, text=True, timeout=storm_s * 3 + 40)
                storm = json.loads(storm_run.stdout.strip().splitlines()[-1])
                deadline = time.monotonic() + drain_s
                for proc, _, _ in swarms:
                    try:
                        proc.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
                capped = any(proc.poll() is None for proc, _, _ in swarms)
                for proc, _, _ in swarms:
                    if proc.poll() is None:
                        try:
                            proc.stdin.write("stop\n")  # type: ignore[union-attr]
                            proc.stdin.flush()  # type: ignore[union-attr]
                        except (BrokenPipeError, OSError):
                            pass
                for proc, _, _ in swarms:
                    try:
                        proc.wait(40)
                    except subprocess.TimeoutExpired:
                        stop_child(proc)
                drained_at = time.time()
            for swarm_sampler in samplers:
                swarm_sampler.__exit__()
            if profile:
                self.profiles[profile.name] = profile.summary()
            stats = [json.loads(out.read_text()) if out.exists() else None for _, _, out in swarms]
        finally:
            for proc, _, _ in swarms:
                stop_child(proc)
        try:
            events_seen = listener_events(url) - events_before if events_before is not None else None
        except (requests.RequestException, KeyError):
            events_seen = None
        swarm_cpu = [sampler.window(storm["started_at"], storm["ended_at"]) for sampler in samplers[:-1]]
        machine_cpu = samplers[-1].window(storm["started_at"], storm["ended_at"])
        probe_stats = stats[0] if probe else None
        missing = sum(1 for s in stats if s is None)
        stats = [s for s in stats if s is not None]
        expected = clients * len(ids)
        delivered = sum(s["terminal_delivered"] for s in stats)
        all_complete = not missing and all(s["completed_at"] for s in stats) and delivered == expected
        lag = histogram_percentiles(merge_histograms(s["lag_ms"] for s in stats))
        terminal_lag = histogram_percentiles(merge_histograms(s["terminal_lag_ms"] for s in stats))
        last = max((s["last_terminal_at"] or 0) for s in stats) if stats else 0
        result = {
            "relay": relay, "clients": clients, "connected": sum(s["connected"] for s in stats),
            "clients_seen_by_server": seen_clients, "connect_s": max((s["connect_s"] for s in stats), default=None),
            "storm": {k: storm.get(k) for k in ("events", "progress_events", "tasks", "seconds", "rate", "complete")},
            "relay_listener_events": events_seen,
            "terminal_expected": expected, "terminal_delivered": delivered,
            "terminal_delivered_share": round(delivered / expected, 4) if expected else None,
            "terminal_via_snapshot": sum(s["terminal_via_snapshot"] for s in stats),
            "all_delivered": all_complete, "drain_capped": capped, "drain_cap_s": drain_s,
            "last_terminal_after_storm_s": round(last - storm["ended_at"], 2) if last else None,
            "lag_ms": lag, "terminal_lag_ms": terminal_lag,
            "messages_received": sum(s["messages"] for s in stats),
            "records_received": sum(s["records"] for s in stats),
            "reconnects": sum(s["reconnects"] for s in stats), "disconnects": sum(s["disconnects"] for s in stats),
            "cpu_storm": sampler.window(storm["started_at"], storm["ended_at"]),
            "cpu_storm_and_drain": sampler.window(storm["started_at"], drained_at),
            "rss_before_mb": memory_before.get("rss"), "rss_peak_during_mb": sampler.peak_rss,
            "vm_hwm_mb": memory_mb(pid).get("peak"),
            "client_processes": sizes, "client_process_cpu_storm": swarm_cpu, "machine_cpu_storm": machine_cpu,
            "swarm_outputs_missing": missing,
        }
        if probe_stats:
            result["probe"] = {
                "lag_ms": histogram_percentiles(merge_histograms([probe_stats["lag_ms"]])),
                "terminal_lag_ms": histogram_percentiles(merge_histograms([probe_stats["terminal_lag_ms"]])),
                "terminal_delivered": probe_stats["terminal_delivered"], "reconnects": probe_stats["reconnects"]}
        return result

    def fanout(self) -> dict[str, Any]:
        cfg = self.p["fanout"]
        self.start_naive(NAIVE_DB)
        assert self.naive
        rounds: list[dict[str, Any]] = []
        counts = cfg["clients"]
        for i, clients in enumerate(counts):
            for relay in ("ours", "naive"):
                left_rounds = (len(counts) - i) * 2 - (relay == "naive")
                reserve = 250 if self.name == "full" else 45  # what the later steps need
                spare = self.remaining() - reserve
                if spare < 20:
                    rounds.append({"relay": relay, "clients": clients, "skipped": "time budget"})
                    continue
                if relay == "ours":
                    url, pid, db, drain = self.web_url, self.web_pid, 0, cfg["ours_drain_s"]
                else:
                    url, pid, db = self.naive[1], self.naive[0].pid, NAIVE_DB
                    drain = min(cfg["naive_drain_s"], max(10.0, spare / left_rounds - 20))
                log(f"  fan-out {relay} x {clients} clients (drain cap {drain:.0f} s)")
                try:
                    result = self.fanout_round(relay, url, pid, clients, db, drain)
                except Exception as exc:  # noqa: BLE001 - recorded, the next round still runs
                    result = {"relay": relay, "clients": clients, "error": f"{type(exc).__name__}: {exc}"}
                    (self.logdir / f"error-fanout-{relay}-{clients}.txt").write_text(traceback.format_exc())
                rounds.append(result)
                log(f"    delivered {result.get('terminal_delivered_share')}, lag {result.get('lag_ms')}, "
                    f"cpu {result.get('cpu_storm')}")
                wait_idle(pid, timeout=30 if relay == "naive" else 10)
        self.naive[0].stop()
        self.naive = None
        return {"settings": cfg, "rounds": rounds}

    # -- throttle ---------------------------------------------------------------------------------

    def throttle(self) -> dict[str, Any]:
        cfg = self.p["throttle"]
        env = dict(self.stack.env, REDIS_URL=db_url(self.stack.redis_url, THROTTLE_DB))
        run = subprocess.run([PYTHON, "-m", "bench.throttle", "--calls", str(cfg["calls"]),
                              "--repeats", str(cfg["repeats"])],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if run.returncode:
            raise RuntimeError(run.stderr[-2000:])
        return json.loads(run.stdout.strip().splitlines()[-1])

    # -- 4. launch throughput ---------------------------------------------------------------------

    def launch(self) -> dict[str, Any]:
        import aiohttp

        cfg = self.p["launch"]
        deadline_s = 40.0 if self.name == "full" else 15.0
        body = {"task": "steps", "params": {"steps": 1, "delay": 0}, "duplicate": True}  # each one a new task

        async def post_load(total: int, concurrency: int) -> dict[str, Any]:
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            numbers = iter(range(total))
            deadline = time.monotonic() + deadline_s
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
                async def one() -> None:
                    for _ in numbers:
                        if time.monotonic() > deadline:
                            return
                        start = time.perf_counter()
                        async with session.post(f"{self.web_url}/api/tasks", json=body) as response:
                            await response.read()
                            statuses[response.status] = statuses.get(response.status, 0) + 1
                        latencies.append((time.perf_counter() - start) * 1000)

                for _ in range(20):  # warm-up: connections, first imports
                    async with session.post(f"{self.web_url}/api/tasks", json=body) as response:
                        await response.read()
                start = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(concurrency)))
                elapsed = time.perf_counter() - start
            return {"requests": len(latencies), "seconds": round(elapsed, 2),
                    "per_second": round(len(latencies) / elapsed, 1), "latency_ms": percentiles(latencies, 2),
                    "statuses": statuses, "concurrency": concurrency}

        def delay_loop(total: int) -> dict[str, Any]:
            from tasks.demo import steps

            for _ in range(20):
                steps.delay(steps=1, delay=0)
            latencies: list[float] = []
            deadline = time.monotonic() + deadline_s
            start = time.perf_counter()
            for _ in range(total):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                steps.delay(steps=1, delay=0)
                latencies.append((time.perf_counter() - t0) * 1000)
            elapsed = time.perf_counter() - start
            return {"calls": len(latencies), "seconds": round(elapsed, 2),
                    "per_second": round(len(latencies) / elapsed, 1), "latency_ms": percentiles(latencies, 2)}

        import redis

        client = redis.Redis.from_url(self.stack.redis_url)
        delay = delay_loop(cfg["delay_calls"])
        wait_idle(self.web_pid, timeout=10)
        profile = Profile(self.web_pid, 3, "web-launch", self.out) if self.profile else None
        with CpuSampler(self.web_pid) as sampler:
            t0 = time.time()
            post = asyncio.run(post_load(cfg["requests"], cfg["concurrency"]))
            post["web_cpu"] = sampler.window(t0, time.time())
        if profile:
            self.profiles[profile.name] = profile.summary()
        client.delete("celery")  # nobody runs these: the worker is stopped
        wait_idle(self.web_pid, timeout=10)
        reset_history(client)
        return {"post": post, "delay": delay,
                "ratio": round(post["per_second"] / delay["per_second"], 3) if delay["per_second"] else None}

    # -- 3. ingest -------------------------------------------------------------------------------

    def ingest_rung(self, rate: int, n_events: int, progress: int, web_on: bool, flower_on: bool,
                    db: int = 0) -> dict[str, Any]:
        """One flood at `rate` (0: flat out) to database `db`, watched by our listener and/or Flower."""
        per_task = 4 + progress
        n_tasks = max(1, math.ceil(n_events / per_task))
        n_events = n_tasks * per_task
        readers: dict[str, Callable[[], int]] = {}
        pids: dict[str, int] = {}
        if web_on:
            readers["web"], pids["web"] = (lambda: listener_events(self.web_url)), self.web_pid
        if flower_on:
            assert self.flower
            flower_url = self.flower[1]
            readers["flower"], pids["flower"] = (lambda: flower_events(flower_url)), self.flower[0].pid
            flower_ok_base = flower_events(flower_url, kind="task-succeeded")
        bases = {name: read() for name, read in readers.items()}
        ids_file = self.work / f"ingest-{db}-{rate}.json"
        series: dict[str, list[tuple[float, int]]] = {name: [] for name in readers}
        changed_at: dict[str, float] = {name: time.time() for name in readers}
        failures: dict[str, int] = dict.fromkeys(readers, 0)
        polled_from = time.time()
        stop = threading.Event()

        def poll(name: str, every: float) -> None:
            while not stop.is_set():
                try:
                    count = readers[name]() - bases[name]
                    if not series[name] or count != series[name][-1][1]:
                        changed_at[name] = time.time()
                    series[name].append((time.time(), count))
                except (requests.RequestException, KeyError, ValueError):
                    failures[name] += 1  # no answer within 5 s: counted, and the wait goes on
                if series[name] and series[name][-1][1] >= n_events:
                    return
                stop.wait(every)

        def settled(name: str) -> bool:
            """Caught up, or answering and not moving for 3 s."""
            points = series[name]
            return bool(points) and time.time() - points[-1][0] < 1.0 and time.time() - changed_at[name] > 3

        proc = subprocess.Popen(
            [PYTHON, "-m", "bench.storm", "flood", "--tasks", str(n_tasks), "--progress", str(progress),
             "--rate", str(rate), "--ids-out", str(ids_file), "--max-seconds", "60"],
            cwd=ROOT, env=dict(self.stack.env, REDIS_URL=db_url(self.stack.redis_url, db)),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        reader = LineReader(proc)
        if reader.get("ready", 90) is None:
            stop_child(proc)
            raise RuntimeError("flood did not get ready")
        pollers = {name: threading.Thread(target=poll, args=(name, 0.1 if name == "web" else 0.2))
                   for name in readers}
        profile = None
        if self.profile and web_on and flower_on and rate == 20000:
            profile = Profile(self.web_pid, n_events / rate + 1, f"web-ingest-{rate}", self.out)
        samplers = {name: CpuSampler(pid) for name, pid in pids.items()}
        samplers["machine"] = CpuSampler(None)
        for sampler in samplers.values():
            sampler.__enter__()
        try:
            for thread in pollers.values():
                thread.start()
            result = reader.get("mode", 90)
            proc.wait(10)
            if result is None:
                raise RuntimeError("flood did not finish")
            # Wait until each has caught up or has not moved for 3 s; 30 s after the flood at most.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(t.is_alive() for t in pollers.values()):
                if all(not t.is_alive() or settled(name) for name, t in pollers.items()):
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in pollers.values():
                if thread.is_alive():
                    thread.join(5)
            for sampler in samplers.values():
                sampler.__exit__()
        started, ended = result["started_at"], result["ended_at"]
        slack = max(0.5, 0.1 * result["seconds"])  # behind by at most this much when the flood ended

        def consumer(name: str) -> dict[str, Any]:
            points = series[name]
            seen = points[-1][1] if points else 0
            caught = next((t for t, c in points if c >= n_events), None)
            took = (caught - started) if caught else None
            cpu = samplers[name].window(started, caught or (points[-1][0] if points else time.time()))
            behind = round(caught - ended, 2) if caught else None
            kept_up = behind is not None and behind <= slack
            answered = [polled_from] + [t for t, _ in points]
            silence = max((b - a for a, b in zip(answered, answered[1:], strict=False)), default=None)
            return {"events_seen": seen, "lost": max(0, n_events - seen), "caught_up_after_flood_s": behind,
                    "unanswered_polls": failures[name], "longest_without_answer_s": round(silence, 1)
                    if silence is not None else None,
                    "throughput": round(n_events / took, 1) if took else None, "cpu": cpu,
                    "cpu_us_per_event": round(1e6 * cpu["cpu_s"] / seen, 1) if cpu and seen else None,
                    "kept_up": kept_up, "sustained": kept_up and seen >= n_events}

        out: dict[str, Any] = {"target_rate": rate or "max", "achieved_rate": result["rate"], "events": n_events,
                               "tasks": n_tasks, "publish_s": result["seconds"],
                               "machine_cpu": samplers["machine"].window(started, ended)}
        if profile:
            self.profiles[profile.name] = profile.summary()
        ids = json.loads(ids_file.read_text())
        if web_on:
            out["web"] = consumer("web")
            out["web"]["tasks"] = self.tasks_right(ids, cap=15.0)
        if flower_on:
            out["flower"] = consumer("flower")
            out["flower"]["tasks_succeeded"] = flower_events(flower_url, kind="task-succeeded") - flower_ok_base
            out["flower"]["tasks_lost"] = len(ids) - out["flower"]["tasks_succeeded"]
        return out

    def tasks_right(self, ids: list[str], cap: float) -> dict[str, Any]:
        """Page through GET /api/tasks (newest first) until every task of `ids` shows SUCCESS."""
        wanted = set(ids)
        start = time.monotonic()
        right = 0
        while True:
            states: dict[str, str] = {}
            offset = 0
            while offset <= 100_000 and len(states) < len(wanted):
                page = requests.get(f"{self.web_url}/api/tasks", params={"limit": 500, "offset": offset},
                                    timeout=30).json()["tasks"]
                if not page:
                    break
                states.update({t["id"]: t["state"] for t in page if t["id"] in wanted})
                offset += 500
            right = sum(1 for task_id in wanted if states.get(task_id) == "SUCCESS")
            if right == len(wanted) or time.monotonic() - start > cap:
                break
            time.sleep(1.0)
        return {"total": len(wanted), "success_in_api": right, "wrong_or_missing": len(wanted) - right,
                "seconds_to_right": round(time.monotonic() - start, 1)}

    def ingest(self) -> dict[str, Any]:
        """The same flood watched by our listener and Flower together (as they run in production),
        then by each alone (Flower on another database), so that neither takes CPU from the other."""
        import redis

        cfg = self.p["ingest"]
        reserve = 100 if self.name == "full" else 25  # what the memory step needs
        reset_history(redis.Redis.from_url(self.stack.redis_url))

        def ladder(rates: list[int], web_on: bool, flower_on: bool, db: int) -> list[dict[str, Any]]:
            rungs: list[dict[str, Any]] = []
            for rate in rates:
                if self.remaining() < reserve:
                    rungs.append({"target_rate": rate or "max", "skipped": "time budget"})
                    continue
                n_events = min(cfg["max_events"], rate * cfg["seconds"]) if rate else cfg["max_events"]
                who = " + ".join(name for name, on in (("ours", web_on), ("Flower", flower_on)) if on)
                log(f"  ingest at {rate or 'max'} events/s: {n_events} events ({who})")
                rung = self.ingest_rung(rate, n_events, cfg["progress"], web_on, flower_on, db)
                rungs.append(rung)
                log("    achieved {}/s; {}".format(rung["achieved_rate"], "; ".join(
                    f"{side} lost {rung[side]['lost']} throughput {rung[side]['throughput']}"
                    for side in ("web", "flower") if side in rung)))
                if web_on:
                    wait_idle(self.web_pid, timeout=15)
                if flower_on and self.flower:
                    wait_idle(self.flower[0].pid, timeout=15)
            return rungs

        self.start_flower("flower-ingest")
        together = ladder(cfg["rates"], True, True, 0)
        assert self.flower
        self.flower[0].stop()
        self.flower = None
        web_alone = ladder(cfg["web_alone"], True, False, 0)
        flower_alone: list[dict[str, Any]] = []
        if self.remaining() > reserve + 15:
            self.start_flower("flower-alone", db=3)
            flower_alone = ladder(cfg["flower_alone"], False, True, 3)
            assert self.flower
            self.flower[0].stop()
            self.flower = None

        def best(rungs: list[dict[str, Any]], side: str) -> float | None:
            ok = [r["achieved_rate"] for r in rungs if side in r and r[side]["sustained"]]
            return max(ok) if ok else None

        def peak(rungs: list[dict[str, Any]], side: str) -> float | None:
            seen = [r[side]["throughput"] for r in rungs if side in r and r[side]["throughput"]]
            return max(seen) if seen else None

        every = together + web_alone + flower_alone
        return {"settings": cfg, "rungs": together, "web_alone_rungs": web_alone, "flower_alone_rungs": flower_alone,
                "web_sustained_rate": best(together, "web"), "flower_sustained_rate": best(together, "flower"),
                "web_peak_throughput": peak(together, "web"), "flower_peak_throughput": peak(together, "flower"),
                "web_alone_sustained_rate": best(web_alone, "web"),
                "flower_alone_sustained_rate": best(flower_alone, "flower"),
                "web_alone_peak_throughput": peak(web_alone, "web"),
                "flower_alone_peak_throughput": peak(flower_alone, "flower"),
                "web_tasks_wrong": sum(r["web"]["tasks"]["wrong_or_missing"] for r in every if "web" in r),
                "flower_tasks_lost": sum(max(0, r["flower"]["tasks_lost"]) for r in every if "flower" in r)}

    # -- 5. memory ---------------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        import redis

        cfg = self.p["memory"]
        client = redis.Redis.from_url(self.stack.redis_url)
        if self.flower:
            self.flower[0].stop()
            self.flower = None
        self.stack.kill_web(self.web_url, signal.SIGTERM)
        reset_history(client)
        self.stack.start_web()
        base = listener_events(self.web_url)
        wait_subscribed(lambda: listener_events(self.web_url) > base, 30, "web listener")
        self.start_flower("flower-memory")
        assert self.flower
        web_pid, flower_pid, flower_url = self.web_pid, self.flower[0].pid, self.flower[1]
        before = {"web": memory_mb(web_pid), "flower": memory_mb(flower_pid)}
        n = cfg["tasks"]
        kinds = "received,progress,succeeded"
        events = 3 * n
        flower_base = flower_events(flower_url)
        flower_received_base = flower_events(flower_url, kind="task-received")
        with CpuSampler(web_pid) as web_cpu:
            flood = subprocess.run(
                [PYTHON, "-m", "bench.storm", "flood", "--tasks", str(n), "--progress", "1", "--kinds", kinds,
                 "--rate", str(cfg["rate"]), "--max-seconds", "90"],
                cwd=ROOT, env=dict(self.stack.env), capture_output=True, text=True, timeout=200)
            result = json.loads(flood.stdout.strip().splitlines()[-1])
            # Wait for both to take everything in; Flower is given up on after 10 s without progress.
            deadline = time.monotonic() + (90 if self.name == "full" else 30)
            web_done = flower_done = None
            flower_series: list[tuple[float, int]] = []
            changed_at, flower_count = time.time(), -1
            while time.monotonic() < deadline:
                if web_done is None and client.zcard("dashboard:recent") >= n and client.scard("dashboard:active") == 0:
                    web_done = time.time()
                if flower_done is None:
                    try:
                        count = flower_events(flower_url) - flower_base
                    except requests.RequestException:
                        count = flower_count
                    flower_series.append((round(time.time() - result["started_at"], 1), count))
                    if count != flower_count:
                        changed_at, flower_count = time.time(), count
                    if count >= events:
                        flower_done = time.time()
                flower_idle = flower_done is not None or time.time() - changed_at > 10
                if web_done is not None and flower_idle:
                    break
                time.sleep(0.5)
            cpu = web_cpu.window(result["started_at"], web_done or time.time())
        time.sleep(1.0)
        stored = client.zcard("dashboard:recent")
        keys = ("dashboard:tasks", "dashboard:order", "dashboard:recent", "dashboard:active")
        redis_bytes = {key: client.memory_usage(key, samples=0) or 0 for key in keys}
        sample = []
        for key in client.scan_iter(match="celery-task-meta-*", count=1000):
            sample.append(key)
            if len(sample) >= 200:
                break
        backend_bytes = [client.memory_usage(key, samples=0) or 0 for key in sample]
        backend_per_task = round(sum(backend_bytes) / len(backend_bytes), 1) if backend_bytes else None
        after = {"web": memory_mb(web_pid), "flower": memory_mb(flower_pid)}
        flower_seen = flower_events(flower_url) - flower_base
        # The bounded snapshot and page with the full history in place.
        snapshot = self.snapshot_probe()
        page_start = time.perf_counter()
        page = requests.get(f"{self.web_url}/api/tasks", params={"limit": 50}, timeout=30)
        page_ms = (time.perf_counter() - page_start) * 1000
        after_reads = memory_mb(web_pid)
        return {
            "settings": {**cfg, "events_per_task": 3, "kinds": kinds},
            "flood": {k: result.get(k) for k in ("events", "seconds", "rate", "prepare_s")},
            "tasks_in_history": stored, "web_settled_s": round(web_done - result["ended_at"], 1) if web_done else None,
            "web_cpu_fill": cpu,
            "flower_events_seen": flower_seen, "flower_events_expected": events,
            "flower_settled_s": round(flower_done - result["ended_at"], 1) if flower_done else None,
            "flower_tasks_seen": flower_events(flower_url, kind="task-received") - flower_received_base,
            "flower_progress_s_events": flower_series[::10],
            "before_mb": before, "after_mb": after, "web_after_reads_mb": after_reads,
            "redis_bytes": redis_bytes, "redis_bytes_per_task": round(sum(redis_bytes.values()) / stored, 1)
            if stored else None,
            "backend_bytes_per_task_sample": backend_per_task,
            "snapshot": snapshot, "page_50_ms": round(page_ms, 1), "page_50_status": page.status_code,
        }

    def snapshot_probe(self) -> dict[str, Any]:
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
        client.connect(self.web_url, transports=["websocket"], wait_timeout=10)
        done.wait(10)
        got["ms"] = round((time.perf_counter() - start) * 1000, 1)
        client.disconnect()
        return got

    # -- all -------------------------------------------------------------------------------------

    def run(self) -> int:
        self.results["when"] = datetime.now().isoformat(timespec="seconds")
        self.results["machine"] = {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
        self.results["code"] = code_version()
        try:
            self.step("setup", self.start)
            if "setup" not in self.errors:
                for name in ("latency", "fanout", "throttle", "launch", "ingest", "memory"):
                    if name != "latency" and self.stack.worker and self.stack.worker.alive():
                        # The load is synthetic from here on; a launch must not start real work.
                        self.stack.worker.stop(signal.SIGTERM)
                    if self.only is None or name in self.only:
                        self.step(name, getattr(self, name))
        finally:
            self.stop()
        self.results["machine"]["loadavg_at_end"] = os.getloadavg()
        if self.profiles:
            self.results["profiles"] = self.profiles
        self.results["errors"] = self.errors
        self.results["timings_s"] = self.timings
        self.results["total_s"] = round(time.monotonic() - self.started, 1)
        write_json(self.out / "report.json", self.results)
        markdown = report.markdown(self.results)
        (self.out / "report.md").write_text(markdown)
        try:
            report.plot(self.results, self.out / "report.png")
        except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
            self.errors["plot"] = repr(exc)
        print(markdown)
        missing = [m for m in report.missing_numbers(self.results)
                   if self.only is None or m.split(" ")[0] in self.only]
        if missing or self.errors:
            log(f"incomplete: errors {self.errors}, no numbers for {missing}")
            return 1
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small and fast, for CI: checks that it runs")
    parser.add_argument("--only", help="development: run only these steps (comma-separated: latency, fanout, "
                                       "throttle, launch, ingest, memory)")
    parser.add_argument("--clients", help="development: fan-out client counts (comma-separated)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the web process with py-spy during the largest fan-out, the 20,000 events/s "
                             "ingest and the launch load (adds load: keep it out of the reference run)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or soft < hard < 4096:  # 1,000 websockets on each side need the descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench = Bench("quick" if args.quick else "full")
    bench.profile = args.profile
    if args.only:
        bench.only = set(args.only.split(","))
    if args.clients:
        bench.p["fanout"]["clients"] = [int(n) for n in args.clients.split(",")]
    sys.exit(bench.run())


if __name__ == "__main__":
    main()
