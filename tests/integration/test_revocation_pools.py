"""Revocations kept in Redis and the cooperative cancel, on real workers of every pool.

A user's app (tests/userapp/cancelapp.py, which imports celery_dashboard) runs in a real
`celery worker -P <pool>` on a private redis-server. The test process is a client of that app,
as a user's shell would be; it reads the outcome from the result backend, Celery's events and the
markers the tasks write in Redis.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from celery_dashboard import revocations
from tests.conftest import ARTIFACTS  # this test process's own folder under pytest-xdist
from tests.support import BIN, ROOT, Process, Stack, wait_for

POOLS = ["prefork", "solo", "threads", "gevent", "eventlet"]
USERAPP = ROOT / "tests" / "userapp"
TIMEOUT = 30.0
REFRESHED = "revoked in Redis, now revoked in this worker"  # the worker's log line after a refresh
MEASURED: dict[str, dict[str, float]] = {}  # pool -> seconds, written to tests/artifacts


class Worker:
    """One `celery -A cancelapp worker -P <pool>`, started, stopped and restarted by the tests."""

    def __init__(self, stack: Stack, pool: str) -> None:
        self.stack = stack
        self.pool = pool
        self.proc: Process | None = None
        self.since = 0  # where the running incarnation's output starts in the log

    def start(self) -> None:
        if self.proc is not None and self.proc.alive():
            return
        log = self.stack.logdir / f"worker-{self.pool}.log"
        self.since = log.stat().st_size if log.exists() else 0
        concurrency = {"prefork": 2, "threads": 4}.get(self.pool, 10)
        self.proc = Process(f"worker-{self.pool}", [
            str(BIN / "celery"), "-A", "cancelapp", "worker", "-P", self.pool, f"--concurrency={concurrency}",
            "--loglevel=INFO", "-n", f"{self.pool}@%h", "--without-mingle", "--without-gossip"],
            self.stack.env, self.stack.logdir)
        wait_for(lambda: "ready." in self.output(), 60, what=f"{self.pool} worker ready")

    def stop(self) -> None:
        """A warm shutdown, as systemd or Kubernetes asks for one."""
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=20)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def output(self) -> str:
        """What this incarnation has logged so far."""
        assert self.proc is not None
        return self.proc.log_path.read_bytes()[self.since:].decode(errors="replace")


class Events:
    """Every Celery event on the stack's Redis, captured with Celery's own receiver."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.receiver is not None, 10, what="event receiver")

    def run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.record})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def record(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("uuid") == task_id]

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A private redis-server; workers of the user's app find it in REDIS_URL."""
    running = Stack(logdir=ARTIFACTS / "logs" / "revocation", env={
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(USERAPP)]),
        "REVOCATION_REFRESH": "1",
    })
    try:
        running.start_redis()
        yield running
    finally:
        running.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "revocation_pools.json").write_text(json.dumps(MEASURED, indent=2))


