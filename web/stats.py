"""Task statistics from the task index: per task name and per time bucket, ended tasks, failures
and run-time percentiles (for the charts), and counts by state and name (for /metrics)."""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from celery_dashboard.index import RECENT_KEY, owner_key
from web import lifecycle, records
from web.store import TaskStore, _text

# Endings counted as failures: Celery's FAILURE and the dashboard's LOST (its worker died under it).
FAILED = frozenset({"FAILURE", lifecycle.LOST})
CHUNK = 500           # records read per round trip
MAX_BUCKETS = 120     # points per series: a longer window gets wider buckets
CACHED_USERS = 64     # scans kept (one per user asking, and one for admins)
# Seconds after its end from which a settled task's row is kept between scans: an ending may still
# be replaced for a few seconds (the backend's outranks an event's: web.reconciler CONFIRM_WINDOW).
SETTLE_AFTER = 30.0


class Row(NamedTuple):
    """What the statistics need of one task: epoch seconds, None when not known."""

    name: str
    state: str
    started: float | None
    finished: float | None
    owner: str | None


def _time(value: Any) -> float | None:
    return records.epoch(value) if isinstance(value, str) and value else None


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of `values` (unsorted), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class TaskStats:
    """Reads the index newest first, at most `scan_limit` tasks (the index keeps HISTORY_LIMIT),
    and keeps each scan `cache_seconds` so a page of charts and a Prometheus scraper cost one scan
    every few seconds. `owner` None scans every task (admins); a name scans that user's own.
    A settled task's row is kept between scans (at most twice `scan_limit` of them): a scan reads
    the index's ids, and the records of the tasks not settled yet or not seen before."""

    def __init__(self, store: TaskStore, scan_limit: int = 10_000, cache_seconds: float = 5.0,
                 names: int = 20, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.scan_limit = scan_limit
        self.cache_seconds = cache_seconds
        self.names = names
        self.clock = clock
        self.wall = wall
        self._cache: OrderedDict[str | None, tuple[float, list[Row], bool]] = OrderedDict()
        self._settled: OrderedDict[str, Row] = OrderedDict()  # task id -> row of a task that will not change
        self._lock = threading.Lock()

    def rows(self, owner: str | None) -> tuple[list[Row], bool]:
        """The scanned tasks of `owner` (None: all), and whether the scan stopped at its limit."""
        with self._lock:
            hit = self._cache.get(owner)
            if hit and self.clock() - hit[0] < self.cache_seconds:
                return hit[1], hit[2]
        rows, truncated = self._scan(owner)
        with self._lock:
            self._cache[owner] = (self.clock(), rows, truncated)
            self._cache.move_to_end(owner)
            while len(self._cache) > CACHED_USERS:
                self._cache.popitem(last=False)
        return rows, truncated

    def _scan(self, owner: str | None) -> tuple[list[Row], bool]:
        key = RECENT_KEY if owner is None else owner_key(owner)
        client = self.store.client
        ids = [_text(i) for i in client.zrevrange(key, 0, self.scan_limit - 1)]
        with self._lock:
            fresh = {i: self._settled[i] for i in ids if i in self._settled}
        missing = [i for i in ids if i not in fresh]
        settled_before = self.wall() - SETTLE_AFTER
        for start in range(0, len(missing), CHUNK):
            for task_id, record in self.store.get_many(missing[start:start + CHUNK]).items():
                row = Row(str(record.get("name") or "(unnamed)"), str(record.get("state") or "PENDING"),
                          _time(record.get("started")), _time(record.get("finished")), record.get("owner"))
                fresh[task_id] = row
                if lifecycle.is_settled(record) and (row.finished or 0) < settled_before:
                    with self._lock:
                        self._settled[task_id] = row
        with self._lock:
            while len(self._settled) > 2 * self.scan_limit:
                self._settled.popitem(last=False)
        rows = [fresh[i] for i in ids if i in fresh and (owner is None or fresh[i].owner == owner)]
        return rows, len(ids) >= self.scan_limit and client.zcard(key) > self.scan_limit

    def series(self, owner: str | None, window: int) -> dict[str, Any]:
        """Per task name, per bucket of the last `window` seconds (60 s buckets, wider beyond
        MAX_BUCKETS of them; the last bucket is the current one, still filling):

        {"window", "bucket" (s), "start" (epoch s of the first bucket), "times" (epoch s of each
        bucket's start), "tasks": [{"name", "ended", "failed", "runtime_p50", "runtime_p95" (over
        the window, seconds or None), "throughput", "failures", "p50", "p95" (lists, one value per
        bucket; p50/p95 None where no task with known start and end ended)}], "scanned",
        "truncated" (the scan stopped at STATS_SCAN_LIMIT: counts are lower bounds),
        "names_truncated" (more task names than STATS_NAMES ended: the busiest are listed)}.
        Ended tasks are placed by their end time; run time is end minus start."""
        bucket = max(60, math.ceil(window / MAX_BUCKETS / 60) * 60)
        count = math.ceil(window / bucket)
        now = self.wall()
        start = (math.floor(now / bucket) - count + 1) * bucket
        rows, truncated = self.rows(owner)
        per_name: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.finished is None or not lifecycle.is_terminal(row.state) or row.finished < start:
                continue
            index = min(count - 1, int((row.finished - start) // bucket))
            entry = per_name.get(row.name)
            if entry is None:
                entry = per_name[row.name] = {"ended": [0] * count, "failed": [0] * count,
                                              "runs": [[] for _ in range(count)]}
            entry["ended"][index] += 1
            entry["failed"][index] += row.state in FAILED
            if row.started is not None and row.finished >= row.started:
                entry["runs"][index].append(row.finished - row.started)
        busiest = sorted(per_name, key=lambda n: (-sum(per_name[n]["ended"]), n))
        tasks = []
        for name in busiest[:self.names]:
            entry = per_name[name]
            every = [run for runs in entry["runs"] for run in runs]
            tasks.append({"name": name, "ended": sum(entry["ended"]), "failed": sum(entry["failed"]),
                          "runtime_p50": _round(percentile(every, 0.5)),
                          "runtime_p95": _round(percentile(every, 0.95)),
                          "throughput": entry["ended"], "failures": entry["failed"],
                          "p50": [_round(percentile(runs, 0.5)) for runs in entry["runs"]],
                          "p95": [_round(percentile(runs, 0.95)) for runs in entry["runs"]]})
        return {"window": window, "bucket": bucket, "start": start,
                "times": [start + i * bucket for i in range(count)], "tasks": tasks,
                "scanned": len(rows), "truncated": truncated, "names_truncated": len(busiest) > self.names}

    def by_state(self) -> tuple[Counter[tuple[str, str]], dict[str, list[float]], bool]:
        """Over every scanned task: (state, name) -> count; name -> run times (s) of the ended
        tasks with known start and end; whether the scan stopped at its limit."""
        rows, truncated = self.rows(None)
        counts: Counter[tuple[str, str]] = Counter()
        runs: dict[str, list[float]] = {}
        for row in rows:
            counts[(row.state, row.name)] += 1
            if (lifecycle.is_terminal(row.state) and row.started is not None and row.finished is not None
                    and row.finished >= row.started):
                runs.setdefault(row.name, []).append(row.finished - row.started)
        return counts, runs, truncated


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
