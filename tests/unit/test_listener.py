from __future__ import annotations

from typing import Any

from tasks.celery_app import celery_app
from web.listener import Listener


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
    listener = Listener(celery_app, updates.append, on_worker=workers.append)
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
