"""The dashboard page and the health endpoint."""
from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, render_template

from web.extensions import services

bp = Blueprint("pages", __name__)


@bp.get("/")
def dashboard() -> Any:
    return render_template("index.html", flower_url=current_app.config["FLOWER_URL"])


@bp.get("/healthz")
def health() -> Any:
    try:
        services().store.ping()
    except redis.RedisError as exc:
        return jsonify({"status": "unavailable", "redis": f"unreachable: {type(exc).__name__}"}), 503
    return jsonify({"status": "ok", "redis": "ok"})
