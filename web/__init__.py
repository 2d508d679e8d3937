"""The web side: `create_app` builds the Flask app; it opens no connection and starts no thread."""
from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from celery_dashboard import connections
from web import (
    actions,
    api,
    apps,
    audit,
    auth,
    bulk,
    cli,
    control,
    errors,
    flower,
    headers,
    launches,
    monitor,
    offload,
    pages,
    queues,
    sockets,
)
from web.coalescer import Coalescer
from web.config import from_env, shared_secret_key
from web.extensions import Services, csrf, limiter, socketio
from web.pusher import Pusher
from web.reconciler import Reconciler
from web.results import BackendReader
from web.store import TaskStore
from web.users import UserStore
from web.workers import Workers

ROOT = Path(__file__).resolve().parent.parent


CHUNKED_HEADER = "HTTP_TRANSFER_ENCODING"


def chunked_bodies(wsgi_app: Callable[..., Any], limit: Callable[[], int | None]) -> Callable[..., Any]:
    """WSGI middleware: a request body sent with `Transfer-Encoding: chunked` (no Content-Length),
    as curl and `requests` with a generator send it, is read like any other. eventlet's server
    de-chunks it (eventlet.wsgi.Input, `chunked_input`) without saying so in the environ, and
    Werkzeug reads a body of unknown length as empty unless the server sets
    `wsgi.input_terminated` (and then cuts it at MAX_CONTENT_LENGTH without a 413): a valid launch
    was answered 400 "the request body must be a JSON object". Here the body is read whole, at most
    `limit()` + 1 bytes, and handed on with its Content-Length; a longer one is handed on as that
    length with no body, which Werkzeug answers 413 as for any body over the limit."""
    def app(wsgi_env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        stream = wsgi_env.get("eventlet.input")
        if str(wsgi_env.get(CHUNKED_HEADER, "")).lower() == "chunked" and getattr(stream, "chunked_input", False):
            most = limit()
            body = stream.read(most + 1) if most is not None else stream.read()
            too_long = most is not None and len(body) > most
            wsgi_env["wsgi.input"] = io.BytesIO(b"" if too_long else body)
            wsgi_env["CONTENT_LENGTH"] = str(len(body))
            wsgi_env.pop(CHUNKED_HEADER, None)
        return wsgi_app(wsgi_env, start_response)

    return app


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=str(ROOT / "static"), static_url_path="/static")
    app.config.from_mapping(from_env())
    app.config.update(config or {})
    app.json.sort_keys = False  # the catalog's parameters keep their declared order
    celery_apps = app.config.get("CELERY_APPS") or apps.load(app.config["CELERY_APP"])  # fills the catalog
    if not app.config.get("REDIS_CLIENT"):  # unit tests bring their own in-memory Redis
        apps.check_index_redis(celery_apps, app.config["REDIS_URL"])
    celery_app = celery_apps[0]
    for each in celery_apps:
        # Launches publish on at most BROKER_CONNECTIONS kombu connections of this process (a
        # launch waits for a free one): Celery's producer pool (broker_pool_limit) would open up
        # to 10, each holding Redis connections (the connection budget: README).
        each.conf.broker_pool_limit = app.config["BROKER_CONNECTIONS"]

    app.wsgi_app = chunked_bodies(app.wsgi_app, lambda: app.config.get("MAX_CONTENT_LENGTH"))  # type: ignore[method-assign]
    if app.config.get("PRODUCTION"):
        # Heroku's router: the client's address and scheme (for rate limits and Secure cookies).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in auth.guard: sessions only
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid while the session lasts
    csrf.init_app(app)
    auth.register(app)  # before the limiter: per-user limits need to know the user
    storage = app.config["RATELIMIT_STORAGE_URI"]
    if storage.startswith(("redis://", "rediss://")) and "RATELIMIT_STORAGE_OPTIONS" not in app.config:
        # Rate-limit counters share the process's bounded pool (the connection budget).
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": connections.pool(storage)}
    limiter.init_app(app)
    # None = only the page's own origin may open a Socket.IO connection.
    socketio.init_app(app, async_mode=app.config["ASYNC_MODE"], client_manager=sockets.TakingTurns(),
                      ping_interval=app.config["PING_INTERVAL"], ping_timeout=20,
                      max_http_buffer_size=sockets.MAX_CLIENT_MESSAGE,
                      cors_allowed_origins=app.config.get("ALLOWED_ORIGINS") or None)
    # The store, accounts, index, revocations and result reads share one bounded pool per Redis
    # URL (celery_dashboard.connections): the web's connection budget.
    client = app.config.get("REDIS_CLIENT") or connections.client(app.config["REDIS_URL"])
    if not app.config["SECRET_KEY"]:
        # No string in the repository ever signs a session: without SECRET_KEY, sign-in uses a key
        # generated once and kept in Redis; without sign-in (loopback), one for this process.
        app.config["SECRET_KEY"] = (shared_secret_key(client) if app.config["AUTH_REQUIRED"]
                                    else secrets.token_hex(32))
    store = TaskStore(client, app.config["HISTORY_LIMIT"], app.config["HISTORY_DAYS"] * 86400)
    read_results = app.config.get("READ_RESULTS") or BackendReader(celery_app.backend, app.config["RESULT_READ_BYTES"])
    coalescer = Coalescer()
    pusher = Pusher(store, coalescer, read_results, sockets.pusher(app.config["SLOW_CLIENT_BATCHES"]),
                    interval=app.config["PUSH_INTERVAL"], sleep=socketio.sleep)
    workers = Workers()
    asker = app.config.get("CONTROL", control.Control(celery_app))
    waiting = app.config.get("QUEUES", queues.Queues(celery_app.conf.broker_url, queues.queue_names(celery_apps),
                                                     app.config["QUEUE_SCAN_LIMIT"]))
    reconciler = Reconciler(store, coalescer, read_results, workers, asker, waiting,
                            worker_timeout=app.config["WORKER_TIMEOUT"], window=app.config["RECONCILE_WINDOW"],
                            poll_every=app.config["POLL_INTERVAL"], reconcile_every=app.config["RECONCILE_INTERVAL"],
                            sleep=socketio.sleep)
    pusher.unconfirmed = reconciler.confirm
    noted = app.extensions["launches_remembered"] = launches.Remembered()
    pusher.chores.append(partial(noted.flush, client, int(app.config["ATTACH_SECONDS"])))
    app.extensions["dashboard"] = Services(store, coalescer, pusher, reconciler, read_results, celery_app,
                                           UserStore(client, offload.password_check(app.config["ASYNC_MODE"])),
                                           waiting)

    errors.register(app)
    headers.register(app)
    app.cli.add_command(cli.users)
    app.register_blueprint(api.bp)
    for acting in (actions, bulk, audit):  # retry and re-run arguments, bulk actions, the audit log
        app.register_blueprint(acting.bp)
    app.register_blueprint(pages.bp)
    flower.register(app)  # /flower: Flower proxied for admins (FLOWER_PROXY)
    monitor.register(app)  # /api/workers, /api/queues, /api/stats, /metrics
    return app
