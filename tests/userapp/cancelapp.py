"""A user's Celery app that imports celery_dashboard, for revocation and cancel tests on every pool.

Each task writes markers in Redis that a test reads: `cancelapp:started:<id>` when its body starts,
`cancelapp:step:<id>` (the last step reached) and `cancelapp:finished:<id>` when its body ends.
"""
import os
import time

import redis
from celery import Celery
from celery.exceptions import Ignore

import celery_dashboard

REDIS_URL = os.environ["REDIS_URL"]

app = Celery("cancelapp", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_send_task_events=True,
    task_track_started=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

markers = redis.Redis.from_url(REDIS_URL)


def started(task_id):
    return f"cancelapp:started:{task_id}"


def step(task_id):
    return f"cancelapp:step:{task_id}"


def finished(task_id):
    return f"cancelapp:finished:{task_id}"


@app.task(bind=True)
def long(self, steps=100, delay=0.2):
    markers.set(started(self.request.id), 1)
    for n in range(1, steps + 1):
        time.sleep(delay)
        markers.set(step(self.request.id), n)
        celery_dashboard.progress(self, n, steps, "step {} of {}", n, steps)
    markers.set(finished(self.request.id), 1)
    return steps


@app.task(bind=True)
def quiet(self):
    markers.set(started(self.request.id), 1)
    markers.set(finished(self.request.id), 1)
    return "done"


@app.task(bind=True)
def ignored(self):
    markers.set(started(self.request.id), 1)
    raise Ignore()
