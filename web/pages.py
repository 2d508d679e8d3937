"""The dashboard page (one page for every view: /, /tasks/<id>, /workers, /charts, /audit) and the health check."""
from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, render_template

from web import flower, sockets
from web.auth import current_user
from web.extensions import services

bp = Blueprint("pages", __name__)


@bp.get("/")
def dashboard() -> Any:
    """The page; its script shows the view the path names (static/js/main.js)."""
    user = current_user()
    return render_template("index.html", flower_url=flower.link(current_app) if user.is_admin else "",
                           user=user, signed_in=current_app.config["AUTH_REQUIRED"])


@bp.get("/tasks/<path:task_id>")
@bp.get("/workers")
@bp.get("/charts")
@bp.get("/audit")
def view(task_id: str | None = None) -> Any:
    """The same page for a view's own address (a task's detail, workers, charts, the audit log)."""
    return dashboard()


@bp.get("/healthz")
def health() -> Any:
    """{"status": "ok", "redis": "ok"} (200), or 503 with "status": "unavailable" and what is wrong
    with Redis. Open to anyone (a load balancer's check). With sign-in on, only a signed-in caller
    (a session or a token) also gets the details: connected clients, the listener's counters and
    every worker's hostname, pid, pool and clock offset, which an anonymous caller on the internet
    has no business seeing."""
    dash = services()
    body: dict[str, Any] = {"status": "ok", "redis": "ok"}
    if current_user() is not None:
        body["clients"] = sockets.client_count()
        if dash.listener is not None:
            body["listener"] = dash.listener.stats()
        body["workers"] = dash.reconciler.workers.summary()
    try:
        dash.store.ping()
    except redis.RedisError as exc:
        body.update(status="unavailable", redis=f"unreachable: {type(exc).__name__}")
        return jsonify(body), 503
    return jsonify(body)
