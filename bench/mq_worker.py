"""The reasonable baseline's worker side: a Celery task that emits its own progress to the browsers
through Flask-SocketIO's Redis message queue, as Flask-SocketIO documents ("Emitting from an External
Process": `SocketIO(message_queue=redis_url)` in the worker, `emit()` from the task).

    celery -A bench.mq_worker worker -Q bench-mq --concurrency 4 --without-mingle --without-gossip

No Celery events, no listener, no store: each emit is PUBLISHed on the message queue's channel and
the web side (bench/mq_relay.py) sends it to every connected client. Progress goes through the same
throttle as ours (celery_dashboard's PROGRESS_INTERVAL: at most one report per interval, the last
always), so what differs from our dashboard is only the path from the worker to the browser.
Payloads have the dashboard's shape ({"tasks": [{"id", "state", "progress", "updated", "finished"}]}),
so the same clients measure every relay.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from celery_dashboard import settings as dashboard_settings
from tasks import config

QUEUE = "bench-mq"
CHANNEL = "bench-mq-socketio"  # the message queue's pub/sub channel, shared with bench/mq_relay.py

celery_app = Celery("bench_mq", broker=config.REDIS_URL)
celery_app.conf.update(task_default_queue=QUEUE, worker_send_task_events=False, task_ignore_result=True,
                       broker_connection_retry_on_startup=True)
_emitter: Any = None


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def emitter() -> Any:
    """This worker process's write-only Flask-SocketIO (no app: it only publishes to the queue)."""
    global _emitter
    if _emitter is None:
        from flask_socketio import SocketIO

        _emitter = SocketIO(message_queue=config.REDIS_URL, channel=CHANNEL)
    return _emitter


def emit(task_id: str, state: str, progress: dict[str, Any] | None = None, finished: bool = False) -> None:
    now = iso(time.time())
    emitter().emit("tasks", {"tasks": [{"id": task_id, "state": state, "progress": progress, "updated": now,
                                        "finished": now if finished else None}]})


@celery_app.task(bind=True, name="bench.mq_worker.steps")
def steps(self: Any, steps: int = 10, delay: float = 0.0) -> dict[str, int]:
    """The demo `steps` task's shape: `steps` steps `delay` s apart, progress reported on each step."""
    task_id = self.request.id
    emit(task_id, "STARTED")
    interval, next_at = dashboard_settings.PROGRESS_INTERVAL, 0.0
    for step in range(1, steps + 1):
        if delay:
            time.sleep(delay)
        now = time.monotonic()
        if step == steps or now >= next_at:
            next_at = now + interval
            emit(task_id, "PROGRESS", {"current": step, "total": steps, "percent": round(100.0 * step / steps, 1),
                                       "message": f"step {step} of {steps}"})
    emit(task_id, "SUCCESS", finished=True)
    return {"steps": steps}
