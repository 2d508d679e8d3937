"""Web-side settings, read from the environment once."""
from __future__ import annotations

import os
import secrets
from typing import Any

from tasks import config as task_config


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the process must not start."""


def is_production() -> bool:
    return os.environ.get("APP_ENV", "").lower() == "production" or "DYNO" in os.environ


def from_env() -> dict[str, Any]:
    """All web settings, as Flask config keys."""
    secret = os.environ.get("SECRET_KEY", "")
    if not secret:
        if is_production():
            raise ConfigError("SECRET_KEY must be set in production (APP_ENV=production or on Heroku)")
        secret = secrets.token_hex(32)  # development only: sessions end with the process
    async_mode = os.environ.get("ASYNC_MODE", "eventlet")
    if async_mode not in ("eventlet", "gevent", "threading"):
        raise ConfigError(f"ASYNC_MODE must be eventlet, gevent or threading, got {async_mode!r}")
    return {
        "SECRET_KEY": secret,
        "REDIS_URL": task_config.redis_url(),
        "ASYNC_MODE": async_mode,
        "HOST": os.environ.get("HOST", "0.0.0.0"),
        "PORT": task_config._int("PORT", 5000),
        # Largest request body accepted (bytes); larger ones get 413.
        "MAX_CONTENT_LENGTH": task_config._int("MAX_CONTENT_LENGTH", 64 * 1024),
        # How many tasks the index in Redis keeps (newest first).
        "HISTORY_LIMIT": task_config._int("HISTORY_LIMIT", 10_000),
        # How long the index keeps a task (days).
        "HISTORY_DAYS": task_config._float("HISTORY_DAYS", 7.0),
        # Seconds without a heartbeat after which a worker's running tasks are shown as lost.
        "WORKER_TIMEOUT": task_config._float("WORKER_TIMEOUT", 10.0),
        # How many tasks a page load or a Socket.IO connect receives at once.
        "SNAPSHOT_LIMIT": task_config._int("SNAPSHOT_LIMIT", 200),
        # Seconds between two pushed batches under load.
        "PUSH_INTERVAL": task_config._float("PUSH_INTERVAL", 0.1),
        # A client with more batches than this waiting to be sent is disconnected (it resyncs).
        "SLOW_CLIENT_BATCHES": task_config._int("SLOW_CLIENT_BATCHES", 100),
        # Seconds between two checks of unfinished tasks against the result backend.
        "RECONCILE_INTERVAL": task_config._float("RECONCILE_INTERVAL", 5.0),
        # Socket.IO ping interval (s): well below Heroku's 55 s idle cut-off.
        "PING_INTERVAL": task_config._int("PING_INTERVAL", 20),
        "FLOWER_URL": os.environ.get("FLOWER_URL", ""),
    }