@pytest.fixture(scope="module")
def client_app(stack: Stack) -> Celery:
    """The user's app as their shell sees it: the same Redis, tasks sent by name."""
    app = Celery("cancelapp", broker=stack.redis_url, backend=stack.redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return app


@pytest.fixture(scope="module")
def r(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


@pytest.fixture(scope="module")
def events(client_app: Celery) -> Iterator[Events]:
    recorder = Events(client_app)
    yield recorder
    recorder.stop()


@pytest.fixture(scope="module", params=POOLS)
def worker(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Worker]:
    """The pool's worker, shared by the module's tests; each test starts it if it needs it running."""
    running = Worker(stack, request.param)
    MEASURED.setdefault(request.param, {})
    try:
        yield running
    finally:
        running.stop()


def state(app: Celery, task_id: str) -> str:
    return app.AsyncResult(task_id).state


def revoke(app: Celery, r: redis.Redis, task_id: str, broadcast: bool = True) -> None:
    """What the dashboard does: keep the revocation in Redis, and tell the workers online."""
    revocations.revoke(r, task_id)
    if broadcast:
        app.control.revoke(task_id)


def ran(r: redis.Redis, task_id: str) -> bool:
    return bool(r.exists(f"cancelapp:started:{task_id}"))


def test_a_task_revoked_while_no_worker_is_online_never_runs(worker: Worker, client_app: Celery,
                                                            r: redis.Redis, events: Events) -> None:
    worker.stop()
    task_id = client_app.send_task("cancelapp.quiet").id
    revoke(client_app, r, task_id)  # the broadcast reaches nobody
    worker.start()
    wait_for(lambda: state(client_app, task_id) == "REVOKED", TIMEOUT, what="REVOKED in the backend")
    assert not ran(r, task_id)
    assert f"Discarding revoked task: cancelapp.quiet[{task_id}]" in worker.output()  # by Celery itself
    wait_for(lambda: any(e["type"] == "task-revoked" for e in events.of(task_id)), 10, what="task-revoked")


def test_a_restarted_worker_still_honours_a_revocation_made_before_it_started(
        worker: Worker, client_app: Celery, r: redis.Redis) -> None:
    worker.start()
    task_id = client_app.send_task("cancelapp.quiet", countdown=30).id  # held by the worker until then
    wait_for(lambda: f"Task cancelapp.quiet[{task_id}] received" in worker.output(), TIMEOUT,
             what="the worker holding the task")
    revoke(client_app, r, task_id)  # this incarnation knows it in memory ...
    worker.restart()                # ... the next one gets the message back and must still know
    # Not the backend's REVOKED: Celery's revoke command (celery.worker.control._revoke, 5.7) stores
    # it at once for a task that is not running, so it is there before the restart.
    wait_for(lambda: f"Discarding revoked task: cancelapp.quiet[{task_id}]" in worker.output(), TIMEOUT,
             what="the restarted worker discarding the task")
    assert state(client_app, task_id) == "REVOKED"
    assert not ran(r, task_id)


def test_a_running_task_revoked_through_redis_stops_at_its_next_progress_report(
        worker: Worker, client_app: Celery, r: redis.Redis, events: Events) -> None:
    worker.start()
    task_id = client_app.send_task("cancelapp.long", kwargs={"steps": 100, "delay": 0.2}).id
    wait_for(lambda: state(client_app, task_id) == "PROGRESS", TIMEOUT, interval=0.05, what="PROGRESS")
    revoked_at = time.monotonic()
    revoke(client_app, r, task_id, broadcast=False)  # no worker memory involved: only the progress check
    wait_for(lambda: state(client_app, task_id) == "REVOKED", TIMEOUT, interval=0.02, what="REVOKED")
    MEASURED[worker.pool]["cancel_to_revoked_s"] = round(time.monotonic() - revoked_at, 3)
    last_step = r.get(f"cancelapp:step:{task_id}")
    time.sleep(1.0)  # five more steps, had the body gone on
    assert r.get(f"cancelapp:step:{task_id}") == last_step
    assert not r.exists(f"cancelapp:finished:{task_id}")
    assert state(client_app, task_id) == "REVOKED"  # nothing stored over it
    wait_for(lambda: [e for e in events.of(task_id) if e["type"] == "task-revoked"], 10, what="task-revoked")
    revoked = [e for e in events.of(task_id) if e["type"] == "task-revoked"]
    assert len(revoked) == 1 and revoked[0]["terminated"] is True
    assert not {"task-succeeded", "task-failed"} & {e["type"] for e in events.of(task_id)}


def test_a_task_revoked_in_redis_only_while_the_worker_runs_never_runs(
        worker: Worker, client_app: Celery, r: redis.Redis, events: Events) -> None:
    worker.start()
    task_id = str(uuid.uuid4())
    revoke(client_app, r, task_id, broadcast=False)  # as if the broadcast was lost
    client_app.send_task("cancelapp.quiet", task_id=task_id)
    wait_for(lambda: state(client_app, task_id) == "REVOKED", TIMEOUT, what="REVOKED in the backend")
    assert not ran(r, task_id)
    wait_for(lambda: [e for e in events.of(task_id) if e["type"] == "task-revoked"], 10, what="task-revoked")
    assert not {"task-succeeded", "task-failed", "task-ignored"} & {e["type"] for e in events.of(task_id)}
    # Found before its body by the check in the task's own process, or already copied into the
    # worker's memory by the periodic refresh (then Celery discards it): either way it never ran.
    # (revocations.stop logs after it stored REVOKED and sent task-revoked: the line may follow them.)
    wait_for(lambda: f"[{task_id}] revoked in Redis: stopped before it ran" in worker.output()
             or f"Discarding revoked task: cancelapp.quiet[{task_id}]" in worker.output(), 10,
             what="the worker's line saying how it stopped the task")


def test_the_worker_picks_up_revocations_made_in_redis_while_it_runs(
        worker: Worker, client_app: Celery, r: redis.Redis) -> None:
    worker.start()
    refreshes = worker.output().count(REFRESHED)
    task_id = str(uuid.uuid4())
    revoke(client_app, r, task_id, broadcast=False)
    wait_for(lambda: worker.output().count(REFRESHED) > refreshes, 10, what="the periodic refresh")
    client_app.send_task("cancelapp.quiet", task_id=task_id)
    wait_for(lambda: state(client_app, task_id) == "REVOKED", TIMEOUT, what="REVOKED in the backend")
    assert f"Discarding revoked task: cancelapp.quiet[{task_id}]" in worker.output()
    assert not ran(r, task_id)


def test_a_task_that_raises_ignore_is_announced_as_ignored(worker: Worker, client_app: Celery,
                                                           r: redis.Redis, events: Events) -> None:
    worker.start()
    task_id = client_app.send_task("cancelapp.ignored").id
    wait_for(lambda: [e for e in events.of(task_id) if e["type"] == "task-ignored"], TIMEOUT, what="task-ignored")
    assert ran(r, task_id)
    assert state(client_app, task_id) == "STARTED"  # Celery stores nothing for Ignore

