"""Workers, queues, per-minute statistics and /metrics, as the API answers them (web.monitor,
web.stats, web.metrics), on an in-memory Redis fed the events and messages real workers send."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.conftest import make_app
from web import monitor
from web.queues import SEP, Queues
from web.stats import TaskStats
from web.workers import Workers

PASSWORD = "correct horse battery"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def message(task_id: str, name: str = "tasks.demo.steps", created: float | None = None) -> bytes:
    """A task message as kombu's Redis transport stores it (Celery protocol 2)."""
    headers: dict[str, Any] = {"id": task_id, "task": name, "retries": 0}
    if created is not None:
        headers["created"] = created
    return json.dumps({"body": "W10=", "content-type": "application/json", "content-encoding": "utf-8",
                       "headers": headers, "properties": {"body_encoding": "base64"}}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(reconciler: Any, *events: dict[str, Any]) -> None:
    for event in events:
        reconciler.worker_event({"timestamp": time.time(), **event})


def test_a_worker_shows_its_pool_activity_and_goes_not_responding_then_offline() -> None:
    clock = Clock()
    workers = Workers(clock=clock)
    workers.see({"type": "worker-online", "hostname": "w@h", "pid": 10, "processed": 0, "active": 0})
    workers.incarnation("w@h", 10, "prefork", concurrency=4)
    workers.see({"type": "task-started", "hostname": "w@h", "uuid": "a", "pid": 11})
    workers.see({"type": "task-started", "hostname": "w@h", "uuid": "b", "pid": 12})
    workers.see({"type": "task-failed", "hostname": "w@h", "uuid": "b", "pid": 12})
    workers.see({"type": "worker-heartbeat", "hostname": "w@h", "pid": 10, "processed": 7, "active": 1})
    [row] = workers.rows(timeout=10)
    assert row["status"] == "online" and row["online"] is True
    assert (row["pool"], row["concurrency"], row["active"], row["processed"], row["failed"]) == ("prefork", 4, 1, 7, 1)
    assert datetime.fromisoformat(row["last_heartbeat"]).tzinfo is not None
    clock.now += 11
    assert workers.rows(timeout=10)[0]["status"] == "not responding"
    workers.see({"type": "worker-offline", "hostname": "w@h", "pid": 10})
    [row] = workers.rows(timeout=10)
    assert (row["status"], row["online"], row["active"]) == ("offline", False, 0)
    workers.see({"type": "worker-online", "hostname": "w@h", "pid": 20, "processed": 0, "active": 0})
    [row] = workers.rows(timeout=10)
    assert (row["status"], row["processed"], row["pool"]) == ("online", 0, None)  # a new process: asked again


def test_a_worker_killed_without_a_goodbye_is_late_then_offline_then_forgotten() -> None:
    """Celery's rule: alive while now < last heartbeat + freq * 2; then offline after
    WORKER_OFFLINE_AFTER, gone after WORKER_FORGET_AFTER (no worker-offline ever comes)."""
    clock = Clock()
    workers = Workers(clock=clock)
    workers.see({"type": "worker-online", "hostname": "w@h", "pid": 10, "freq": 1.5, "active": 0})
    workers.see({"type": "worker-online", "hostname": "other@h", "pid": 30, "freq": 2.0, "active": 0})

    def status(offline_after: float = 60, forget_after: float = 600) -> str | None:
        rows = workers.rows(timeout=10, offline_after=offline_after, forget_after=forget_after)
        workers.see({"type": "worker-heartbeat", "hostname": "other@h", "pid": 30, "freq": 2.0})  # stays alive
        return next((r["status"] for r in rows if r["hostname"] == "w@h"), None)

    clock.now += 2.9
    assert status() == "online"  # 2.9 < 1.5 * 2
    clock.now += 0.2
    assert status() == "not responding"  # 3.1 s: its heartbeat is late (not WORKER_TIMEOUT's 10 s)
    clock.now += 56
    assert status() == "not responding"
    clock.now += 1
    assert status() == "offline"  # 60.1 s of silence
    clock.now += 539
    assert status() == "offline"
    clock.now += 1
    assert status() is None  # forgotten: the list stays bounded
    assert workers.get("w@h") is None and workers.get("other@h") is not None
    workers.see({"type": "worker-heartbeat", "hostname": "w@h", "pid": 10, "freq": 1.5})
    assert status() == "online"  # heard from again: back


@pytest.fixture
def broker(redis_server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=redis_server)


@pytest.fixture
def queued_app(redis_server: Any, results: Any, sent: list, broker: fakeredis.FakeRedis) -> Any:
    queues = Queues("redis://unused", ["celery"])
    queues._client = broker
    return make_app(redis_server, results, QUEUES=queues)


def test_workers_and_queues_with_a_queue_nobody_consumes(queued_app: Any, broker: fakeredis.FakeRedis) -> None:
    reconciler = queued_app.extensions["dashboard"].reconciler
    feed(reconciler, {"type": "worker-online", "hostname": "w@h", "pid": 10, "processed": 3, "active": 0})
    reconciler.workers.get("w@h").queues = ["celery"]  # its answer to active_queues
    now = time.time()
    broker.lpush("celery", message("old", created=now - 30), message("new", created=now - 1))
    broker.lpush("nobody", message("lonely", created=now - 5))
    broker.sadd("_kombu.binding.nobody", f"nobody{SEP}{SEP}nobody")
    client = queued_app.test_client()
    [worker] = client.get("/api/workers").get_json()["workers"]
    assert worker["hostname"] == "w@h" and worker["status"] == "online" and worker["processed"] == 3
    queues = {q["name"]: q for q in client.get("/api/queues").get_json()["queues"]}
    assert queues["celery"]["depth"] == 2 and queues["celery"]["consumers"] == 1
    assert queues["celery"]["unconsumed"] is False and 29 <= queues["celery"]["oldest_age"] <= 40
    assert queues["nobody"]["depth"] == 1 and queues["nobody"]["consumers"] == 0
    assert queues["nobody"]["unconsumed"] is True
    with queued_app.app_context():
        pushed = monitor.snapshot()
    assert {q["name"] for q in pushed["queues"]} == {"celery", "nobody"} and len(pushed["workers"]) == 1


def test_a_queue_is_not_called_unconsumed_while_a_worker_has_not_said_what_it_consumes(
        queued_app: Any, broker: fakeredis.FakeRedis) -> None:
    feed(queued_app.extensions["dashboard"].reconciler, {"type": "worker-online", "hostname": "w@h", "pid": 1})
    broker.lpush("celery", message("x"))
    [queue] = queued_app.test_client().get("/api/queues").get_json()["queues"]
    assert queue["depth"] == 1 and queue["unconsumed"] is False
    assert queue["oldest"] is None  # neither the message nor the index knows when it was sent


def ended(dash: Any, task_id: str, name: str, state: str, finished: float, ran: float,
          owner: str | None = None) -> None:
    """A task in the index that ended at `finished` (epoch s) after running `ran` seconds."""
    dash.store.merge({task_id: {"id": task_id, "name": name, "state": state, "created": iso(finished - ran - 1),
                                "started": iso(finished - ran), "finished": iso(finished), "owner": owner}})


def test_stats_per_minute_throughput_failures_and_run_time_percentiles(client: Any, dash: Any) -> None:
    now = time.time()
    for i in range(10):
        ended(dash, f"ok{i}", "tasks.demo.steps", "SUCCESS", now - 200, ran=i + 1.0)
    ended(dash, "bad", "tasks.demo.steps", "FAILURE", now - 200, ran=0.5)
    ended(dash, "other", "tasks.demo.fail", "FAILURE", now - 3000, ran=2.0)
    ended(dash, "ancient", "tasks.demo.fail", "SUCCESS", now - 9000, ran=2.0)
    body = client.get("/api/stats?window=3600").get_json()
    assert body["bucket"] == 60 and len(body["times"]) == 60 and body["truncated"] is False
    steps, fail = body["tasks"]  # busiest first
    assert steps["name"] == "tasks.demo.steps" and steps["ended"] == 11 and steps["failed"] == 1
    assert sum(steps["throughput"]) == 11 and max(steps["throughput"]) == 11
    minute = steps["throughput"].index(11)
    assert steps["failures"][minute] == 1
    assert steps["p50"][minute] == 5.0 and steps["p95"][minute] == 10.0  # nearest rank over 0.5, 1..10
    assert fail["ended"] == 1 and fail["failed"] == 1  # the one older than the window is left out
    assert client.get("/api/stats?window=5").status_code == 422
    assert client.get("/api/stats?window=x").get_json()["fields"][0]["field"] == "window"
    assert len(client.get("/api/stats?window=86400").get_json()["times"]) <= 120


@pytest.fixture
def secure_app(redis_server: Any, results: Any, sent: list) -> Any:
    app = make_app(redis_server, results, AUTH_REQUIRED=True, METRICS_TOKEN="scrape-" + "x" * 40)
    users = app.extensions["dashboard"].users
    app.tokens = {}
    for role in ("viewer", "operator", "admin"):
        users.add(role, PASSWORD, role)
        app.tokens[role] = users.new_token(role)
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_stats_count_only_the_tasks_the_user_may_see(secure_app: Any) -> None:
    dash, client, now = secure_app.extensions["dashboard"], secure_app.test_client(), time.time()
    ended(dash, "mine", "tasks.demo.steps", "SUCCESS", now - 100, 1.0, owner="operator")
    ended(dash, "theirs", "tasks.demo.fail", "FAILURE", now - 100, 1.0, owner="viewer")
    mine = client.get("/api/stats", headers=bearer(secure_app.tokens["operator"])).get_json()
    assert [t["name"] for t in mine["tasks"]] == ["tasks.demo.steps"]
    every = client.get("/api/stats", headers=bearer(secure_app.tokens["admin"])).get_json()
    assert {t["name"] for t in every["tasks"]} == {"tasks.demo.steps", "tasks.demo.fail"}


def test_metrics_are_for_admins_and_the_scrapers_token(secure_app: Any) -> None:
    client = secure_app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics").get_json()["error"]
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    for role in ("viewer", "operator"):
        assert client.get("/metrics", headers=bearer(secure_app.tokens[role])).status_code == 403
    assert client.get("/metrics", headers=bearer(secure_app.tokens["admin"])).status_code == 200
    assert client.get("/metrics", headers=bearer(secure_app.config["METRICS_TOKEN"])).status_code == 200


def test_metrics_families_in_prometheus_text(client: Any, dash: Any) -> None:
    now = time.time()
    ended(dash, "a", "tasks.demo.steps", "SUCCESS", now - 100, 1.5)
    ended(dash, "b", "tasks.demo.steps", "FAILURE", now - 100, 40.0)
    feed(dash.reconciler, {"type": "worker-online", "hostname": "w@h", "pid": 1})
    response = client.get("/metrics")  # a loopback run: the local admin
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("dashboard_tasks", (("name", "tasks.demo.steps"), ("state", "SUCCESS")))] == 1
    assert samples[("dashboard_tasks", (("name", "tasks.demo.steps"), ("state", "FAILURE")))] == 1
    assert samples[("dashboard_task_runtime_seconds_bucket", (("le", "2.5"), ("name", "tasks.demo.steps")))] == 1
    assert samples[("dashboard_task_runtime_seconds_bucket", (("le", "+Inf"), ("name", "tasks.demo.steps")))] == 2
    assert samples[("dashboard_workers_online", ())] == 1
    assert {"dashboard_queue_depth", "dashboard_socketio_clients"} <= set(families)


