"""Launch guards: one task per click (Idempotency-Key) and attach instead of launching an identical task.

Both live in Redis, so every web process agrees:
- `dashboard:idempotency:<sha256(user, scope, key)>` holds the first answer to a request carrying
  an `Idempotency-Key` header for IDEMPOTENCY_SECONDS (SET NX: the first request wins; a second one
  arriving meanwhile waits a moment for that answer).
- `dashboard:identical-recent:<sha256(catalog name, canonical params)>` is the list of the newest
  IDENTICAL_MAX task ids launched with exactly these parameters, newest first (kept ATTACH_SECONDS
  after the last such launch). A launch notes its id in this process (`Remembered`); the pusher's
  next tick adds every id noted since in one pipeline (LPUSH, LTRIM, EXPIRE), so a launch pays no
  round trip for it. Only a launch that may attach reads the list (and this process's notes not
  written yet), newest first, and stops at the first unfinished task. Another web process sees a
  launch once it is written: at most a push tick (PUSH_INTERVAL) later.
- `dashboard:identical-claim:<sha256(catalog name, canonical params, scope)>` makes "none found, so
  launch" atomic: the list above is read before a launch is written, so identical launches at the
  same instant (on one web process or several) would all find none. A launch that found none takes
  the claim (SET NX EX, "sending:<task id>") before it sends; one that finds the claim taken attaches
  to the claimed task instead. The claim holds the task id ("sent:<task id>") for ATTACH_SECONDS; it
  ends when its task ends (the next launch finds the task ended and deletes the claim, compare and
  delete in one Lua script) or when its send fails (deleted the same way).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

import redis
from flask import current_app, make_response, request

from web import records
from web.auth import current_user
from web.errors import ApiError
from web.extensions import services, socketio

log = logging.getLogger(__name__)
IDEMPOTENCY_PREFIX = "dashboard:idempotency:"
IDENTICAL_PREFIX = "dashboard:identical-recent:"  # a list (the older "dashboard:identical:" sets expire)
CLAIM_PREFIX = "dashboard:identical-claim:"
# An Idempotency-Key: 1-255 visible ASCII characters (a UUID is the usual choice).
KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Task ids kept per list of identical parameters (the newest), and read at a time when attaching.
IDENTICAL_MAX = 100
IDENTICAL_CHUNK = 20
# How long a second request with the same key waits for the first one's answer (s); also how long
# an identical launch waits for the claimed task's send.
WAIT_FOR_FIRST = 5.0
# Seconds a claim lives while its task is being sent: a web process that died mid-send holds up
# identical launches (409 after WAIT_FOR_FIRST) no longer than this.
SENDING_SECONDS = 30
PENDING = "pending"


# ---- attach instead of launch -----------------------------------------------------------------

def canonical(name: str, params: dict[str, Any]) -> str:
    """The one text of a launch: catalog name and validated parameters, keys sorted, no spaces."""
    return json.dumps({"task": name, "params": params}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _identical_key(name: str, params: dict[str, Any]) -> str:
    return IDENTICAL_PREFIX + hashlib.sha256(canonical(name, params).encode()).hexdigest()


class Remembered:
    """Launches noted for attaching, not written to Redis yet: (list key, task id), oldest first,
    at most `limit` (the oldest are dropped past it; a dropped note only loses an offer to attach).
    `flush(client, seconds)` writes them all in one pipeline; the pusher calls it each tick."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.notes: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, key: str, task_id: str) -> None:
        with self.lock:
            self.notes.append((key, task_id))
            if len(self.notes) > self.limit:
                del self.notes[:len(self.notes) - self.limit]

    def newest(self, key: str) -> list[str]:
        """The ids noted under `key` and not written yet, newest first."""
        with self.lock:
            return [task_id for noted, task_id in reversed(self.notes) if noted == key]

    def flush(self, client: Any, seconds: int) -> None:
        """Write every note in one pipeline: per key, LPUSH its ids in launch order (the newest
        ends first), LTRIM to IDENTICAL_MAX, EXPIRE after `seconds`. On a Redis error the notes
        are kept for the next tick (within the bound) and the error raised."""
        with self.lock:
            notes, self.notes = self.notes, []
        if not notes:
            return
        by_key: dict[str, list[str]] = {}
        for key, task_id in notes:
            by_key.setdefault(key, []).append(task_id)
        try:
            pipe = client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.lpush(key, *ids)
                pipe.ltrim(key, 0, IDENTICAL_MAX - 1)
                pipe.expire(key, seconds)
            pipe.execute()
        except Exception:
            with self.lock:
                self.notes[:0] = notes
                if len(self.notes) > self.limit:
                    del self.notes[:len(self.notes) - self.limit]
            raise


