"""Socket.IO handlers: a snapshot on every (re)connect, then batches pushed by the relay."""
from __future__ import annotations

import logging
from typing import Any

import redis
from flask import current_app
from flask_socketio import emit, join_room

from web.extensions import services, socketio

log = logging.getLogger(__name__)

ROOM = "dashboard"


def push(batch: list[dict[str, Any]]) -> None:
    """Send one batch of current task objects to every dashboard."""
    socketio.emit("tasks", {"tasks": batch}, to=ROOM)


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    # A reconnect is a new session: join again, and send the truth before any push.
    join_room(ROOM)
    try:
        tasks = services().store.recent(current_app.config["SNAPSHOT_LIMIT"])
    except redis.RedisError as exc:
        log.warning("snapshot failed: %s", exc)
        emit("snapshot_error", {"error": "Redis is unavailable; showing the last known state"})
        return
    emit("snapshot", {"tasks": tasks})
