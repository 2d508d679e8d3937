"""The Redis result backend, without the per-task result subscription made when a task is sent.

Celery's Redis backend subscribes to every sent task's result channel so that a later `.get()`
cannot miss it. A web process that launches tasks and never calls `.get()` would collect one
subscription per task until Redis cuts the connection at its output-buffer limit, after which
Celery declares the backend dead ("the Celery application must be restarted"). `.get()` still
works: it subscribes itself and reads the stored state first.
"""
from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class ResultBackend(RedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def url(redis_url: str) -> str:
    """The `result_backend` setting that selects this class for `redis_url`."""
    return f"celery_dashboard.backend:ResultBackend+{redis_url}"
