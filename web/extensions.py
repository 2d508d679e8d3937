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

if TYPE_CHECKING:  # only for the annotations: these modules import this one
    from celery import Celery

    from web.listener import Listener
    from web.relay import Relay
    from web.store import TaskStore
    from web.users import UserStore


class Services:
    """What the views and Socket.IO handlers use, built by the app factory."""

    def __init__(self, store: TaskStore, relay: Relay, celery_app: Celery, users: UserStore | None = None) -> None:
        self.store = store
        self.relay = relay
        self.celery_app = celery_app
        self.users = users
        self.listener: Listener | None = None  # set by the entry point that starts one


def services() -> Services:
    return current_app.extensions["dashboard"]
