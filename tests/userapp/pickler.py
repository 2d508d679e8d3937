"""Another user's app on the same Redis that stores its results with pickle (a normal Celery
setting), which the dashboard, accepting JSON only, must show as undecodable, never fail on."""
import os
from datetime import UTC, datetime

from celery import Celery

app = Celery("pickler", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(result_serializer="pickle", accept_content=["json"],
                result_accept_content=["json", "pickle"], task_default_queue="pickler")


class Report:
    def __init__(self) -> None:
        self.made = datetime.now(UTC)


@app.task
def report():
    return Report()
