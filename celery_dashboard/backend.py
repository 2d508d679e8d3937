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

import redis
from celery.backends.redis import RedisBackend
from celery.backends.redis import ResultConsumer as RedisResultConsumer

from celery_dashboard import connections


class _SubscribingClient:
    """The backend's client, except that `pubsub()` subscribes on a connection of its own.

    Celery's result consumer (celery/backends/redis.py ResultConsumer) holds one subscription
    while anyone waits on a result (`.get()`, a group's results, which subscribe as soon as the
    group is sent). Taken from the bounded pool, it would hold one of its few connections for
    good: with REDIS_CONNECTIONS=1, every other command of the process then waited forever."""

    def __init__(self, client: redis.Redis, url: str) -> None:
        self._client = client
        self._url = url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pubsub(self, **kwargs: Any) -> Any:
        return connections.subscriber(self._url).pubsub(**kwargs)


class _SubscribingBackend:
    """What the result consumer sees as its backend: the backend, with `_SubscribingClient`."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    @property
    def client(self) -> _SubscribingClient:
        return _SubscribingClient(self._backend.client, self._backend.url or "")


class ResultConsumer(RedisResultConsumer):
    """Celery's Redis result consumer, subscribing outside the bounded pool (_SubscribingClient)."""

    def __init__(self, backend: RedisBackend, *args: Any, **kwargs: Any) -> None:
        super().__init__(_SubscribingBackend(backend), *args, **kwargs)


class ResultBackend(RedisBackend):
    """Celery's RedisBackend (celery/backends/redis.py) with two changes: no subscription per
    sent task, and its client on the process's bounded pool for its URL, shared with the index,
    revocations and the web (Celery's own pool opens a connection per concurrent use, unbounded
    unless `redis_max_connections` is set, and then it fails instead of waiting)."""

    ResultConsumer = ResultConsumer

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
