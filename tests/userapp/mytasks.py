"""A user's Celery app exactly as the Celery tutorial writes it: no dashboard import, no events config."""
import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from celery import Celery
from celery.exceptions import Ignore

app = Celery("mytasks", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])


@app.task
def add(x, y):
    return x + y


@app.task
def sleep_quietly(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
def tutorial_progress(self, total, delay):
    for i in range(total):
        time.sleep(delay)
        self.update_state(state="PROGRESS", meta={"current": i, "total": total})
    return {"current": total, "total": total}


@app.task(bind=True)
def custom_state(self, delay):
    self.update_state(state="DOWNLOADING", meta={"url": "https://example.com/archive.tar", "bytes": 0})
    time.sleep(delay)
    self.update_state(state="DOWNLOADING", meta={"url": "https://example.com/archive.tar", "bytes": 4096})
    time.sleep(delay)
    return "downloaded"


@app.task
def ignored():
    raise Ignore()


class StrOnlyError(Exception):
    """An exception whose text comes only from __str__: its args are empty."""

    def __init__(self, code):
        super().__init__()
        self.code = code

    def __str__(self):
        return f"the remote end answered {self.code}"


@app.task
def str_only_error():
    raise StrOnlyError(503)


@app.task
def typed_result(kind):
    if kind == "datetime":
        return datetime(2024, 5, 17, 12, 30, tzinfo=UTC)
    if kind == "decimal":
        return Decimal("12.50")
    if kind == "uuid":
        return UUID("12345678-1234-5678-1234-567812345678")
    raise ValueError(f"unknown kind {kind!r}")


@app.task
def huge_result(megabytes):
    return "x" * int(megabytes * 1024 * 1024)


@app.task(ignore_result=True)
def no_result():
    time.sleep(1)


@app.task(bind=True)
def progress_down(self):
    self.update_state(state="PROGRESS", meta={"current": 10, "total": 10})
    for i in range(1, 4):
        time.sleep(0.5)
        self.update_state(state="PROGRESS", meta={"current": i, "total": 5})
    time.sleep(0.5)
    return "done"


@app.task
def spin(seconds):
    """Holds the CPU (no I/O): on a gevent or eventlet worker nothing else runs meanwhile."""
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return seconds
