"""A user's Celery app whose tasks return large results (bench.heavy_results): rows as an API or a
report would return them, and a task that reports progress while the others end."""
import os
import time

from celery import Celery

import celery_dashboard  # noqa: F401 - persistent revocation, cooperative cancel, as users install it
from celery_dashboard import progress

app = Celery("heavyapp", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])


@app.task(name="heavyapp.rows")
def rows(count):
    return [{"id": i, "name": f"row {i}", "score": i * 0.5, "tags": ["a", "b"]} for i in range(count)]


@app.task(bind=True, name="heavyapp.tick")
def tick(self, steps, delay):
    for step in range(1, steps + 1):
        time.sleep(delay)
        progress(self, step, steps)
    return steps
