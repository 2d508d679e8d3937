"""One bounded Redis connection pool per Redis URL and process: the connection budget.

Heroku Redis' smallest plans allow 20 clients for every process together, and redis-py's default
pool opens a new connection whenever all of its connections are busy, without limit (Celery's
result backend uses that pool: one more connection for each task storing its result at the same
moment, on a threads or gevent worker). A `redis.BlockingConnectionPool` instead makes a command
wait (up to POOL_TIMEOUT seconds, then `redis.ConnectionError`) until one of at most
REDIS_CONNECTIONS connections is free. Everything that sends plain commands in one process shares
the pool of its URL: the result backend (celery_dashboard.backend.ResultBackend), the task index,
revocations and, in the web process, its store, accounts, queues and rate limits. Connections
held for good (pub/sub subscriptions, kombu's BRPOP) are not from these pools: see README,
"Redis connections".
"""
from __future__ import annotations

import threading

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celery_dashboard import settings

# A command that meets a broken connection (Redis restarted since the pool opened it: "Connection
# closed by server") is sent again on a new one, up to RETRIES times, 20-200 ms apart, as redis-py's
# own Redis() does by default; a pool made from a URL had no retry, and the first request after a
# Redis restart on each pooled connection was answered 503 (tests/integration/test_outage.py, 2 runs
# in 3 here).
RETRIES = 2
_pools: dict[tuple[str, int], redis.BlockingConnectionPool] = {}
_lock = threading.Lock()


def pool(url: str, max_connections: int | None = None) -> redis.BlockingConnectionPool:
    """The process's bounded pool for `url` (a redis://, rediss:// or unix:// URL, with its
    query options such as `ssl_cert_reqs`): at most `max_connections` connections (default
    settings.REDIS_CONNECTIONS), a command waiting up to settings.POOL_TIMEOUT seconds for one.
    Made once per URL; redis-py's pools start afresh in a forked child (they check the pid)."""
    size = max_connections or settings.REDIS_CONNECTIONS
    key = (url, size)
    with _lock:
        found = _pools.get(key)
        if found is None:
            found = _pools[key] = redis.BlockingConnectionPool.from_url(
                url, max_connections=size, timeout=settings.POOL_TIMEOUT, socket_connect_timeout=3,
                socket_timeout=10, socket_keepalive=True, health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), RETRIES))
        return found


def client(url: str, max_connections: int | None = None) -> redis.Redis:
    """A client on the process's bounded pool for `url` (see `pool`)."""
    return redis.Redis(connection_pool=pool(url, max_connections))


_subscribers: dict[str, redis.ConnectionPool] = {}


def subscriber(url: str) -> redis.Redis:
    """A client for a pub/sub subscription on `url`, outside the bounded pools: a subscription holds
    its connection for as long as it lasts (one per subscriber; see celery_dashboard.backend)."""
    with _lock:
        found = _subscribers.get(url)
        if found is None:
            found = _subscribers[url] = redis.ConnectionPool.from_url(
                url, socket_connect_timeout=3, socket_keepalive=True, health_check_interval=30)
        return redis.Redis(connection_pool=found)