def test_a_task_that_ends_after_a_scan_is_counted_at_the_next_one(dash: Any) -> None:
    stats = TaskStats(dash.store, cache_seconds=0)
    now = time.time()
    ended(dash, "old", "tasks.demo.steps", "SUCCESS", now - 120, 1.0)
    dash.store.merge({"run": {"id": "run", "name": "tasks.demo.steps", "state": "STARTED", "created": iso(now - 5),
                              "started": iso(now - 4)}})
    assert stats.series(None, 3600)["tasks"][0]["ended"] == 1
    dash.store.merge({"run": {"id": "run", "state": "SUCCESS", "finished": iso(now)}})
    assert stats.series(None, 3600)["tasks"][0]["ended"] == 2
    assert stats.series(None, 3600)["tasks"][0]["ended"] == 2  # the settled row kept from the scan before


def test_the_push_goes_out_when_what_the_page_shows_changed_not_at_every_heartbeat() -> None:
    row = {"hostname": "w@h", "status": "online", "active": 1, "last_heartbeat": "2026-01-01T00:00:00+00:00",
           "seconds_since_seen": 0.5}
    queue = {"name": "q", "depth": 2, "oldest_age": 3.0, "unconsumed": False}
    before = monitor.digest({"workers": [row], "queues": [queue]})
    later = {"workers": [dict(row, last_heartbeat="2026-01-01T00:00:02+00:00", seconds_since_seen=0.1)],
             "queues": [dict(queue, oldest_age=5.0)]}
    assert monitor.digest(later) == before  # only time went by
    assert monitor.digest({"workers": [dict(row, active=2)], "queues": [queue]}) != before
    assert monitor.digest({"workers": [row], "queues": [dict(queue, unconsumed=True)]}) != before


def test_a_beacon_sent_after_a_workers_goodbye_does_not_bring_it_back() -> None:
    workers = Workers()
    workers.see({"type": "worker-online", "hostname": "w@h", "pid": 10})
    workers.see({"type": "worker-offline", "hostname": "w@h", "pid": 10})
    workers.see({"type": "worker-beacon", "hostname": "w@h", "pid": 10})  # sent as the worker shuts down
    assert workers.rows(timeout=10)[0]["status"] == "offline"
    workers.see({"type": "worker-online", "hostname": "w@h", "pid": 10})  # reconnected to the broker
    assert workers.rows(timeout=10)[0]["status"] == "online"
