"""The task index in Redis, as the sending side sees it: every task is registered when published.

Events are fire-and-forget; registering at publish time means a task sent while no dashboard
listened is still known, and its state can be reconciled from the result backend later.

A task is not shown queued unless it was sent. A task without an `owner` header (sent by any
process: a shell, a worker, another app) is registered after its message was published
(`after_task_publish`): `.delay()` with an argument that JSON cannot encode raises EncodeError in
the caller before anything is sent, and such a task is never registered. The dashboard's own
launches carry an `owner` header and are registered just before the message is sent
(`before_task_publish`), so no worker event can create the record first and the record carries its
owner from its first write; their params are JSON already, and when sending fails anyway the
launch calls `forget`.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import _state, current_app
from celery.backends.redis import RedisBackend
from celery.signals import after_task_publish, before_task_publish

from celery_dashboard import arguments

log = logging.getLogger(__name__)

DATA_KEY = "dashboard:tasks"      # hash: task id -> task object (JSON)
VERSION_KEY = "dashboard:version"  # hash: task id -> its version (web.store: compare-and-set)
RECENT_KEY = "dashboard:recent"   # sorted set: task id scored by creation time
ACTIVE_KEY = "dashboard:active"   # set: ids not yet seen to end (reconciled from the result backend)
KEYS = [DATA_KEY, VERSION_KEY, RECENT_KEY, ACTIVE_KEY]
OWNER_KEY = "dashboard:owner:{}"  # sorted set per user: their task ids scored by creation time
CHILDREN_KEY = "dashboard:children:{}"  # sorted set per parent task: its children scored by creation time
# hash: task id -> the params of a dashboard launch (JSON, unmasked: read for a retry, never sent to
# browsers); written at registration, removed with the task.
PARAMS_KEY = "dashboard:params"
# At most this many attempts are kept in a task object (the latest ones).
MAX_ATTEMPTS = 20


def owner_key(owner: str) -> str:
    return OWNER_KEY.format(owner)


def children_key(parent: str) -> str:
    return CHILDREN_KEY.format(parent)

# Adds a task only if the index does not know it yet (a retry re-publishes the same id). KEYS[5]
# (its owner's set), KEYS[6] (its parent's children) and KEYS[7] (launch params) are written when
# ARGV[4], ARGV[5] are '1' and ARGV[6] is not empty.
REGISTER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], 1)
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[1])
  if ARGV[4] == '1' then redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1]) end
  if ARGV[5] == '1' then redis.call('ZADD', KEYS[6], 'NX', ARGV[3], ARGV[1]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[7], ARGV[1], ARGV[6]) end
  return 1
end
return 0
"""
# Where a task object's details come from at registration: the message's arguments and routing.
DETAILS = ("args", "kwargs", "queue", "exchange", "routing_key", "retry_of")


