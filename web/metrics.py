"""`/metrics`: the dashboard's view of the stack in Prometheus' text format (prometheus_client),
for admins or a scraper holding METRICS_TOKEN."""
from __future__ import annotations

import gc
import hmac
from collections import Counter
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from web import pauses
from web.auth import identify
from web.errors import ApiError

bp = Blueprint("metrics", __name__)

# Run-time histogram bucket bounds (seconds); +Inf is added.
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
OTHER = "(other)"  # task names beyond STATS_NAMES, counted together (bounded label values)


def check_access() -> None:
    """Admins (session, an admin's API token, or the loopback local admin), or `Authorization:
    Bearer <METRICS_TOKEN>` when that setting is set (compared in constant time). Raises ApiError
    401 (nobody signed in) or 403 (signed in, not an admin)."""
    token = current_app.config["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return
    user, _ = identify()
    if user is None:
        raise ApiError(401, "sign-in required: an admin's session or token, or Authorization: Bearer <METRICS_TOKEN>")
    if not user.is_admin:
        raise ApiError(403, "metrics are for admins (or a scraper with METRICS_TOKEN)")


class Snapshot:
    """A prometheus_client collector over what the dashboard knows at one scrape."""

    def __init__(self, counts: Counter[tuple[str, str]], runs: dict[str, list[float]], truncated: bool,
                 workers: list[dict[str, Any]], queues: list[dict[str, Any]], clients: int, names: int) -> None:
        self.counts, self.runs, self.truncated = counts, runs, truncated
        self.workers, self.queues, self.clients, self.names = workers, queues, clients, names

    def _label(self) -> dict[str, str]:
        """Task name -> its label: the `names` busiest keep theirs, the rest share OTHER."""
        totals: Counter[str] = Counter()
        for (_, name), n in self.counts.items():
            totals[name] += n
        kept = {name for name, _ in totals.most_common(self.names)}
        return {name: name if name in kept else OTHER for name in totals}

    def collect(self) -> Iterator[Metric]:
        label = self._label()
        tasks = GaugeMetricFamily("dashboard_tasks", "Tasks in the dashboard's index by state and task name",
                                  labels=["state", "name"])
        merged: Counter[tuple[str, str]] = Counter()
        for (state, name), n in self.counts.items():
            merged[(state, label[name])] += n
        for (state, name), n in sorted(merged.items()):
            tasks.add_metric([state, name], n)
        yield tasks
        yield GaugeMetricFamily("dashboard_tasks_scan_truncated",
                                "1 when the index scan stopped at STATS_SCAN_LIMIT (counts are lower bounds)",
                                value=int(self.truncated))
        runtime = GaugeHistogramMetricFamily(
            "dashboard_task_runtime_seconds",
            "Run time (end minus start) of the ended tasks in the index, by task name: a snapshot of the "
            "index's tasks, not a counter since start", labels=["name"])
        grouped: dict[str, list[float]] = {}
        for name, runs in self.runs.items():
            grouped.setdefault(label.get(name, OTHER), []).extend(runs)
        for name, runs in sorted(grouped.items()):
            buckets = [(str(bound), sum(1 for r in runs if r <= bound)) for bound in BUCKETS]
            buckets.append(("+Inf", len(runs)))
            runtime.add_metric([name], buckets, gsum_value=sum(runs))
        yield runtime
        status = GaugeMetricFamily("dashboard_workers", "Workers by status", labels=["status"])
        for each in ("online", "not responding", "offline"):
            status.add_metric([each], sum(1 for w in self.workers if w["status"] == each))
        yield status
        yield GaugeMetricFamily("dashboard_workers_online", "Workers online (heartbeat not late: Celery's freq * 2)",
                                value=sum(1 for w in self.workers if w["status"] == "online"))
        depth = GaugeMetricFamily("dashboard_queue_depth", "Messages waiting in each broker queue", labels=["queue"])
        age = GaugeMetricFamily("dashboard_queue_oldest_age_seconds", "Age of each queue's oldest message",
                                labels=["queue"])
        consumers = GaugeMetricFamily("dashboard_queue_consumers", "Workers consuming each queue", labels=["queue"])
        for queue in self.queues:
            depth.add_metric([queue["name"]], queue["depth"])
            consumers.add_metric([queue["name"]], queue["consumers"])
            if queue["oldest_age"] is not None:
                age.add_metric([queue["name"]], queue["oldest_age"])
        yield depth
        yield age
        yield consumers
        yield GaugeMetricFamily("dashboard_socketio_clients", "Socket.IO clients connected to this web process",
                                value=self.clients)
        yield from gc_families(pauses.PAUSES)


def gc_families(recorded: pauses.Pauses) -> Iterator[Metric]:
    """This web process's garbage-collection pauses since it started, by generation (web.pauses):
    every client, launch and event read waits while one runs."""
    histogram = HistogramMetricFamily(
        "dashboard_gc_pause_seconds", "Pauses of this web process's cyclic garbage collector, by generation",
        labels=["generation"])
    longest = GaugeMetricFamily("dashboard_gc_longest_pause_seconds",
                                "The longest pause of this web process's garbage collector since it started",
                                labels=["generation"])
    for generation in pauses.GENERATIONS:
        buckets = [(str(bound), n) for bound, n in zip(pauses.BUCKETS, recorded.buckets[generation], strict=True)]
        buckets.append(("+Inf", recorded.count[generation]))
        histogram.add_metric([str(generation)], buckets, sum_value=recorded.total[generation])
        longest.add_metric([str(generation)], recorded.longest[generation])
    yield histogram
    yield longest
    yield GaugeMetricFamily("dashboard_gc_frozen_objects",
                            "Objects frozen at start (CPython's gc.freeze) still alive: kept out of every collection",
                            value=gc.get_freeze_count())


@bp.get("/metrics")
def metrics() -> Any:
    """The Prometheus text exposition (format 0.0.4) of the families in `Snapshot.collect`."""
    check_access()
    from web import monitor, sockets  # monitor imports this module

    counts, runs, truncated = monitor.task_stats().by_state()
    workers = monitor.worker_rows()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(counts, runs, truncated, workers, monitor.queue_rows(workers),
                               sockets.client_count(), current_app.config["STATS_NAMES"]))
    return current_app.response_class(generate_latest(registry), mimetype=None,
                                      headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
