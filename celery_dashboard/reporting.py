"""Progress reporting for task authors, throttled before it touches the network; a cancel point.

Each report that is sent also checks whether the task was revoked (celery_dashboard.revocations):
a revoked task stops at that report, on every pool, even solo and threads where Celery's
`revoke(terminate=True)` cannot stop a running task.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from threading import get_ident
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import task_prerun

from celery_dashboard import revocations
from celery_dashboard import settings as config

log = logging.getLogger(__name__)

PROGRESS = "PROGRESS"
MAX_MESSAGE = 500
MAX_STRIDE = 16  # calls between two clock reads at most (Throttle)


class Throttle:
    """Decides which progress calls are sent: at most one per interval, and always the last.

    A skipped call is meant to cost next to nothing, and reading the clock is the dearest part of
    it: in a fast loop the clock is read only every `stride`-th call (`left` counts down to it).
    The stride doubles, up to MAX_STRIDE, while `stride` calls take under 1% of the interval, and
    falls back to 1 as soon as they take 10% of it; a clock that did not move (a test's) tells
    nothing and changes nothing. A report is so at most MAX_STRIDE calls late, calls that took
    under 1% of the interval at the loop's pace (bench/progress_cost.py measures the saving).
    """

    __slots__ = ("interval", "clock", "next_at", "sent", "left", "stride", "read_at")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = 0.0
        self.sent = 0
        self.left = 0       # calls still to skip without reading the clock
        self.stride = 1
        self.read_at: float | None = None

    def due(self, current: float, total: float) -> bool:
        """True when this call should be sent; the final value (current >= total) always is."""
        now = self.clock()
        if self.read_at is not None:
            elapsed = now - self.read_at
            if 0 < elapsed < self.interval / 100:
                self.stride = min(self.stride * 2, MAX_STRIDE)
            elif elapsed >= self.interval / 10:
                self.stride = 1
        self.read_at = now
        self.left = self.stride
        if now < self.next_at and current < total:
            return False
        self.next_at = now + self.interval
        self.sent += 1
        return True


def progress_meta(current: float, total: float, message: str = "") -> dict[str, Any]:
    """The progress object as the dashboard shows it."""
    percent = round(100.0 * current / total, 1) if total else 0.0
    return {
        "current": current,
        "total": total,
        "percent": max(0.0, min(100.0, percent)),
        "message": str(message)[:MAX_MESSAGE],
    }


def send_progress(task: Task, meta: dict[str, Any]) -> None:
    """Push a `task-progress` event for the live view and store the state for later readers.

    First checks whether the task was revoked in Redis: if so, it is ended as revoked (stored
    REVOKED, `task-revoked` with terminated=True) and `celery.exceptions.Ignore` is raised, so the
    body stops here and Celery stores nothing over REVOKED. Let Ignore propagate out of the task.
    A check that cannot reach Redis is logged and the task goes on.
    """
    request = task.request
    if request.id is None:  # called directly, not as a Celery task
        return
    if getattr(request, revocations.FLAG, None) == revocations.STOPPED:
        raise Ignore()  # already ended as revoked: the body caught Ignore and went on
    if not getattr(request, "is_eager", False) and _revoked(task, request.id):
        revocations.stop(task, terminated=True)
    try:
        task.send_event("task-progress", progress=meta, sent=time.time(), retries=task.request.retries or 0,
                        retry_policy={"max_retries": 0})
        task.update_state(state=PROGRESS, meta=meta)
    except Exception as exc:  # a progress report must never fail the task (Redis may be away)
        log.warning("progress report for %s not sent: %s", task.request.id, exc)


def _revoked(task: Task, task_id: str) -> bool:
    try:
        client = revocations.client_for(task.app)
        return client is not None and revocations.is_revoked(client, task_id)
    except Exception as exc:  # a cancel point must never fail the task (Redis may be away)
        log.warning("revocation of %s not checked: %s", task_id, exc)
        return False


class Progress:
    """A progress reporter for one run of a task: `report = Progress(self, total)`, then
    `report(current, "page {} of {}", current, total)` as often as you like. The message is
    formatted only when a report is sent; a skipped call mostly costs a countdown (Throttle)."""

    __slots__ = ("task", "total", "throttle")

    def __init__(self, task: Task, total: float, interval: float | None = None) -> None:
        self.task = task
        self.total = total
        self.throttle = Throttle(config.PROGRESS_INTERVAL if interval is None else interval)

    def __call__(self, current: float, message: str = "", *args: Any) -> bool:
        throttle = self.throttle
        throttle.left -= 1
        if throttle.left > 0 and current < self.total:
            return False  # the fast path, inlined: this is the call that sits in the loop
        if not throttle.due(current, self.total):
            return False
        send_progress(self.task, progress_meta(current, self.total, message.format(*args) if args else message))
        return True


# One throttle per task and thread, renewed when a run starts: reading `task.request` costs about
# a microsecond, too much for a call that is meant to sit in a tight loop. Each thread also keeps
# its last (task, throttle) at hand: the dictionary's key (a tuple of id() and get_ident()) cost
# more than the rest of a skipped call (bench/progress_cost.py).
_throttles: dict[tuple[int, int], Throttle] = {}
_last = threading.local()


@task_prerun.connect
def _new_run(sender: Task | None = None, **_: Any) -> None:
    _throttles.pop((id(sender), get_ident()), None)
    _last.__dict__.pop("entry", None)  # task_prerun runs in the thread that runs the task


def _throttle_for(task: Task) -> Throttle:
    key = (id(task), get_ident())
    throttle = _throttles.get(key)
    if throttle is None:
        throttle = _throttles[key] = Throttle(config.PROGRESS_INTERVAL)
    _last.entry = (task, throttle)
    return throttle


def progress(task: Task, current: float, total: float, message: str = "", *args: Any) -> bool:
    """Report `current` of `total` from inside a bound task; cheap enough for a tight loop.

    `message` may hold `{}` fields filled from `args` only when the report is sent. Returns True
    when the report was sent, False when the throttle skipped it.
    """
    try:
        owner, throttle = _last.entry
        if owner is not task:
            throttle = _throttle_for(task)
    except AttributeError:
        throttle = _throttle_for(task)
    throttle.left -= 1
    if throttle.left > 0 and current < total:
        return False
    if not throttle.due(current, total):
        return False
    send_progress(task, progress_meta(current, total, message.format(*args) if args else message))
    return True