def remembered() -> Remembered:
    """This app's notes of launches not yet written (see Remembered)."""
    return current_app.extensions["launches_remembered"]


def identical(name: str, params: dict[str, Any], visible: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The newest queued or running task launched from the catalog entry `name` with exactly
    `params` (validated, defaults filled) that `visible` lets the user see; None if there is none.
    Reads the newest IDENTICAL_CHUNK ids at a time: at most IDENTICAL_MAX task objects."""
    client, store = services().store.client, services().store
    key = _identical_key(name, params)
    noted = remembered().newest(key)[:IDENTICAL_MAX]
    if noted:  # launched here within the last tick: the task objects are in the index already
        found = store.get_many(noted)
        for task_id in noted:
            record = found.get(task_id)
            if record is not None and not records.is_terminal(record) and visible(record):
                return record
    for start in range(0, IDENTICAL_MAX, IDENTICAL_CHUNK):
        ids = [i.decode() if isinstance(i, bytes) else i
               for i in client.lrange(key, start, start + IDENTICAL_CHUNK - 1)]
        found = store.get_many(ids)
        for task_id in ids:  # newest first
            record = found.get(task_id)
            if record is not None and not records.is_terminal(record) and visible(record):
                return record
        if len(ids) < IDENTICAL_CHUNK:
            break
    return None


def remember(name: str, params: dict[str, Any], task_id: str) -> None:
    """Note a launch, so that an identical one can attach to it while it runs: in this process at
    once, in Redis with the pusher's next tick (Remembered.flush: LPUSH, LTRIM to the newest
    IDENTICAL_MAX, EXPIRE). (A set cleaned of ended tasks on each launch cost a read of 100 task
    objects per launch once full: launches of identical parameters ran at 48/s; a pipeline per
    launch was a round trip and ~4% of the web's CPU under a launch load.)"""
    remembered().add(_identical_key(name, params), task_id)


SENDING, SENT = "sending:", "sent:"
# Changes a claim only while it still holds what its launch wrote (ARGV[1]): to ARGV[2] for ARGV[3]
# seconds, or deleted when ARGV[2] is empty. Never touches a claim another launch has taken since.
SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""
_swap_scripts: dict[int, Any] = {}


def _swap(client: Any, key: str, held: str, new: str = "", seconds: int = 0) -> bool:
    """Replace the claim `key` by `new` for `seconds` (delete it when `new` is ""), if it still
    holds `held`; True if it did. Raises redis.RedisError."""
    script = _swap_scripts.get(id(client))
    if script is None:  # sent once per client, then called by its SHA
        script = _swap_scripts[id(client)] = client.register_script(SWAP)
    return bool(script(keys=[key], args=[held, new, seconds]))


class Claim:
    """The right to send the one task of a launch with these parameters: send it with `task_id`,
    then call `sent()` (the claim then lasts `seconds`, or until the task ends), or `release()` when
    the send failed (an identical launch may send at once). Neither raises: on a Redis error the
    claim expires by itself (SENDING_SECONDS) and the error is logged."""

    def __init__(self, client: Any, key: str, task_id: str, seconds: int) -> None:
        self.client, self.key, self.task_id, self.seconds = client, key, task_id, seconds

    def sent(self) -> None:
        try:
            _swap(self.client, self.key, SENDING + self.task_id, SENT + self.task_id, self.seconds)
        except redis.RedisError as exc:
            log.warning("could not mark the claim of the sent task %s: %r", self.task_id, exc)

    def release(self) -> None:
        try:
            _swap(self.client, self.key, SENDING + self.task_id)
        except redis.RedisError as exc:
            log.warning("could not release the claim of the unsent task %s: %r", self.task_id, exc)


def claim(name: str, params: dict[str, Any], scope: str) -> Claim | dict[str, Any]:
    """Take the claim on launching the catalog entry `name` with `params` (validated, defaults
    filled) for `scope` (who may attach to the task: web.api.attach_scope), or find the task of the
    launch that took it first.

    Returns a Claim to send with, or the claimed task's object when that task is unfinished (attach
    to it). A claim whose task ended, or left the index, is deleted and taken. While the claimed
    task is still being sent and not yet in the index, waits for it up to WAIT_FOR_FIRST s; past
    that, ApiError 409 (no task to attach to yet). Raises redis.RedisError when Redis is away."""
    client, store = services().store.client, services().store
    key = CLAIM_PREFIX + hashlib.sha256(f"{canonical(name, params)}\0{scope}".encode()).hexdigest()
    task_id = str(uuid.uuid4())
    deadline = time.monotonic() + WAIT_FOR_FIRST
    while True:
        if client.set(key, SENDING + task_id, nx=True, ex=SENDING_SECONDS):
            return Claim(client, key, task_id, int(current_app.config["ATTACH_SECONDS"]))
        raw = client.get(key)
        if raw is None:  # it ended between the two calls
            continue
        held = raw.decode() if isinstance(raw, bytes) else raw
        held_id = held.partition(":")[2]
        record = store.get(held_id)
        if record is not None and not records.is_terminal(record):
            return record
        if record is not None or held.startswith(SENT):  # its task ended: so does the claim
            _swap(client, key, held)
            continue
        if time.monotonic() > deadline:
            raise ApiError(409, "an identical launch made at the same moment is still being sent; "
                                "try again in a moment")
        socketio.sleep(0.02)


# ---- one task per click -----------------------------------------------------------------------

def idempotency_key(user: str, path: str, key: str) -> str:
    """The Redis key of a user's Idempotency-Key sent to `path`."""
    return IDEMPOTENCY_PREFIX + hashlib.sha256("\0".join((user, path, key)).encode()).hexdigest()


def _answer(stored: dict[str, Any]) -> Any:
    response = make_response(stored["body"], stored["status"])
    if stored.get("location"):
        response.headers["Location"] = stored["location"]
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view decorator: a request with an `Idempotency-Key` header that the same user already sent
    to the same URL within IDEMPOTENCY_SECONDS gets the first request's answer (header
    `Idempotent-Replayed: true`) and acts no second time. Answers kept: 2xx and 409 (the first
    launch, an offer to attach); after any other answer the key may be used again. The same key with
    another body is 422; while the first request is still being answered, 409 after a short wait."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not KEY.fullmatch(key):
            raise ApiError(422, "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
                           [{"field": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}])
        client = services().store.client
        name = idempotency_key(current_user().name, request.path, key)
        body = hashlib.sha256(request.get_data()).hexdigest()
        seconds = int(current_app.config["IDEMPOTENCY_SECONDS"])
        while not client.set(name, json.dumps({"state": PENDING, "request": body}), nx=True, ex=seconds):
            stored = _first_answer(client, name, body)
            if stored is not None:
                return _answer(stored)
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            client.delete(name)
            raise
        if 200 <= response.status_code < 300 or response.status_code == 409:
            stored = {"state": "done", "request": body, "status": response.status_code,
                      "body": response.get_json(silent=True), "location": response.headers.get("Location")}
            client.set(name, json.dumps(stored), ex=seconds)
        else:
            client.delete(name)
        return response

    return wrapper


def _first_answer(client: Any, name: str, body: str) -> dict[str, Any] | None:
    """The answer stored under `name`, waiting up to WAIT_FOR_FIRST s while the first request runs;
    None when the key is free again (the first request failed: this one may act)."""
    deadline = time.monotonic() + WAIT_FOR_FIRST
    while True:
        raw = client.get(name)
        if raw is None:
            return None
        stored = json.loads(raw)
        if stored.get("request") != body:
            raise ApiError(422, "this Idempotency-Key was already used for a different request; use a new key",
                           [{"field": "Idempotency-Key", "message": "already used for a different request"}])
        if stored.get("state") != PENDING:
            return stored
        if time.monotonic() > deadline:
            raise ApiError(409, "a request with this Idempotency-Key is still being answered; try again in a moment")
        socketio.sleep(0.05)
