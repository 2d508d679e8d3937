"""Workers, queues and per-minute task statistics: `/api/workers`, `/api/queues`, `/api/stats`,
and the `workers` Socket.IO push that keeps the workers page live."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from web import metrics, records
from web.auth import current_user
from web.errors import ApiError
from web.extensions import services, socketio
from web.sockets import client_count
from web.stats import TaskStats

log = logging.getLogger(__name__)
bp = Blueprint("monitor", __name__, url_prefix="/api")

# Seconds after which the `workers` push goes out even when nothing changed (a tab that missed
# one, or a new one, is never more than this behind).
PUSH_AT_LEAST = 10.0
# Fields that change with every heartbeat or second: left out of the "did anything change" digest.
VOLATILE = ("last_heartbeat", "seconds_since_seen", "oldest_age")
MIN_WINDOW, MAX_WINDOW = 60, 86_400


def register(app: Flask) -> None:
    """Bind the workers/queues/stats API and `/metrics`, and the per-app statistics cache."""
    dash = app.extensions["dashboard"]
    dash.reconciler.consumers_every = app.config["CONSUMERS_INTERVAL"]
    app.extensions["task_stats"] = TaskStats(dash.store, app.config["STATS_SCAN_LIMIT"], app.config["STATS_CACHE"],
                                             app.config["STATS_NAMES"])
    app.register_blueprint(bp)
    app.register_blueprint(metrics.bp)


def task_stats() -> TaskStats:
    return current_app.extensions["task_stats"]


def worker_rows() -> list[dict[str, Any]]:
    """The workers as `Workers.rows` gives them (WORKER_TIMEOUT, WORKER_OFFLINE_AFTER,
    WORKER_FORGET_AFTER, at most WORKERS_LIMIT)."""
    config = current_app.config
    return services().reconciler.workers.rows(config["WORKER_TIMEOUT"], config["WORKERS_LIMIT"],
                                              config["WORKER_OFFLINE_AFTER"], config["WORKER_FORGET_AFTER"])


def queue_rows(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each known queue (web.queues.Queues.names: configured, then found on the broker):
    {"name", "depth", "oldest" (ISO 8601 send time of its oldest message, or None), "oldest_age"
    (seconds, or None), "consumers" (workers not offline that said they consume it),
    "unconsumed" (messages wait and no worker consumes it)}.

    Celery's messages carry no send time: the oldest message's time is a header some senders set,
    else the `created` the task index recorded when the task was published. `unconsumed` stays
    False while a worker online has not said which queues it consumes (it may be that one)."""
    dash = services()
    if dash.queues is None:
        return []
    found = dash.queues.depths()
    ids = [m["id"] for q in found.values() for m in q["oldest"] if not m.get("sent")]
    known = dash.store.get_many(ids) if ids else {}
    now = time.time()
    present = [w for w in workers if w["status"] != "offline"]
    unsure = any(w["queues"] is None for w in present)
    rows = []
    for name, queue in found.items():
        times = [m.get("sent") or (known.get(m["id"]) or {}).get("created") for m in queue["oldest"]]
        times = [t for t in times if t]
        oldest = min(times, key=records.epoch) if times else None
        consumers = sum(1 for w in present if name in (w["queues"] or ()))
        rows.append({"name": name, "depth": queue["depth"], "oldest": oldest,
                     "oldest_age": round(max(0.0, now - records.epoch(oldest)), 1) if oldest else None,
                     "consumers": consumers,
                     "unconsumed": queue["depth"] > 0 and consumers == 0 and not unsure})
    return rows


def snapshot() -> dict[str, Any]:
    """{"workers": [...], "queues": [...]}: what `/api/workers`, `/api/queues` and the push give."""
    workers = worker_rows()
    return {"workers": workers, "queues": queue_rows(workers)}


@bp.get("/workers")
def workers() -> Any:
    return jsonify({"workers": worker_rows()})


@bp.get("/queues")
def queues() -> Any:
    return jsonify({"queues": queue_rows(worker_rows())})


@bp.get("/stats")
def stats() -> Any:
    """Per task name and per minute over the last `window` seconds (60..86,400, default 3,600):
    ended tasks, failures, run-time p50/p95 (web.stats.TaskStats.series). Only the tasks the user
    may see: admins every task, others their own."""
    raw = request.args.get("window", "3600")
    try:
        window = int(raw)
    except ValueError:
        window = 0
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        message = f"must be an integer from {MIN_WINDOW} to {MAX_WINDOW} (seconds)"
        raise ApiError(422, f"window {message}", [{"field": "window", "message": message}])
    user = current_user()
    return jsonify(task_stats().series(None if user.is_admin else user.name, window))


def digest(payload: dict[str, Any]) -> bytes:
    """What the page shows of `payload`, less what changes every second (VOLATILE)."""
    stable = {key: [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]
              for key, rows in payload.items()}
    return hashlib.blake2b(json.dumps(stable, sort_keys=True, default=str).encode(), digest_size=16).digest()


def push_workers(app: Flask, interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
    """Forever (serve.py starts it): every WORKERS_PUSH_INTERVAL s, emit `workers`
    {"workers", "queues"} to every connected client when something changed or a client connected,
    and at least every PUSH_AT_LEAST s. Survives Redis going away (logs, tries again next tick)."""
    interval = interval or app.config["WORKERS_PUSH_INTERVAL"]
    last, sent_at, clients = b"", -1e9, 0
    while True:
        socketio.sleep(interval)
        try:
            with app.app_context():
                payload = snapshot()
            mark, now_clients = digest(payload), client_count()
            if mark != last or now_clients > clients or clock() - sent_at >= PUSH_AT_LEAST:
                socketio.emit("workers", payload)
                last, sent_at = mark, clock()
            clients = now_clients
        except Exception as exc:  # the loop must survive Redis going away
            log.warning("workers push failed: %r", exc)
