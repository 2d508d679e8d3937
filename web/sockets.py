"""Socket.IO handlers: a snapshot on every (re)connect, then batches pushed by the pusher.

Every client is in one room: "admins" for admins (every task), else "user:<name>" (their own
tasks only). A client never receives another user's task, not even its id.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import current_app, request
from flask_socketio import emit, join_room

from web.auth import identify
from web.extensions import services, socketio

log = logging.getLogger(__name__)

ADMINS = "admins"
CONNECTED: set[str] = set()  # session ids of this process's connected clients


def user_room(name: str) -> str:
    return f"user:{name}"


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
    """The pusher's emit: each batch to the admins, and each owner's share of it to that owner."""

    def push(batch: list[dict[str, Any]]) -> None:
        drop_slow_clients(slow_client_batches)
        socketio.emit("tasks", {"tasks": batch}, to=ADMINS)
        owned: dict[str, list[dict[str, Any]]] = {}
        for task in batch:
            if task.get("owner"):
                owned.setdefault(task["owner"], []).append(task)
        for owner, tasks in owned.items():
            socketio.emit("tasks", {"tasks": tasks}, to=user_room(owner))

    return push


@socketio.on("connect")
def on_connect(*_: Any) -> bool:
    # python-socketio also calls this for a client's own EVENT packet named "connect": that is
    # a hostile message, not a new connection, so it gets the same answer as any other one.
    if request.sid in CONNECTED:
        return on_unexpected("connect")
    user, _ = identify()  # the handshake's session cookie or Authorization header
    if user is None:
        raise ConnectionRefusedError("unauthorized")
    # A reconnect is a new session: join again, and send the truth before any push. Under the
    # pusher's lock, no batch is stored or sent between joining and the snapshot.
    CONNECTED.add(request.sid)
    dash = services()
    with dash.pusher.lock:
        join_room(ADMINS if user.is_admin else user_room(user.name))
        try:
            tasks = dash.store.recent(current_app.config["SNAPSHOT_LIMIT"],
                                      owner=None if user.is_admin else user.name)
        except redis.RedisError as exc:
            log.warning("snapshot failed: %s", exc)
            emit("snapshot_error", {"error": "Redis is unavailable; showing the last known state"})
            return True
        emit("snapshot", {"tasks": tasks})
    return True


@socketio.on("disconnect")
def on_disconnect(*_: Any) -> None:
    if socketio.server.manager.is_connected(request.sid, request.namespace):
        on_unexpected("disconnect")  # a client's own EVENT named "disconnect", not a real one
        return
    CONNECTED.discard(request.sid)


@socketio.on("*")
def on_unexpected(event: Any, *args: Any) -> bool:
    """Clients only listen: anything they send gets an error back to them alone, nothing else."""
    emit("error", {"error": "unexpected message"}, to=request.sid)
    return True


@socketio.on_error_default
def on_error(exc: Exception) -> None:
    if isinstance(exc, ConnectionRefusedError):
        raise exc  # a refused connect must stay refused
    log.warning("Socket.IO handler failed: %r", exc)
    emit("error", {"error": "bad message"}, to=request.sid)
