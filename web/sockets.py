"""Socket.IO handlers: a snapshot on every (re)connect, then batches pushed by the relay."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import current_app
from flask_socketio import emit, join_room

from web.extensions import services, socketio

log = logging.getLogger(__name__)

ROOM = "dashboard"


def client_count() -> int:
    server = socketio.server
    return len(server.eio.sockets) if server is not None else 0


def drop_slow_clients(limit: int) -> int:
    """Disconnect clients with more than `limit` packets waiting: one slow browser must not hold
    the server's memory. It reconnects by itself and gets a fresh snapshot."""
    server = socketio.server
    slow = [sid for sid, sock in list(server.eio.sockets.items()) if sock.queue.qsize() > limit]
    for sid in slow:
        log.warning("disconnecting a client that fell %d batches behind", limit)
        server.eio.disconnect(sid)
    return len(slow)


def pusher(slow_client_batches: int) -> Callable[[list[dict[str, Any]]], None]:
    """The relay's emit: one batch of current task objects to every dashboard of this process."""

    def push(batch: list[dict[str, Any]]) -> None:
        drop_slow_clients(slow_client_batches)
        socketio.emit("tasks", {"tasks": batch}, to=ROOM)

    return push


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    # A reconnect is a new session: join again, and send the truth before any push. Under the
    # relay's lock, no batch is stored or sent between joining and the snapshot.
    dash = services()
    with dash.relay.lock:
        join_room(ROOM)
        try:
            tasks = dash.store.recent(current_app.config["SNAPSHOT_LIMIT"])
        except redis.RedisError as exc:
            log.warning("snapshot failed: %s", exc)
            emit("snapshot_error", {"error": "Redis is unavailable; showing the last known state"})
            return
        emit("snapshot", {"tasks": tasks})
