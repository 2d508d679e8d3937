"""Revocations kept in Redis, so that every worker honours them, including workers that start later.

Celery keeps its list of revoked task ids in each worker's memory (`celery.worker.state.revoked`, a
`LimitedSet` filled by the `revoke` control broadcast in celery/worker/control.py and consulted by
`Request.revoked()` in celery/worker/request.py). A broadcast sent while no worker is online reaches
nobody, and a restarted worker has forgotten it (unless it runs with `--statedb`, which an ephemeral
disk cannot keep). Here the revocations live in Redis: a sorted set of task ids, each scored by the
epoch second its revocation expires. `celery_dashboard.signals` copies them into Celery's own set in
every worker and checks them again before a task runs; `celery_dashboard.reporting` checks them at
each progress report a running task sends (a cooperative cancel that works on every pool).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore

from celery_dashboard import connections, settings

log = logging.getLogger(__name__)

KEY = "dashboard:revoked"                  # sorted set: task id scored by its expiry (epoch seconds)
CHANGES_KEY = "dashboard:revoked:changes"  # counter moved by every revoke: workers reload when it moves

# Set on a running task's request (`task.request`) once it is known to be revoked: FOUND by the
# check before the body runs, STOPPED once the task has been ended as revoked.
FLAG = "dashboard_revocation"
FOUND = "found"
STOPPED = "stopped"


def revoke(client: Any, task_id: str, ttl: float | None = None, now: float | None = None) -> None:
    """Record in Redis that `task_id` is revoked, for `ttl` seconds from `now`.

    `ttl` defaults to the REVOCATION_TTL setting (7 days); `now` is epoch seconds, default the
    current time. Revoking a task again extends its revocation and never shortens it. In the same
    transaction, expired revocations are pruned and the set is cut to the REVOCATION_LIMIT latest
    to expire. ValueError for an empty task id or a ttl that is not positive; redis.RedisError when
    Redis cannot be reached (nothing is recorded then).

    This reaches workers that are offline now or restart later. Also send Celery's own
    `app.control.revoke(task_id)`: a worker that is online drops the task from memory at once.
    """
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"a task id must be a non-empty string, got {task_id!r}")
    ttl = settings.REVOCATION_TTL if ttl is None else ttl
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    now = time.time() if now is None else now
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(KEY, {task_id: now + ttl}, gt=True)
        pipe.zremrangebyscore(KEY, "-inf", now)
        pipe.zremrangebyrank(KEY, 0, -settings.REVOCATION_LIMIT - 1)
        pipe.incr(CHANGES_KEY)
        pipe.execute()


def is_revoked(client: Any, task_id: str, now: float | None = None) -> bool:
    """True when `task_id` has a revocation in Redis that has not expired at `now` (epoch seconds).

    One Redis command; redis.RedisError when Redis cannot be reached.
    """
    expiry = client.zscore(KEY, task_id)
    return expiry is not None and expiry > (time.time() if now is None else now)


def revoked_among(client: Any, task_ids: list[str], now: float | None = None) -> set[str]:
    """Those of `task_ids` with a revocation in Redis that has not expired at `now` (epoch seconds):
    `is_revoked` for many ids in one command (ZMSCORE, Redis 6.2). redis.RedisError when Redis
    cannot be reached, or has no ZMSCORE."""
    if not task_ids:
        return set()
    now = time.time() if now is None else now
    scores = client.zmscore(KEY, task_ids)
    return {task_id for task_id, expiry in zip(task_ids, scores, strict=True) if expiry is not None and expiry > now}


def revoked_ids(client: Any, now: float | None = None, limit: int = 100_000) -> list[str]:
    """The ids of tasks revoked and not expired at `now` (epoch seconds), the latest to expire first.

    At most `limit` ids (the latest to expire, that is the most recently revoked for a common ttl).
    redis.RedisError when Redis cannot be reached.
    """
    now = time.time() if now is None else now
    members = client.zrevrangebyscore(KEY, "+inf", f"({now!r}", start=0, num=limit)
    return [m.decode() if isinstance(m, bytes) else m for m in members]


def changes(client: Any) -> int:
    """A number that moves whenever a revocation is added: reload `revoked_ids` only when it did."""
    value = client.get(CHANGES_KEY)
    return int(value) if value is not None else 0


_clients: dict[int, tuple[Celery, Any]] = {}
_client: Any = None  # tests put an in-memory Redis here


def client_for(app: Celery) -> Any:
    """The Redis client revocations are read with in this process, for `app`; None without Redis.

    The result backend's own client when the backend is Redis (its connection pool is the app's,
    bounded by `redis_max_connections`), else one made from the broker URL with at most
    REVOCATION_CONNECTIONS connections. Made once per app and process; a forked child gets fresh
    connections from redis-py's pool. None, logged once, when neither backend nor broker is Redis.
    """
    if _client is not None:
        return _client
    try:
        return _clients[id(app)][1]
    except KeyError:
        pass
    client = None
    backend = app.backend
    if isinstance(backend, RedisBackend):
        client = backend.client
    else:
        url = app.conf.broker_url or ""
        if url.startswith(("redis://", "rediss://", "unix://")):
            client = connections.client(url, settings.REVOCATION_CONNECTIONS)
        else:
            log.warning("revocations are not kept for app %r: neither its result backend nor its broker is Redis",
                        app.main)
    _clients[id(app)] = (app, client)  # the app is held, so its id is never another's
    return client


def stop(task: Task, terminated: bool) -> None:
    """End the running `task` as revoked, the way Celery's own `Request.revoked()` does, and raise
    `Ignore` so that Celery stores nothing over it.

    Marks the task REVOKED in the result backend, then sends `task-revoked` (`terminated` True when
    the body had started, as at a progress report; False before the body ran). A failure to store
    or send is logged and the task still stops: it was cancelled. Call it from the task's own
    thread, while it runs (Celery's `task.request` is the running request there).
    """
    request = task.request
    setattr(request, FLAG, STOPPED)
    try:
        task.backend.mark_as_revoked(request.id, "revoked", request=request)
    except Exception as exc:  # the cancel must still stop the task
        log.error("task %s is revoked but REVOKED could not be stored: %s", request.id, exc)
    try:
        task.send_event("task-revoked", terminated=terminated, signum=None, expired=False)
    except Exception as exc:
        log.warning("task-revoked event for %s not sent: %s", request.id, exc)
    log.info("task %s[%s] revoked in Redis: stopped %s", task.name, request.id,
             "at a progress report" if terminated else "before it ran")
    raise Ignore()
