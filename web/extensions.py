"""Flask extensions, created unbound and bound in the app factory."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_socketio import SocketIO
from flask_wtf.csrf import CSRFProtect

socketio = SocketIO()
# Counters live in Redis (RATELIMIT_STORAGE_URI, REDIS_URL by default) so every web process shares them.
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)
csrf = CSRFProtect()


class Services:
    """What the views and Socket.IO handlers use, built by the app factory."""

    def __init__(self, store, relay, celery_app, users=None) -> None:  # noqa: ANN001 - avoids an import cycle
        self.store = store
        self.relay = relay
        self.celery_app = celery_app
        self.users = users
        self.listener = None  # set by the entry point that starts one


def services() -> Services:
    from flask import current_app

    return current_app.extensions["dashboard"]
