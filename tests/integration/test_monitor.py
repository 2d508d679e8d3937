"""Workers, queues and /metrics against the real stack: a real worker, a real broker queue."""
from __future__ import annotations

import uuid
from typing import Any

import redis
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tasks.celery_app import DEMO_QUEUE
from tests.integration.conftest import Api
from tests.support import Stack, wait_for


def worker_row(api: Api) -> dict[str, Any] | None:
    workers = api.get("/api/workers").json()["workers"]
    return next((w for w in workers if w["hostname"].startswith("worker@") and w["status"] == "online"
                 and w["concurrency"] and w["queues"] is not None), None)


def test_the_worker_is_listed_online_with_its_pool_and_its_processed_count_grows(stack: Stack, api: Api) -> None:
    before = wait_for(lambda: worker_row(api), 30, what="the worker online with its pool, size and queues")
    assert before["pool"] == "prefork" and before["concurrency"] == 4 and DEMO_QUEUE in before["queues"]
    assert before["last_heartbeat"]
    ids = [api.launch("steps", steps=1, delay=0.05 + i / 100)["id"] for i in range(3)]  # not identical: no attach
    for task_id in ids:
        api.wait(task_id)
    after = wait_for(lambda: (row := worker_row(api)) and row["processed"] >= before["processed"] + 3 and row,
                     30, what="the processed count to grow by 3")
    assert after["failed"] >= before["failed"]
    queues = {q["name"]: q for q in api.get("/api/queues").json()["queues"]}
    assert queues[DEMO_QUEUE]["consumers"] >= 1 and queues[DEMO_QUEUE]["unconsumed"] is False


def test_a_queue_with_messages_and_no_consumer_is_unconsumed(stack: Stack, api: Api) -> None:
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    stack.python("from tasks.celery_app import celery_app\n"
                 f"celery_app.send_task('tasks.demo.steps', kwargs={{'steps': 1}}, queue={queue!r})")
    try:
        def listed() -> dict[str, Any] | None:
            found = [q for q in api.get("/api/queues").json()["queues"] if q["name"] == queue]
            return found[0] if found and found[0]["unconsumed"] else None

        row = wait_for(listed, 30, what=f"queue {queue} listed as unconsumed")
        assert row["depth"] == 1 and row["consumers"] == 0
        assert row["oldest_age"] is not None and row["oldest_age"] >= 0  # sent time from the task index
    finally:
        redis.Redis.from_url(stack.redis_url).delete(queue)


def test_metrics_parse_as_prometheus_text_with_every_family(stack: Stack, api: Api) -> None:
    wait_for(lambda: worker_row(api), 30, what="the worker online")
    api.wait(api.launch("steps", steps=1, delay=0.09)["id"])
    response = api.get("/metrics")  # a loopback run: the local admin
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"dashboard_tasks", "dashboard_task_runtime_seconds", "dashboard_workers_online",
            "dashboard_queue_depth", "dashboard_socketio_clients"} <= set(families)
    online = families["dashboard_workers_online"].samples[0].value
    assert online >= 1
    succeeded = [s for s in families["dashboard_tasks"].samples
                 if s.labels == {"state": "SUCCESS", "name": "tasks.demo.steps"}]
    assert succeeded and succeeded[0].value >= 1
    assert any(s.labels.get("queue") == DEMO_QUEUE for s in families["dashboard_queue_depth"].samples)


def test_the_served_web_froze_its_startup_objects_and_times_its_collections(stack: Stack, api: Api) -> None:
    """serve.py keeps what it built at start out of the collector (a full collection walked it all,
    pausing every client), and /metrics shows the collections it still runs, by generation."""
    def samples() -> dict[tuple[str, str], float]:
        families = text_string_to_metric_families(api.get("/metrics").text)
        return {(s.name, s.labels.get("generation", "")): s.value for f in families for s in f.samples}

    first = samples()
    assert first[("dashboard_gc_frozen_objects", "")] > 50_000  # modules, Flask, Celery, kombu: ~110,000
    for _ in range(3):  # each launch allocates: young collections follow
        api.wait(api.launch("steps", steps=1, delay=0)["id"])
    later = wait_for(lambda: (s := samples())[("dashboard_gc_pause_seconds_count", "0")]
                     > first[("dashboard_gc_pause_seconds_count", "0")] and s, 30, what="a young collection timed")
    assert later[("dashboard_gc_pause_seconds_sum", "0")] > first[("dashboard_gc_pause_seconds_sum", "0")]
    assert 0 < later[("dashboard_gc_longest_pause_seconds", "0")] < 10
    # a frozen object freed since by its reference count leaves the count; nothing joins it
    assert later[("dashboard_gc_frozen_objects", "")] <= first[("dashboard_gc_frozen_objects", "")]


def test_every_client_gets_the_workers_push(stack: Stack, api: Api) -> None:
    pushed: list[dict[str, Any]] = []
    client = socketio.Client(reconnection=False)
    client.on("workers", pushed.append)
    client.connect(stack.url, transports=["websocket"], wait_timeout=20)
    try:
        wait_for(lambda: pushed, 15, what="a workers push")  # a new client gets one at the next tick
        assert {"workers", "queues"} <= set(pushed[-1])
        assert any(w["hostname"].startswith("worker@") for w in pushed[-1]["workers"])
    finally:
        client.disconnect()


def test_a_second_worker_appears_with_its_own_pool_and_queue_and_goes_offline_when_stopped(
        stack: Stack, api: Api) -> None:
    queue = f"second-{uuid.uuid4().hex[:6]}"
    worker = stack.start_worker(concurrency=1, name="second", pool="solo", queues=queue)

    def row(status: str) -> dict[str, Any] | None:
        found = [w for w in api.get("/api/workers").json()["workers"] if w["hostname"].startswith("second@")]
        return found[0] if found and found[0]["status"] == status and found[0]["queues"] is not None else None

    try:
        online = wait_for(lambda: row("online"), 30, what="the second worker online with its queues")
        assert (online["pool"], online["concurrency"], online["queues"]) == ("solo", 1, [queue])
        consumers = {q["name"]: q["consumers"] for q in api.get("/api/queues").json()["queues"]}
        assert consumers.get(queue) == 1
    finally:
        worker.stop()  # a warm shutdown: it says goodbye (worker-offline)
    offline = wait_for(lambda: row("offline"), 30, what="the second worker offline")
    assert offline["online"] is False and offline["active"] == 0
