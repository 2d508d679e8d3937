"""Flask extensions, created unbound and bound in the app factory."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_socketio import SocketIO
from flask_wtf.csrf import CSRFProtect

socketio = SocketIO()
# Counters live in Redis (RATELIMIT_STORAGE_URI, REDIS_URL by default) so every web process shares them.
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)
csrf = CSRFProtect()


@limiter.request_filter
def limits_off() -> bool:
    """No rate limit is counted where sign-in is off (a loopback run: every request is the local
    admin, and /login only redirects). Flask-Limiter asks this before it resolves any limit
    (`Limiter.request_filter`); an `exempt_when` per limit was asked only after both launch limits
    were parsed and matched: 0.2-0.35 ms of CPU a launch, about 15% of the launch view's."""
    return not current_app.config["AUTH_REQUIRED"]


if TYPE_CHECKING:  # only for the annotations: these modules import this one
    from collections.abc import Callable
    from typing import Any

    from celery import Celery

    from web.coalescer import Coalescer
    from web.listener import Listener
    from web.pusher import Pusher
    from web.queues import Queues
    from web.reconciler import Reconciler
    from web.store import TaskStore
    from web.users import UserStore


class Services:
    """What the views, the Socket.IO handlers and the entry point use, built by the app factory."""

    def __init__(self, store: TaskStore, coalescer: Coalescer, pusher: Pusher, reconciler: Reconciler,
                 read_results: Callable[[list[str]], dict[str, dict[str, Any]]], celery_app: Celery,
                 users: UserStore | None = None, queues: Queues | None = None) -> None:
        self.store = store
        self.coalescer = coalescer
        self.pusher = pusher
        self.reconciler = reconciler
        self.read_results = read_results
        self.celery_app = celery_app
        self.users = users
        self.queues = queues  # the broker's queues (web.queues.Queues), None in unit tests
        self.listener: Listener | None = None  # set by the entry point that starts one


def services() -> Services:
    return current_app.extensions["dashboard"]
