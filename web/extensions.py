"""Flask extensions, created unbound and bound in the app factory."""
from flask_socketio import SocketIO

socketio = SocketIO()


class Services:
    """What the views and Socket.IO handlers use, built by the app factory."""

    def __init__(self, store, relay, celery_app) -> None:  # noqa: ANN001 - avoids an import cycle
        self.store = store
        self.relay = relay
        self.celery_app = celery_app
        self.listener = None  # set by the entry point that starts one


def services() -> Services:
    from flask import current_app

    return current_app.extensions["dashboard"]
