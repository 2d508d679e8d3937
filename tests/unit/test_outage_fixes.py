"""What a Redis outage must not make the dashboard say: a task its worker kept running is not lost,
and a real outcome that arrives late still replaces a verdict (tests/integration/test_outage.py)."""
from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from web import records
from web.coalescer import Coalescer
from web.pusher import Pusher
from web.reconciler import OFFLINE_SETTLE, Reconciler
from web.store import TaskStore
from web.workers import Workers


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Parts:
    """A reconciler, coalescer, pusher and store on an in-memory Redis, fed synthetic events."""

    def __init__(self) -> None:
        self.clock, self.wall = Clock(1000.0), Clock(1_700_000_000.0)
        self.metas: dict[str, dict[str, Any]] = {}
        self.store = TaskStore(fakeredis.FakeRedis())
        self.coalescer = Coalescer()
        read = lambda ids: {i: self.metas[i] for i in ids if i in self.metas}  # noqa: E731
        self.pusher = Pusher(self.store, self.coalescer, read, lambda batch: None)
        self.workers = Workers(clock=self.clock, wall=self.wall)
        self.reconciler = Reconciler(self.store, self.coalescer, read, self.workers, None, None,
                                     clock=self.clock, wall=self.wall)

    def event(self, kind: str, pid: int = 100, timestamp: float | None = None, **fields: Any) -> None:
        event = self.reconciler.worker_event({"type": kind, "hostname": "w1", "pid": pid,
                                              "timestamp": self.wall.now if timestamp is None else timestamp,
                                              **fields})
        update = records.from_event(event)
        if update:
            self.coalescer.add(update)

    def running(self, *task_ids: str) -> None:
        self.event("worker-online", processed=0)
        for number, task_id in enumerate(task_ids, start=1):
            self.event("task-received", uuid=task_id, name="t")
            self.event("task-started", uuid=task_id)
            self.event("task-progress", uuid=task_id, progress={"current": 1, "total": 10})
            self.event("worker-heartbeat", processed=number, active=number)
        self.settle()

    def settle(self) -> None:
        self.pusher.flush()
        self.reconciler.reconcile()
        self.pusher.flush()

    def later(self, seconds: float) -> None:
        self.clock.now += seconds
        self.wall.now += seconds

    def state(self, task_id: str) -> str:
        return self.store.get(task_id)["state"]


@pytest.fixture
def parts() -> Parts:
    return Parts()


def test_a_worker_that_reconnects_after_a_redis_outage_keeps_its_running_tasks(parts: Parts) -> None:
    parts.running("a", "b")
    parts.later(20)  # Redis away: nothing from anyone; then the consumer reconnects
    parts.event("worker-offline", processed=2, active=2)
    parts.event("worker-online", processed=2, active=2)
    parts.settle()
    assert parts.state("a") == parts.state("b") == "PROGRESS"
    parts.event("task-progress", uuid="a", progress={"current": 2, "total": 10})
    parts.settle()
    assert parts.store.get("a")["progress"]["current"] == 2  # still followed, not frozen by a verdict


def test_a_pass_between_worker_offline_and_its_worker_online_waits_for_it(parts: Parts) -> None:
    parts.running("a")
    parts.later(20)
    parts.event("worker-offline", processed=1, active=1)
    parts.settle()  # the pass comes before the worker-online that follows at once
    parts.later(0.1)
    parts.event("worker-online", processed=1, active=1)
    parts.later(OFFLINE_SETTLE + 1)
    parts.settle()
    assert parts.state("a") == "PROGRESS"


def test_a_worker_that_stays_offline_loses_its_running_tasks(parts: Parts) -> None:
    parts.running("a")
    parts.event("worker-offline", processed=1, active=1)
    parts.settle()
    assert parts.state("a") == "PROGRESS"  # not yet: it may be reconnecting
    parts.later(OFFLINE_SETTLE + 1)
    parts.settle()
    assert parts.state("a") == "LOST"
    assert "stopped" in parts.store.get("a")["error"]["message"]


def test_a_new_process_under_the_same_pid_is_a_restart(parts: Parts) -> None:
    parts.running("a")
    parts.event("worker-offline", processed=1, active=1)
    parts.later(0.5)
    parts.event("worker-online", processed=0, active=0)  # a container's worker: the same pid again
    parts.settle()
    assert parts.state("a") == "LOST"
    assert "restarted" in parts.store.get("a")["error"]["message"]


def test_a_late_success_event_replaces_a_verdict_waiting_to_be_stored(parts: Parts) -> None:
    """A worker's events buffered through an outage arrive with their own (earlier) times, after a
    verdict the reconciler gave meanwhile; the task ignores its result, so only the event tells."""
    parts.running("a")
    finished = parts.wall.now
    parts.later(20)
    parts.coalescer.add(records.lost("a", "w1", "restarted"))
    parts.event("task-succeeded", timestamp=finished, uuid="a", result="None")
    parts.pusher.flush()
    assert parts.state("a") == "SUCCESS"


@pytest.mark.parametrize("ending", ["task-ignored", "task-failed"])
def test_any_late_real_ending_replaces_a_waiting_verdict(parts: Parts, ending: str) -> None:
    parts.running("a")
    finished = parts.wall.now
    parts.later(20)
    parts.coalescer.add(records.unknown("a"))
    parts.event(ending, timestamp=finished, uuid="a", exception="ValueError('x')")
    parts.pusher.flush()
    assert parts.state("a") == {"task-ignored": "IGNORED", "task-failed": "FAILURE"}[ending]
