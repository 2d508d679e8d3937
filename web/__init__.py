"""The web side: `create_app` builds the Flask app; it opens no connection and starts no thread."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from flask import Flask

from tasks.celery_app import celery_app
from web import api, errors, pages, sockets
from web.config import from_env
from web.extensions import Services, socketio
from web.relay import Relay, backend_reader
from web.store import TaskStore

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=str(ROOT / "static"), static_url_path="/static")
    app.config.from_mapping(from_env())
    app.config.update(config or {})
    app.json.sort_keys = False  # the catalog's parameters keep their declared order
    celery_app.loader.import_default_modules()  # the task modules fill the catalog

    socketio.init_app(app, async_mode=app.config["ASYNC_MODE"],
                      ping_interval=app.config["PING_INTERVAL"], ping_timeout=20)
    client = app.config.get("REDIS_CLIENT") or redis.Redis.from_url(
        app.config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
    store = TaskStore(client, app.config["HISTORY_LIMIT"], app.config["HISTORY_DAYS"] * 86400)
    relay = Relay(store, app.config.get("READ_RESULTS") or backend_reader(celery_app.backend),
                  sockets.pusher(app.config["SLOW_CLIENT_BATCHES"]), interval=app.config["PUSH_INTERVAL"],
                  reconcile_every=app.config["RECONCILE_INTERVAL"], worker_timeout=app.config["WORKER_TIMEOUT"],
                  sleep=socketio.sleep)
    app.extensions["dashboard"] = Services(store, relay, celery_app)

    errors.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return app