def pending_record(task_id: str, name: str | None, parent: str | None, created: float,
                   owner: str | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A task object as it is first written: the task object's shape is defined here, where
    tasks are first registered (web.records derives its fields from it).

    `details` may give the DETAILS fields: `args` and `kwargs` (previews, already masked:
    celery_dashboard.arguments), `queue`, `exchange`, `routing_key` and `retry_of` (the task a
    dashboard retry re-launched). `attempts` lists each run: {retries, worker, started, finished,
    error {type, message} or None}, oldest first, at most MAX_ATTEMPTS."""
    when = datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")
    record = {"id": task_id, "name": name, "state": "PENDING", "version": 1, "progress": None, "result": None,
              "result_truncated": False, "error": None, "created": when, "started": None, "finished": None,
              "worker": None, "worker_status": None, "parent": parent, "retries": 0, "updated": when,
              "owner": owner, "confidence": None, "clock_skew": False, "cooperative": None,
              "args": None, "kwargs": None, "queue": None, "exchange": None, "routing_key": None,
              "received": None, "attempts": [], "retry_of": None}
    for key in DETAILS:
        if details and isinstance(details.get(key), str):
            record[key] = details[key]
    return record


_scripts: dict[int, Any] = {}


def register(client: Any, task_id: str, name: str | None, parent: str | None = None,
             owner: str | None = None, now: float | None = None, details: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Add a task to the index unless it is known; return its new record, or None if known.

    `details`: see `pending_record`; `params`: a dashboard launch's params, kept in PARAMS_KEY."""
    now = time.time() if now is None else now
    record, keys, args = registration(task_id, name, parent, owner, now, details, params)
    script = _scripts.get(id(client))
    if script is None:  # sent once per client, then called by its SHA
        script = _scripts[id(client)] = client.register_script(REGISTER)
    return record if script(keys=keys, args=args) else None


def registration(task_id: str, name: str | None, parent: str | None, owner: str | None, now: float,
                 details: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], list[str], list[Any]]:
    """(the new record, REGISTER's keys, its arguments) for one task: what `register` runs, for
    callers that send REGISTER themselves (a pipeline of many: bench/storm.py)."""
    parent = parent if parent != task_id else None
    record = pending_record(task_id, name, parent, now, owner, details)
    keys = [*KEYS, owner_key(owner or ""), children_key(parent or ""), PARAMS_KEY]
    args = [task_id, json.dumps(record), now, "1" if owner else "0", "1" if parent else "0",
            json.dumps(params) if params is not None else ""]
    return record, keys, args


# Removes a task's registration, wherever register put it (its owner's set is read from its record).
FORGET = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local ok, task = pcall(cjson.decode, record)
if ok and type(task) == 'table' and type(task['owner']) == 'string' then
  redis.call('ZREM', ARGV[2] .. task['owner'], ARGV[1])
end
if ok and type(task) == 'table' and type(task['parent']) == 'string' then
  redis.call('ZREM', ARGV[3] .. task['parent'], ARGV[1])
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""
_forget_scripts: dict[int, Any] = {}


def forget(client: Any, task_id: str) -> bool:
    """Remove a task's registration (for a launch whose message could not be sent); True if it
    was registered. Does nothing when `client` is None (no index: see `client`)."""
    if client is None:
        return False
    script = _forget_scripts.get(id(client))
    if script is None:
        script = _forget_scripts[id(client)] = client.register_script(FORGET)
    return bool(script(keys=[*KEYS, PARAMS_KEY], args=[task_id, owner_key(""), children_key("")]))


_client: Any = None  # tests put an in-memory Redis here
_clients: dict[int, tuple[Any, Any]] = {}
_warned: set[str] = set()


def client(task_name: str | None = None) -> Any:
    """The Redis client the index is written with: the publishing app's result backend client, or
    None when the publishing app's result backend is not Redis (logged once per task name).

    Publish signals name the task, not its app. `celery.current_app` alone is not the answer: it is
    thread-local, and in any thread but the one that created the app (a web request, a user's
    worker thread) it is Celery's fallback app "default", without a result backend. So the app is
    the one that has `task_name` registered, else any app; the current app first, then the others
    Celery knows are alive (`celery._state._get_active_apps()`, as Celery's own `shared_task` finds
    them); the first with a Redis result backend wins. A task of an app whose result backend is not
    Redis is not registered at all. Backend clients are resolved once per app.
    """
    if _client is not None:
        return _client
    current = current_app._get_current_object()
    if task_name is None or _registers(current, task_name):
        found = _backend_client(current)
        if found is not None:
            return found
    apps = [current, *(app for app in list(_state._get_active_apps()) if app is not current)]
    if task_name is not None:
        apps = [app for app in apps if _registers(app, task_name)] or apps  # sent by name: any app
    for app in apps:
        found = _backend_client(app)
        if found is not None:
            return found
    if str(task_name) not in _warned and len(_warned) < 100:
        _warned.add(str(task_name))
        log.warning("task %s is not registered in the dashboard index: its app's result backend is not Redis",
                    task_name)
    return None


def _registers(app: Any, task_name: str) -> bool:
    # The registry itself, as Celery's send_task reads it: `app.tasks` would finalize the app.
    return task_name in app._tasks


