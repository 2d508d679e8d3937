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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


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
    host = os.environ.get("HOST", "0.0.0.0")
    production = is_production()
    auth_required = _flag("AUTH_REQUIRED", host not in LOOPBACK)
    if production and not auth_required:
        raise ConfigError("AUTH_REQUIRED=0 is not allowed in production")
    return {
        "SECRET_KEY": secret,
        # Sign-in required (default unless HOST is loopback: then every request is a local admin).
        "AUTH_REQUIRED": auth_required,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "PERMANENT_SESSION_LIFETIME": task_config._int("SESSION_HOURS", 12) * 3600,
        "PRODUCTION": production,
        # Rate limits (Flask-Limiter syntax); counters in Redis, shared by every web process.
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI", "") or task_config.redis_url(),
        "RATELIMIT_KEY_PREFIX": "dashboard:limits",
        "LAUNCH_LIMIT": os.environ.get("LAUNCH_LIMIT", "30/minute"),
        "LAUNCH_LIMIT_PER_ADDRESS": os.environ.get("LAUNCH_LIMIT_PER_ADDRESS", "60/minute"),
        "LOGIN_LIMIT": os.environ.get("LOGIN_LIMIT", "10/minute"),
        # Unfinished tasks one user may have at once; one more launch answers 429.
        "MAX_ACTIVE_PER_USER": task_config._int("MAX_ACTIVE_PER_USER", 20),
        # Origins allowed to open a Socket.IO connection (comma separated); empty = the page's own.
        "ALLOWED_ORIGINS": [o.strip() for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()],
        "REDIS_URL": task_config.redis_url(),
        "ASYNC_MODE": async_mode,
        "HOST": host,
        "PORT": task_config._int("PORT", 5000),
        # Largest request body accepted (bytes); larger ones get 413.
        "MAX_CONTENT_LENGTH": task_config._int("MAX_CONTENT_LENGTH", 64 * 1024),
        # How many tasks the index in Redis keeps (newest first).
        "HISTORY_LIMIT": task_config._int("HISTORY_LIMIT", 10_000),
        # How long the index keeps a task (days).
        "HISTORY_DAYS": task_config._float("HISTORY_DAYS", 7.0),
        # The Celery apps to show (the form of `celery -A`, comma separated; the first one's broker,
        # result backend and control are used; all must share one Redis broker).
        "CELERY_APP": os.environ.get("CELERY_APP", ""),
        # Seconds without any event after which a worker running tasks is pinged; tasks of a worker
        # that does not answer are shown "not responding" (never failed: solo workers are silent
        # while they run a task). A restarted or stopped worker's tasks are shown LOST at once.
        "WORKER_TIMEOUT": task_config._float("WORKER_TIMEOUT", 10.0),
        # Seconds after which a task that no backend, queue or worker knows is shown UNKNOWN.
        "RECONCILE_WINDOW": task_config._float("RECONCILE_WINDOW", 30.0),
        # Seconds between two reads of running tasks' backend records (the tutorials' progress,
        # update_state, sends no event) and of the broker's queues.
        "POLL_INTERVAL": task_config._float("POLL_INTERVAL", 1.0),
        # How many waiting messages one read of the broker's queues looks at (newest first).
        "QUEUE_SCAN_LIMIT": task_config._int("QUEUE_SCAN_LIMIT", 1000),
        # Result-backend entries larger than this (bytes) are not read by the live view; the
        # result endpoint serves up to RESULT_MAX_BYTES.
        "RESULT_READ_BYTES": task_config._int("RESULT_READ_BYTES", 1_000_000),
        "RESULT_MAX_BYTES": task_config._int("RESULT_MAX_BYTES", 10_000_000),

        # How many tasks a page load or a Socket.IO connect receives at once.
        "SNAPSHOT_LIMIT": task_config._int("SNAPSHOT_LIMIT", 200),
        # Simultaneous connections one web process accepts (eventlet's default is 1,024).
        "MAX_CONNECTIONS": task_config._int("MAX_CONNECTIONS", 10_000),
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
