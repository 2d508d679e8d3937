"""A user's Celery app for the conformance suite: plain Celery with its own defaults, plus
`import celery_dashboard` (persistent revocation, cooperative cancel, the end of ignored tasks)."""
import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import redis
from celery import Celery
from celery.exceptions import Ignore

import celery_dashboard
from celery_dashboard import progress

app = Celery("conform", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
_marks = redis.Redis.from_url(os.environ["REDIS_URL"])


def mark(task_id, what):
    """Leave a trace the test can read: `conform:<what>:<task id>`."""
    _marks.set(f"conform:{what}:{task_id}", "1", ex=600)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def sleep_quietly(self, seconds):
    mark(self.request.id, "ran")
    time.sleep(seconds)
    mark(self.request.id, "finished")
    return seconds


@app.task(bind=True)
def reporting(self, steps, delay):
    mark(self.request.id, "ran")
    for step in range(1, steps + 1):
        time.sleep(delay)
        progress(self, step, steps, f"step {step} of {steps}")
    mark(self.request.id, "finished")
    return steps


@app.task(bind=True)
def reporting_then_waiting(self, steps, delay, wait):
    for step in range(1, steps + 1):
        time.sleep(delay)
        progress(self, step, steps)
    mark(self.request.id, "reported")
    time.sleep(wait)
    return steps


@app.task(bind=True)
def fast_then_slow(self, fast, slow, seconds):
    """`fast` quick progress calls, then `slow` calls that each hold the CPU `seconds` (a busy loop:
    no green thread of the pool runs meanwhile); the numbers of the slow calls progress() sent."""
    total = fast * 2 + slow + 1  # never reached: only the throttle decides what is sent
    for n in range(1, fast + 1):
        progress(self, n, total)
    sent = []
    for k in range(1, slow + 1):
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            pass
        if progress(self, n + k, total):
            sent.append(k)
    return sent


@app.task(bind=True)
def tutorial_progress(self, total, delay):
    for i in range(1, total + 1):
        time.sleep(delay)
        self.update_state(state="PROGRESS", meta={"current": i, "total": total})
    return total


@app.task(bind=True)
def custom_state(self, delay):
    self.update_state(state="DOWNLOADING", meta={"bytes": 0})
    time.sleep(delay)
    self.update_state(state="DOWNLOADING", meta={"bytes": 4096})
    time.sleep(delay)
    return "downloaded"


@app.task(bind=True)
def progress_down(self, delay):
    progress(self, 10, 10, "phase one done")
    for n in range(1, 4):
        time.sleep(delay)
        progress(self, n, 5, f"{n} of 5")
    time.sleep(delay * 3)
    return "done"


@app.task(bind=True)
def counting(self, total, delay):
    """progress() on every step, `delay` s apart."""
    for n in range(1, total + 1):
        time.sleep(delay)
        progress(self, n, total)
    return total


@app.task
def ignored():
    raise Ignore()


class StrOnlyError(Exception):
    """Its text comes only from __str__: `args` is empty, so Celery stores an empty exc_message."""

    code = 503

    def __str__(self):
        return f"the remote end answered {self.code}"


class UnpicklableError(Exception):
    """Takes an argument its constructor needs: Celery stores it as UnpickleableExceptionWrapper."""

    def __init__(self, code):
        super().__init__(f"quota exceeded ({code})")
        self.code = code


@app.task
def str_only_error():
    raise StrOnlyError()


@app.task
def unpicklable_error():
    raise UnpicklableError(429)


@app.task
def typed_result(kind):
    return {"datetime": datetime(2024, 5, 17, 12, 30, tzinfo=UTC), "decimal": Decimal("12.50"),
            "uuid": UUID("12345678-1234-5678-1234-567812345678")}[kind]


@app.task
def huge_result(megabytes):
    return "x" * int(megabytes * 1024 * 1024)


@app.task(ignore_result=True)
def no_result(seconds):
    time.sleep(seconds)


@app.task(bind=True, max_retries=1)
def retry_once(self, countdown=1):
    if self.request.retries == 0:
        raise self.retry(countdown=countdown, exc=RuntimeError("first attempt fails"))
    time.sleep(1)
    return "second attempt"


__all__ = ["app", "celery_dashboard"]


@app.task(bind=True)
def odd_progress(self):
    """Progress JSON cannot carry: the dashboard must show the task and keep every client alive."""
    self.update_state(state="PROGRESS", meta={"current": float("inf"), "total": float("inf")})
    time.sleep(1.5)
    progress(self, float("nan"), 10, "not a number")
    time.sleep(1.5)
    return float("nan")
