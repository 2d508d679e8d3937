"""The Redis result backend, without the per-task result subscription made when a task is sent,
and on a bounded connection pool (celery_dashboard.connections).

Celery's Redis backend subscribes to every sent task's result channel so that a later `.get()`
cannot miss it. A web process that launches tasks and never calls `.get()` would collect one
subscription per task until Redis cuts the connection at its output-buffer limit, after which
Celery declares the backend dead ("the Celery application must be restarted"). `.get()` still
works: it subscribes itself and reads the stored state first.
"""
from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

from celery_dashboard import connections


class ResultBackend(RedisBackend):
    """Celery's RedisBackend (celery/backends/redis.py) with two changes: no subscription per
    sent task, and its client on the process's bounded pool for its URL, shared with the index,
    revocations and the web (Celery's own pool opens a connection per concurrent use, unbounded
    unless `redis_max_connections` is set, and then it fails instead of waiting)."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def _get_pool(self, **params: Any) -> Any:
        url = self.url or ""
        if url.startswith(("redis://", "rediss://", "unix://")):
            return connections.pool(url)
        return super()._get_pool(**params)


def url(redis_url: str) -> str:
    """The `result_backend` setting that selects this class for `redis_url`."""
    return f"celery_dashboard.backend:ResultBackend+{redis_url}"
