"""A user's Celery app that imports celery_dashboard: two tasks on the dashboard's launch form."""
import os
import time

from celery import Celery

from celery_dashboard import launchable, progress, schema

app = Celery("myapp_launchable", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])


@launchable(
    "user_count",
    "Count (user app)",
    "Counts up to a number, one step at a time, and reports each step.",
    schema(
        count={"type": "integer", "title": "Count to", "minimum": 1, "maximum": 100, "default": 5},
        delay={"type": "number", "title": "Seconds per step", "minimum": 0, "maximum": 5, "default": 0.3},
    ),
)
@app.task(bind=True)
def count(self, count=5, delay=0.3):
    for n in range(1, count + 1):
        time.sleep(delay)
        progress(self, n, count, f"{n} of {count}")
    return count


@launchable(
    "user_progress_down",
    "Progress going down (user app)",
    "Reports 10 of 10, then starts over at 1 of 5, 2 of 5, 3 of 5.",
    schema(delay={"type": "number", "title": "Seconds between reports", "minimum": 0, "maximum": 5, "default": 0.5}),
)
@app.task(bind=True)
def progress_down(self, delay=0.5):
    progress(self, 10, 10, "10 of 10")
    for n in range(1, 4):
        time.sleep(delay)
        progress(self, n, 5, f"{n} of 5")
    time.sleep(delay)
    return "done"
