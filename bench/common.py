"""Helpers shared by the load benchmark's parts: process readings, percentiles, Redis housekeeping
(devstack.stack.db_url gives another logical database of the same Redis), and the clients'
garbage collector paused during a storm."""
from __future__ import annotations

import gc
import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNTHETIC = "bench@synthetic"


@contextmanager
def collector_paused() -> Iterator[None]:
    """This process's cyclic garbage collector off for the block (one full collection before it; on
    again after). Where a thousand Socket.IO clients share one Python process, each full collection
    walks every client's objects: in a 1,000-client storm of 7.6 s the clients spent 5.0 s in 16
    of them (the longest 465 ms) and 0.6 s of 1.5 s at 500, pauses that were counted as the
    server's lag. Real browsers each collect their own small heap. Reference counting still frees
    everything that is not in a cycle, so a storm of some seconds holds little more memory."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---- processes -----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's threads have spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory in MB."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found["rss" if key == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024, 1)
    return found


class CpuMeter:
    """CPU use of one process over a wall-clock window, as % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0, self.t0 = cpu_seconds(pid), time.monotonic()

    def read(self) -> dict[str, float]:
        cpu, now = cpu_seconds(self.pid), time.monotonic()
        wall = max(now - self.t0, 1e-9)
        return {"cpu_s": round(cpu - self.cpu0, 2), "wall_s": round(wall, 2),
                "percent_of_core": round(100 * (cpu - self.cpu0) / wall, 1)}


def wait_idle(pid: int, below: float = 15.0, window: float = 1.0, timeout: float = 20.0) -> float:
    """Wait until a process uses less than `below` % of a core over `window`; return its last reading."""
    deadline = time.monotonic() + timeout
    percent = 100.0
    while time.monotonic() < deadline:
        meter = CpuMeter(pid)
        time.sleep(window)
        percent = meter.read()["percent_of_core"]
        if percent < below:
            break
    return percent


# ---- statistics ----------------------------------------------------------------------------

def percentiles(values: Iterable[float], digits: int = 1) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99),
            "mean": round(statistics.fmean(ordered), digits), "max": round(ordered[-1], digits)}


def merge_histograms(histograms: Iterable[Mapping[Any, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for key, count in histogram.items():
            merged[int(key)] = merged.get(int(key), 0) + int(count)
    return merged


def tick_s() -> float:
    """The web's push tick (s): PUSH_INTERVAL, else web.config's default. Imported when asked, not
    with this module: web.config imports tasks.config, which reads REDIS_URL once, and the harness
    sets it only when it starts its stack."""
    from web import config

    return float(os.environ.get("PUSH_INTERVAL") or config.PUSH_INTERVAL)


def per_tick_windows(times: Iterable[list[float]], start: float, tick: float) -> dict[int, int]:
    """How many messages each client received in each fixed window of `tick` s from `start` (all in
    one clock's seconds): {messages in a window: how many (client, window) pairs had that many},
    for histogram_percentiles. `times`: each client's receive times. Windows with none are left out."""
    counts: dict[int, int] = {}
    for received in times:
        windows = Counter(math.floor((t - start) / tick) for t in received)  # before start: its own windows
        for n in windows.values():
            counts[n] = counts.get(n, 0) + 1
    return counts


def histogram_percentiles(histogram: Mapping[int, int], names: tuple[str, ...] = ("p50", "p95", "p99")
                          ) -> dict[str, float]:
    """Percentiles of millisecond samples kept as {ms: count}: each of `names` ("p1" .. "p99"),
    with "n", "mean" and "max"."""
    total = sum(histogram.values())
    if not total:
        return {"n": 0}
    keys = sorted(histogram)
    result: dict[str, float] = {"n": total}
    for name in names:
        rank, seen = min(total - 1, int(int(name[1:]) / 100 * total)), 0
        for key in keys:
            seen += histogram[key]
            if seen > rank:
                result[name] = key
                break
    result["mean"] = round(sum(k * c for k, c in histogram.items()) / total, 1)
    result["max"] = keys[-1]
    return result


# ---- Redis ---------------------------------------------------------------------------------

def delete_matching(client: Any, pattern: str, batch: int = 2000) -> int:
    """UNLINK every key matching `pattern`, in batches; return how many."""
    removed, chunk = 0, []
    for key in client.scan_iter(match=pattern, count=batch):
        chunk.append(key)
        if len(chunk) >= batch:
            removed += client.unlink(*chunk)
            chunk = []
    if chunk:
        removed += client.unlink(*chunk)
    return removed


def reset_history(client: Any) -> None:
    """Forget every task: the dashboard's index (the task objects, their versions and launch params,
    the orderings by time, owner and parent: celery_dashboard.index; the identical-launch lists:
    web.launches) and the result backend's entries. Accounts, tokens and sessions stay. (It left
    the versions and params behind before: 20 MB of them, mostly earlier steps' tasks, were counted
    in the memory step's figure for ours.)"""
    from celery_dashboard.index import CHILDREN_KEY, KEYS, OWNER_KEY, PARAMS_KEY

    client.unlink(*KEYS, PARAMS_KEY)
    for pattern in (OWNER_KEY.format("*"), CHILDREN_KEY.format("*"), "dashboard:identical*"):
        delete_matching(client, pattern)
    delete_matching(client, "celery-task-meta-*")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