def _backend_client(app: Any) -> Any:
    try:
        return _clients[id(app)][1]
    except KeyError:
        pass
    backend = app.backend
    redis_client = backend.client if isinstance(backend, RedisBackend) else None
    _clients[id(app)] = (app, redis_client)  # the app is held, so its id is never another's
    return redis_client


def details(headers: dict[str, Any], body: Any = None, exchange: Any = None, routing_key: Any = None,
            declare: Any = None) -> dict[str, Any]:
    """A task object's DETAILS from a publish signal: argument previews from the message body
    (protocol 2: `(args, kwargs, embed)`; protocol 1: a dict), else from the `argsrepr` and
    `kwargsrepr` headers, masked either way; the queue (the declared one, else the routing key of
    the default exchange, the queue's own name), the exchange and the routing key."""
    found: dict[str, Any] = {}
    args = kwargs = None
    if isinstance(body, (tuple, list)) and len(body) >= 2:
        args, kwargs = body[0], body[1]
    elif isinstance(body, dict):
        args, kwargs = body.get("args"), body.get("kwargs")
    if isinstance(args, (list, tuple)) and isinstance(kwargs, dict):
        found["args"], found["kwargs"] = arguments.preview(args, kwargs)
    else:
        found["args"], found["kwargs"] = (arguments.mask_repr(headers.get("argsrepr")),
                                          arguments.mask_repr(headers.get("kwargsrepr")))
    exchange_name = getattr(exchange, "name", exchange)
    queue = next((getattr(q, "name", None) for q in declare or () if getattr(q, "name", None)), None)
    if queue is None and exchange_name == "" and isinstance(routing_key, str):
        queue = routing_key
    found.update(queue=queue, exchange=exchange_name if isinstance(exchange_name, str) else None,
                 routing_key=routing_key if isinstance(routing_key, str) else None)
    if _owned(headers) and isinstance(headers.get("retry_of"), str):
        found["retry_of"] = headers["retry_of"]
    return found


def _register_published(sender: str | None, headers: dict[str, Any], body: Any = None, exchange: Any = None,
                        routing_key: Any = None, declare: Any = None) -> None:
    task_id = headers.get("id")
    if not task_id or (headers.get("retries") or 0) > 0:
        return
    try:
        redis_client = client(sender)
        if redis_client is None:
            return
        owner = headers.get("owner") if _owned(headers) else None  # set by the dashboard's launch
        if owner is None and headers.get("parent_id"):
            # A task sent by a launched task (a group's children, a chain's next step) belongs to
            # whoever launched its parent: they may see it, open it and cancel it.
            owner = parent_owner(redis_client, headers["parent_id"])
        params = None
        if _owned(headers) and isinstance(body, (tuple, list)) and len(body) >= 2 and isinstance(body[1], dict):
            params = body[1]  # a launch's params are its kwargs (JSON already)
        register(redis_client, task_id, sender, headers.get("parent_id"), owner,
                 details=details(headers, body, exchange, routing_key, declare), params=params)
    except Exception:  # the dashboard will learn of the task from events instead
        log.warning("could not register task %s in the dashboard index", task_id, exc_info=True)


def parent_owner(redis_client: Any, parent_id: str) -> str | None:
    """The owner recorded for task `parent_id` in the index (None: unknown, or nobody's)."""
    raw = redis_client.hget(DATA_KEY, parent_id)
    try:
        owner = json.loads(raw).get("owner") if raw else None
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) and owner else None


def _owned(headers: dict[str, Any]) -> bool:
    owner = headers.get("owner")
    return isinstance(owner, str) and bool(owner)


@before_task_publish.connect
def _before_publish(sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None,
                    exchange: Any = None, routing_key: Any = None, declare: Any = None, **_: Any) -> None:
    if headers and _owned(headers):
        _register_published(sender, headers, body, exchange, routing_key, declare)


@after_task_publish.connect
def _after_publish(sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None,
                   exchange: Any = None, routing_key: Any = None, **_: Any) -> None:
    if headers and not _owned(headers):
        _register_published(sender, headers, body, exchange, routing_key)
