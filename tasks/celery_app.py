"""The Celery application shared by the worker, Flower, the web app and any Python shell."""
from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import celeryd_init

import celery_dashboard  # noqa: F401 - the integration: signals, catalog, progress
from celery_dashboard import backend
from tasks import config

DEMO_QUEUE = "dashboard.demo"

celery_app = Celery("tasks", include=["tasks.demo"])
celery_app.conf.update(
    broker_url=config.REDIS_URL,
    # The demo's own queue: its worker never takes a task of a user's app that shares this Redis
    # on Celery's default queue ("celery"), which it could not run (NotRegistered).
    task_default_queue=DEMO_QUEUE,
    result_backend=backend.url(config.REDIS_URL),
    # JSON only: nothing a client puts in Redis can make a worker unpickle code.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    # Events on from the start, not left to Flower's periodic enable.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    # Store name, args and worker beside the result so a record can be rebuilt from it.
    result_extended=True,
    result_expires=config.RESULT_EXPIRES,
    # Take a message only when a process is free: a queued task is never stuck behind a running one,
    # and a worker that dies holds no task it had not started (those would wait for redelivery).
    worker_prefetch_multiplier=1,
    worker_disable_prefetch=True,
    broker_connection_retry_on_startup=True,
    # A launch while Redis is down fails within seconds instead of hanging.
    broker_connection_timeout=3,
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    # A result stored while Redis is away is retried (up to about a minute) instead of being lost.
    result_backend_always_retry=True,
    result_backend_max_retries=20,
    result_backend_base_sleep_between_retries_ms=100,
    result_backend_max_sleep_between_retries_ms=5000,
    redis_socket_connect_timeout=3,
    redis_socket_timeout=10,
    broker_transport_options={"visibility_timeout": 3600},
    timezone="UTC",
    enable_utc=True,
)


@celeryd_init.connect
def _bound_publishers(conf: Any = None, **_: Any) -> None:
    """In a worker of this app: publish task events and sub-tasks on at most BROKER_CONNECTIONS
    kombu connections (Celery's broker_pool_limit; the connection budget, README "Redis
    connections"). Workers only: Flower started as `celery -A tasks.celery_app flower` runs its
    calls in a thread pool that deadlocks on fewer than two connections per thread."""
    if conf is not None:
        conf.broker_pool_limit = config.BROKER_CONNECTIONS
