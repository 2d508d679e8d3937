"""The worker side of the integration: revocations kept in Redis honoured, and ignored tasks announced.

Connected by `import celery_dashboard`; every handler runs only in a worker.

- `worker_ready` (the main worker process, before it takes a message): every unexpired revocation
  in Redis is copied into Celery's own revoked set, `celery.worker.state.revoked`. Celery then
  discards those tasks itself when they arrive (`Request.revoked()` in celery/worker/request.py:
  it logs "Discarding revoked task", stores REVOKED and sends `task-revoked`). A daemon thread
  copies new revocations every REVOCATION_REFRESH seconds; it reads one counter per round and the
  set only when the counter moved. Under `-P gevent` and `-P eventlet` Celery monkey-patches
  before anything is imported, so this thread is a greenlet and its waits and Redis calls yield
  to the hub.
- `task_prerun` (the process and thread that runs the task): a task revoked in Redis since the
  last copy is found here, one Redis read per task.
- `before_start`: stops it. Celery's `Signal.send` catches and logs whatever a receiver raises,
  so a prerun handler cannot stop a body; and with `task_track_started` Celery stores STARTED
  after the prerun, over anything stored there. `Task.before_start` (public since Celery 5.2) runs
  after both, inside the tracer's `try` that handles `Ignore` (celery/app/trace.py): raising
  `Ignore` there skips the body and makes Celery store nothing more. At `worker_init`, before
  the worker builds its tracers (and before prefork's children fork), each task class of the
  worker's app gets a `before_start` that stops the task the prerun check found revoked
  (marks it REVOKED, sends `task-revoked`, raises Ignore), then calls the class's own.
- `task_postrun` with state IGNORED: the task raised `Ignore`, for which Celery stores nothing
  and sends no event; a `task-ignored` event tells the dashboard it ended. Tasks stopped as
  revoked are not announced twice.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_init, worker_ready, worker_shutdown

from celery_dashboard import revocations, settings

log = logging.getLogger(__name__)

GUARD = "_dashboard_revocation_guard"  # marks a before_start this module installed


def install_guards(app: Celery) -> int:
    """Give every task class of `app` the `before_start` that stops a task found revoked; return
    how many classes got it. Idempotent. Must run before the worker builds its tracers."""
    installed = 0
    for task in app.tasks.values():
        cls = type(task)
        if getattr(cls.before_start, GUARD, False):
            continue
        cls.before_start = _guarded(cls.before_start)
        installed += 1
    return installed


def _guarded(before_start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(before_start)
    def guarded(self: Task, task_id: str, args: Any, kwargs: Any) -> Any:
        if getattr(self.request, revocations.FLAG, None) == revocations.FOUND:
            revocations.stop(self, terminated=False)  # raises Ignore: the body does not run
        return before_start(self, task_id, args, kwargs)

    guarded.__module__ = __name__  # Celery tells a task's own handler from its base's by module
    setattr(guarded, GUARD, True)
    return guarded


class Refresher:
    """Copies revocations from Redis into a worker's revoked set (Celery's `LimitedSet`)."""

    def __init__(self, client: Any, revoked: Any, interval: float) -> None:
        self.client = client
        self.revoked = revoked
        self.interval = interval
        self.seen: int | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def refresh(self) -> int:
        """Copy what changed since the last call; return how many ids were new to the worker."""
        changes = revocations.changes(self.client)
        if changes == self.seen:
            return 0
        limit = min(settings.REVOCATION_LIMIT, self.revoked.maxlen or settings.REVOCATION_LIMIT)
        ids = revocations.revoked_ids(self.client, limit=limit)
        added = 0
        for task_id in reversed(ids):  # the latest to expire last: the set drops its oldest first
            if task_id not in self.revoked:
                self.revoked.add(task_id)
                added += 1
        self.seen = changes
        return added

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="dashboard-revocations", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                added = self.refresh()
            except Exception as exc:  # the loop must outlive Redis outages
                log.warning("revocations not refreshed: %s", exc)
            else:
                if added:
                    log.info("%d task(s) revoked in Redis, now revoked in this worker", added)

    def stop(self) -> None:
        self.stopping.set()


_refresher: Refresher | None = None


@worker_init.connect
def _install(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        install_guards(app)


@worker_ready.connect
def _load(sender: Any = None, **_: Any) -> None:
    global _refresher
    from celery.worker import state  # a worker module: imported only once a worker runs

    app = getattr(sender, "app", None)
    client = revocations.client_for(app) if app is not None else None
    if client is None or _refresher is not None:
        return
    _refresher = Refresher(client, state.revoked, settings.REVOCATION_REFRESH)
    try:
        added = _refresher.refresh()
        log.info("%d task(s) revoked in Redis, revoked in this worker before it takes any", added)
    except Exception as exc:  # the worker must start without Redis too; the thread catches up
        log.warning("revocations not loaded at start: %s", exc)
    _refresher.start()


@worker_shutdown.connect
def _unload(**_: Any) -> None:
    global _refresher
    if _refresher is not None:
        _refresher.stop()
        _refresher = None


@task_prerun.connect
def _check(sender: Task | None = None, task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    task = task or sender
    if task is None or not task_id:
        return
    request = task.request
    if request.is_eager or request.called_directly:
        return
    try:
        client = revocations.client_for(task.app)
        found = client is not None and revocations.is_revoked(client, task_id)
    except Exception as exc:  # without Redis the task runs, as it would without the dashboard
        log.warning("revocation of %s not checked: %s", task_id, exc)
        return
    if found:
        setattr(request, revocations.FLAG, revocations.FOUND)
        if not getattr(type(task).before_start, GUARD, False):
            log.warning("task %s[%s] is revoked but runs: its class was registered after the worker "
                        "started, so it cannot be stopped before its body", task.name, task_id)
        return
    # The worker's own task events are buffered and flushed by its event loop, which a solo pool
    # blocks while a task runs: the dashboard would see the task start only when it ended. This
    # one goes out at once (the task's own dispatcher, as task-progress does).
    try:
        task.send_event("task-started", via="celery_dashboard", retries=request.retries or 0,
                        retry_policy={"max_retries": 0})
    except Exception as exc:  # noqa: BLE001 - a missed event is reconciled later; the task runs
        log.warning("task-started event for %s not sent: %s", task_id, exc)


@task_postrun.connect
def _announce_ignored(sender: Task | None = None, task: Task | None = None, state: str | None = None,
                      **_: Any) -> None:
    task = task or sender
    if state != "IGNORED" or task is None or task.request.is_eager:
        return
    if getattr(task.request, revocations.FLAG, None) == revocations.STOPPED:
        return  # ended as revoked: task-revoked was sent
    try:
        task.send_event("task-ignored")
    except Exception as exc:
        log.warning("task-ignored event for %s not sent: %s", task.request.id, exc)
