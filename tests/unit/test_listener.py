from __future__ import annotations

import base64
import json
import time
from typing import Any

import fakeredis
import pytest

from tasks.celery_app import celery_app
from web.listener import Listener, decode


def test_task_events_become_updates_and_others_are_dropped() -> None:
    updates: list[dict[str, Any]] = []
    listener = Listener(celery_app, updates.append)
    listener.handle({"type": "worker-heartbeat", "hostname": "w"})
    listener.handle({"type": "task-started", "uuid": "t1", "timestamp": 1.0, "hostname": "w"})
    listener.handle({"type": "task-progress", "uuid": "t1", "timestamp": 2.0, "hostname": "w",
                     "progress": {"current": 1, "total": 2, "percent": 50.0, "message": "half"}})
    assert [u["state"] for u in updates] == ["STARTED", "PROGRESS"]
    assert updates[1]["progress"]["message"] == "half"
    assert listener.events == 3


def test_worker_events_go_to_the_worker_tracker() -> None:
    workers: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    def on_worker(event: dict[str, Any]) -> dict[str, Any]:
        workers.append(event)
        return event

    listener = Listener(celery_app, updates.append, on_worker=on_worker)
    listener.handle({"type": "worker-heartbeat", "hostname": "w", "freq": 2.0})
    listener.handle({"type": "worker-offline", "hostname": "w"})
    assert [w["type"] for w in workers] == ["worker-heartbeat", "worker-offline"] and updates == []
    listener.handle({"type": "task-started", "uuid": "t1", "hostname": "w"})  # a task event is a sign of life too
    assert workers[-1]["type"] == "task-started" and updates[0]["state"] == "STARTED"


def test_the_loop_survives_a_broker_that_is_down_and_backs_off() -> None:
    sleeps: list[float] = []

    class Broken:
        def connection_for_read(self) -> Any:
            raise ConnectionError("refused")

    listener = Listener(Broken(), lambda u: None, sleep=sleeps.append)  # type: ignore[arg-type]

    def stop_after_four(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 4:
            listener.stop()

    listener.sleep = stop_after_four
    listener.run()
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def envelope(event: Any) -> str:
    """A Celery event as kombu publishes it over Redis pub/sub (copied from `redis-cli monitor`)."""
    return json.dumps({
        "body": base64.b64encode(json.dumps(event).encode()).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": "task.progress"},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": "d5783f21"}})


def test_decode_reads_the_event_kombu_published() -> None:
    event = {"type": "task-progress", "uuid": "abc", "hostname": "x@y", "progress": {"current": 1}, "sent": 1.0}
    assert decode(envelope(event)) == [event]
    assert decode(json.dumps({"content-type": "application/x-python-serialize", "body": "gASV"})) == []


def test_decode_reads_a_worker_s_batch_of_events() -> None:
    batch = [{"type": "task-received", "uuid": "a"}, {"type": "task-started", "uuid": "a"}]
    assert decode(envelope(batch)) == batch  # type: ignore[arg-type]


def test_decode_reads_what_python_s_json_writes_and_orjson_refuses() -> None:
    import math

    # kombu serializes with json.dumps: NaN goes out as a bare NaN, a lone surrogate as an escape.
    batch = [{"type": "task-progress", "uuid": "a", "progress": {"current": math.nan, "total": 3}},
             {"type": "task-received", "uuid": "b", "args": "('\ud800',)"}]
    got = decode(envelope(batch))
    assert math.isnan(got[0]["progress"]["current"]) and got[1] == batch[1]
    with pytest.raises(ValueError):
        decode(b"not json")


def test_the_listener_reads_the_real_channels_and_survives_junk() -> None:
    server = fakeredis.FakeServer()
    publisher = fakeredis.FakeRedis(server=server)
    updates: list[dict[str, Any]] = []
    listener = Listener(celery_app, updates.append)
    pubsub = fakeredis.FakeRedis(server=server).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/0.celeryev/*")
    listener.subscribe = lambda: pubsub  # type: ignore[method-assign]
    listener.on_connect = lambda since: [
        publisher.publish("/0.celeryev/task.progress", "not json"),
        publisher.publish("/0.celeryev/task.progress", envelope({"type": 7, "uuid": "t0"})),
        publisher.publish("/0.celeryev/task.started", envelope({"type": "task-started", "uuid": "t1",
                                                                 "timestamp": 1.0, "hostname": "w"})),
    ]
    sleeps: list[float] = []

    def stop_on_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        listener.stop()

    listener.sleep = stop_on_sleep
    import threading

    thread = threading.Thread(target=listener.run)
    thread.start()
    deadline = time.monotonic() + 5
    while not updates and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.stop()
    thread.join(5)
    assert [u["state"] for u in updates] == ["STARTED"]
    assert listener.events == 2 and sleeps == []  # junk was skipped, the stream never cut


def test_each_connect_names_when_the_gap_began_the_first_one_the_last_heartbeat() -> None:
    """The first connect of a web process: since the last heartbeat any listener wrote (the time no
    web listened); a reconnect: since this listener lost its connection. Once connected it beats."""
    import redis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    client.set("dashboard:listened", "1000.5")
    gaps: list[float | None] = []
    listener = Listener(celery_app, lambda update: None, on_connect=gaps.append, sleep=lambda seconds: None)

    class CutAtOnce:
        def get_message(self, timeout: float) -> None:
            raise redis.ConnectionError("Redis closed the connection")

        def close(self) -> None:
            pass

    def subscribe() -> CutAtOnce:
        listener.client = client
        if len(gaps) == 2:
            listener.stop()
        return CutAtOnce()

    listener.subscribe = subscribe  # type: ignore[method-assign]
    before = time.time()
    listener.run()
    assert gaps[0] == 1000.5
    assert gaps[1] is not None and before <= gaps[1] <= time.time()
    assert float(client.get("dashboard:listened")) >= before


def test_a_heartbeat_redis_refuses_never_cuts_the_subscription(caplog: pytest.LogCaptureFixture) -> None:
    """Redis out of memory (maxmemory, noeviction) refuses the heartbeat's SET: logged, and the
    events are read on (raised, it dropped and remade the subscription every 5 s)."""
    import redis

    class Refusing(fakeredis.FakeRedis):
        def set(self, *args: Any, **kwargs: Any) -> Any:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    listener = Listener(celery_app, lambda update: None)
    listener.client = Refusing(server=fakeredis.FakeServer())
    with caplog.at_level("WARNING"):
        listener.beat()
    assert "heartbeat not written" in caplog.text and listener.beaten > 0


def test_a_reconnect_forgets_which_attempt_each_task_was_on() -> None:
    """Celery's task-started names no attempt: the listener gives it the attempt last received. A gap
    may lose the next attempt's task-received, so after a reconnect nothing from before counts."""
    import redis

    updates: list[dict] = []
    listener = Listener(celery_app, updates.append, sleep=lambda seconds: None)
    started = {"type": "task-started", "uuid": "t", "timestamp": 2.0, "hostname": "w"}
    listener.handle({"type": "task-received", "uuid": "t", "retries": 1, "timestamp": 1.0, "hostname": "w"})
    listener.handle(dict(started))
    assert updates[-1]["retries"] == 1

    class CutAtOnce:
        def get_message(self, timeout: float) -> None:
            listener.stop()
            raise redis.ConnectionError("Redis closed the connection")

        def close(self) -> None:
            pass

    listener.subscribe = lambda: CutAtOnce()  # type: ignore[method-assign]
    listener.beat = lambda: None  # type: ignore[method-assign]
    listener.run()
    listener.handle(dict(started))
    assert "retries" not in updates[-1]
