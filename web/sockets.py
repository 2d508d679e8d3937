"""Socket.IO handlers: a snapshot on every (re)connect, then batches pushed by the pusher.

Every client is in one room: "admins" for admins (every task), else "user:<name>" (their own
tasks only). A client never receives another user's task, not even its id. A client that asks
for deltas (its handshake's `auth` has {"deltas": true}, as the page does) is in that room's
"deltas:" twin instead: it gets only what changed in a task it already has (see `Fanout`).
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis
import socketio as python_socketio
from flask import current_app, request
from flask_socketio import emit, join_room

from web import lifecycle
from web.auth import credential, identify
from web.errors import SURROGATE
from web.extensions import services, socketio
from web.users import User, UserStore

log = logging.getLogger(__name__)

ADMINS = "admins"
DELTAS = "deltas:"  # the prefix of a room's twin for clients that take deltas
# The refusal of a connection whose access ended or never was: the page then goes to the sign-in
# page (static/js/transport.js, connect_error). Only python-socketio's own ConnectionRefusedError
# carries its message to the client; Python's built-in one is refused as "Connection refused by
# server", which the page cannot tell from any other refusal (and then stayed, not live).
UNAUTHORIZED = "unauthorized"
# Bytes one message from a client may hold (Engine.IO's max_http_buffer_size; under eventlet its
# websocket refuses a longer frame from its header, before reading it). A page sends only its
# handshake: the unfinished task ids it holds, at most 200 kB (static/js/transport.js
# MAX_AUTH_BYTES). Engine.IO's default, 1 MB, let anyone, signed in or not, send frames whose
# unmasking took 0.27 s of the event loop each (a fresh user's review: 5.3 s waits for everyone).
MAX_CLIENT_MESSAGE = 256_000
# The refusal of a connection whose user could not be looked up (Redis away during the handshake):
# the page tries again a few seconds later (transport.js). Accepted instead, by on_error's default,
# it was a connection in no room, with no snapshot: not live until the page was loaded again.
UNAVAILABLE = "unavailable"
Refused = python_socketio.exceptions.ConnectionRefusedError


@dataclass(frozen=True)
class Access:
    """Who a live connection was opened as, and with what: checked again when access ends."""

    user: User
    method: str      # "local", "session" or "token" (web.auth.identify)
    credential: str  # the session id or the API token ("" for "local")


CONNECTED: dict[str, Access] = {}  # Socket.IO session id -> its access, for this process's clients


def still_valid(users: UserStore, access: Access) -> bool:
    """Whether a connection's access still holds: its session not ended (sign-out), its token
    not revoked, its account not removed and its role unchanged (a new role means new rooms)."""
    if access.method == "local":
        return True
    if access.method == "session":
        if users.session_user(access.credential) != access.user.name:
            return False
        current = users.get(access.user.name)
    else:
        current = users.by_token(access.credential)
    return current == access.user


def end_revoked(users: UserStore) -> int:
    """Disconnect this process's clients whose access ended; return how many. Their browser
    tries to reconnect, is refused "unauthorized" and goes to the sign-in page. A client still
    connecting (on_connect waiting for its turn or reading its snapshot) is not disconnected by
    this (python-socketio ignores a disconnect before the connect is answered): dropped from
    CONNECTED, it is refused by on_connect, which checks last that it is still there."""
    ended = [sid for sid, access in list(CONNECTED.items()) if not still_valid(users, access)]
    for sid in ended:
        CONNECTED.pop(sid, None)
        socketio.server.disconnect(sid, namespace="/")
    return len(ended)


# Seconds between two checks of every live connection even when no access ended (expired sessions).
RECHECK_EVERY = 60.0


def watch_access(users: UserStore, interval: float = 1.0, recheck: float = RECHECK_EVERY) -> None:
    """Forever, every `interval` seconds: when the access epoch in Redis (web.users) changes (a
    sign-out, a removed account, a changed role or a revoked token, on any web process), check
    every live connection of this process again and end those whose access ended. While Redis is
    down, connections stay (the page shows the outage); all are checked when it answers again.
    Every `recheck` seconds all are checked anyway: an expired session changes no epoch."""
    seen: int | None = None
    checked = 0.0
    while True:
        socketio.sleep(interval)
        try:
            epoch = users.access_epoch()
            # A session that expires (SESSION_HOURS) changes no epoch: every connection is also
            # checked again every RECHECK_EVERY seconds.
            if epoch != seen or time.monotonic() - checked >= recheck:
                ended = end_revoked(users)
                if ended:
                    log.info("ended %d live connection(s) whose access ended", ended)
                seen, checked = epoch, time.monotonic()
        except redis.RedisError as exc:
            log.warning("access check failed: %s", exc)
            seen = None
        except Exception:  # the watch must survive anything
            log.exception("access check failed")


class TakingTurns(python_socketio.Manager):
    """python-socketio's client manager for one process, serving each room's clients in turn.

    The stock manager sends an emit to a room's clients in the order they joined
    (`BaseManager.get_participants` yields the room's members in insertion order), and each
    client's writer then sends in that order: the client that joined last waited for every other
    one on every batch (bench/fanout.py measures it apart). Here each emit to a room starts one
    client further along, so every client comes first as often as last. Costs a list of the room's
    members per emit (the stock one copies them too)."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = 0

    def get_participants(self, namespace: str, room: Any) -> Any:
        members = list(super().get_participants(namespace, room))
        if len(members) < 2:
            return members
        self.turn += 1
        start = self.turn % len(members)
        return members[start:] + members[:start]


def user_room(name: str) -> str:
    return f"user:{name}"


def client_count() -> int:
    server = socketio.server
    return len(server.eio.sockets) if server is not None else 0


def drop_slow_clients(limit: int) -> int:
    """Disconnect clients with more than `limit` packets waiting: one slow browser must not hold
    the server's memory. It reconnects by itself and gets a fresh snapshot."""
    server = socketio.server
    slow = [(sid, sock) for sid, sock in list(server.eio.sockets.items()) if sock.queue.qsize() > limit]
    for sid, sock in slow:
        log.warning("disconnecting a client that fell %d batches behind", limit)
        # Not `server.eio.disconnect(sid)`: engineio's Socket.close waits by default until the
        # client has read everything queued for it (queue.join()), which a slow or stalled client
        # may never do; this runs in the pusher, under its lock, so every push and every new
        # connection waited with it. Closed without waiting and without a CLOSE packet queued
        # behind the backlog: its writer ends, the client reconnects and gets a fresh snapshot.
        sock.close(wait=False, abort=True, reason=server.eio.reason.SERVER_DISCONNECT)
        server.eio.sockets.pop(sid, None)
    return len(slow)


def occupied(room: str) -> bool:
    """Whether any client of this process is in `room` (an emit to an empty room still encodes)."""
    return bool(socketio.server.manager.rooms.get("/", {}).get(room))


def _size(value: dict[str, Any]) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """What a client holding `before` needs to have `after`: {"id", "version", "base" (the version
    it applies to), "state", and every field whose value changed}; None when the full object is no
    larger, or `before` is not an older version of the same task with the same fields."""
    if before.get("id") != after.get("id") or not (before.get("version") or 0) < (after.get("version") or 0) \
            or before.keys() - after.keys():
        return None
    changed = {"id": after["id"], "version": after["version"], "base": before.get("version") or 0,
               "state": after.get("state")}
    changed.update((key, value) for key, value in after.items() if key not in before or before[key] != value)
    return changed if _size(changed) < _size(after) else None


class Fanout:
    """The pusher's emit: each batch once to every audience of this process (the admins, and each
    owner with their share of it), as full task objects, and as deltas to clients that take them.

    Every client of a room got the same objects since its snapshot (taken under the pusher's lock,
    so it holds the version last pushed), so one delta per task serves the whole room: the change
    from the object last pushed. `shown` keeps that object for unfinished tasks (at most
    `remembered`); an ended task's next change goes out whole. A client whose copy is not the
    delta's `base` (a store that dropped the task, a snapshot another web process had moved on)
    reads the task again (static/js/transport.js)."""

    def __init__(self, slow_client_batches: int, remembered: int = 20_000) -> None:
        self.slow_client_batches = slow_client_batches
        self.remembered = remembered
        self.shown: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.batches = 0  # batches emitted by this process: each message carries its number

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        drop_slow_clients(self.slow_client_batches)
        self.batches += 1
        audiences: dict[str, list[dict[str, Any]]] = {ADMINS: batch}
        for task in batch:
            if task.get("owner"):
                audiences.setdefault(user_room(task["owner"]), []).append(task)
        changes: dict[str, dict[str, Any]] | None = None
        for room, tasks in audiences.items():
            if occupied(room):
                socketio.emit("tasks", {"tasks": tasks, "batch": self.batches}, to=room)
            if occupied(DELTAS + room):
                if changes is None:
                    changes = self.changes(batch)
                socketio.emit("tasks", {"tasks": [t for t in tasks if t["id"] not in changes],
                                        "changes": [changes[t["id"]] for t in tasks if t["id"] in changes],
                                        "batch": self.batches},
                              to=DELTAS + room)
        self.remember(batch)

    def changes(self, batch: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        found = {}
        for task in batch:
            before = self.shown.get(task["id"])
            change = delta(before, task) if before is not None else None
            if change is not None:
                found[task["id"]] = change
        return found

    def remember(self, batch: list[dict[str, Any]]) -> None:
        for task in batch:
            if lifecycle.is_terminal(task.get("state")):
                self.shown.pop(task["id"], None)
            else:
                self.shown[task["id"]] = task
                self.shown.move_to_end(task["id"])
        while len(self.shown) > self.remembered:
            self.shown.popitem(last=False)


def pusher(slow_client_batches: int) -> Fanout:
    """The pusher's emit (see `Fanout`)."""
    return Fanout(slow_client_batches)


MAX_ID = 1000  # longer ids a client names are not looked up


def snapshot(user: User, auth: Any = None) -> dict[str, Any]:
    """What a (re)connecting client is sent first: {"tasks": the newest SNAPSHOT_LIMIT tasks the
    user may see, then every unfinished one among them not already there (the newest
    SNAPSHOT_ACTIVE_LIMIT), then the ones the client names; "unfinished_truncated": there were
    more unfinished ones}. The client may name, in its handshake's `auth` as {"tasks": [ids]}, the
    tasks it shows unfinished (at most SNAPSHOT_ACTIVE_LIMIT): each comes back as it is now, so a
    task that ended while the client was away is never left running on its page."""
    dash, config = services(), current_app.config
    owner = None if user.is_admin else user.name
    tasks = dash.store.recent(config["SNAPSHOT_LIMIT"], owner=owner)
    seen = {task["id"] for task in tasks}
    unfinished, truncated = dash.store.unfinished(owner, config["SNAPSHOT_ACTIVE_LIMIT"])
    for task in unfinished:
        if task["id"] not in seen:
            seen.add(task["id"])
            tasks.append(task)
    named = auth.get("tasks") if isinstance(auth, dict) else None
    if isinstance(named, list):
        ids = [i for i in named[:config["SNAPSHOT_ACTIVE_LIMIT"]]  # text only: a lone surrogate fails Redis
               if isinstance(i, str) and len(i) <= MAX_ID and i not in seen and not SURROGATE.search(i)]
        for task in dash.store.get_many(dict.fromkeys(ids)).values():
            if user.is_admin or (task.get("owner") is not None and task.get("owner") == user.name):
                tasks.append(task)
    return {"tasks": tasks, "unfinished_truncated": truncated}


@socketio.on("connect")
def on_connect(auth: Any = None, *_: Any) -> bool:
    # python-socketio also calls this for a client's own EVENT packet named "connect": that is
    # a hostile message, not a new connection, so it gets the same answer as any other one.
    if request.sid in CONNECTED:
        return on_unexpected("connect")
    try:
        user, method = identify()  # the handshake's session cookie or Authorization header
    except redis.RedisError as exc:
        log.warning("connection refused for now: its user could not be looked up: %s", exc)
        raise Refused(UNAVAILABLE) from exc
    if user is None:
        raise Refused(UNAUTHORIZED)
    # A reconnect is a new session: join again, and send the truth before any push. Under the
    # pusher's lock, no batch is stored or sent between joining and the snapshot; clients take
    # that lock one at a time, and a waiting flush goes before the next one (Pusher.snapshot_turn).
    access = CONNECTED[request.sid] = Access(user, method, credential())
    dash = services()
    room = ADMINS if user.is_admin else user_room(user.name)
    wants_deltas = isinstance(auth, dict) and auth.get("deltas") is True
    with dash.pusher.snapshot_turn():
        try:
            found = snapshot(user, auth)
            # The access may have ended since `identify` (a sign-out in another tab while this one
            # reconnects): the watcher may have checked every connection meanwhile, before this
            # one was listed or while it could not be disconnected yet (end_revoked). Checked
            # again after the last wait, before anything is sent: let in, it would stay for good.
            valid = still_valid(dash.users, access)
        except redis.RedisError as exc:
            join_room(DELTAS + room if wants_deltas else room)
            log.warning("snapshot failed: %s", exc)
            emit("snapshot_error", {"error": "Redis is unavailable; showing the last known state"})
            return True
        if not valid or CONNECTED.get(request.sid) is not access:
            CONNECTED.pop(request.sid, None)
            raise Refused(UNAUTHORIZED)
        # A snapshot that left unfinished tasks out (more than SNAPSHOT_ACTIVE_LIMIT) would be
        # followed by changes to tasks the client never held, each one a read of the task by every
        # open page (393 of them in one test): that client gets whole objects instead.
        found["deltas"] = wants_deltas and not found["unfinished_truncated"]
        join_room(DELTAS + room if found["deltas"] else room)
        emit("snapshot", found)
    return True


@socketio.on("disconnect")
def on_disconnect(*_: Any) -> None:
    if socketio.server.manager.is_connected(request.sid, request.namespace):
        on_unexpected("disconnect")  # a client's own EVENT named "disconnect", not a real one
        return
    CONNECTED.pop(request.sid, None)


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
