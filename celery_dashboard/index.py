"""The task index in Redis, as the sending side sees it: every task is registered when published.

Events are fire-and-forget; registering at publish time means a task sent while no dashboard
listened is still known, and its state can be reconciled from the result backend later.
Registration runs just before the message is sent (`before_task_publish`), so no worker event can
create the record first: the record carries its owner (a message header) from its first write.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery.signals import before_task_publish

log = logging.getLogger(__name__)

DATA_KEY = "dashboard:tasks"      # hash: task id -> task object (JSON)
ORDER_KEY = "dashboard:order"     # hash: task id -> its place in its life (JSON list), for compare-and-set
RECENT_KEY = "dashboard:recent"   # sorted set: task id scored by creation time
ACTIVE_KEY = "dashboard:active"   # set: ids not yet seen to end (reconciled from the result backend)
KEYS = [DATA_KEY, ORDER_KEY, RECENT_KEY, ACTIVE_KEY]
OWNER_KEY = "dashboard:owner:{}"  # sorted set per user: their task ids scored by creation time


def owner_key(owner: str) -> str:
    return OWNER_KEY.format(owner)

# Adds a task only if the index does not know it yet (a retry re-publishes the same id).
REGISTER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], '[0,0,0,0]')
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[1])
  if KEYS[5] then redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[1]) end
  return 1
end
return 0
"""


def pending_record(task_id: str, name: str | None, parent: str | None, created: float,
                   owner: str | None = None) -> dict[str, Any]:
    when = datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")
    return {"id": task_id, "name": name, "state": "PENDING", "progress": None, "result": None, "error": None,
            "created": when, "started": None, "finished": None, "worker": None, "parent": parent,
            "retries": 0, "updated": when, "owner": owner}


_scripts: dict[int, Any] = {}


def register(client: Any, task_id: str, name: str | None, parent: str | None = None,
             owner: str | None = None, now: float | None = None) -> dict[str, Any] | None:
    """Add a task to the index unless it is known; return its new record, or None if known."""
    now = time.time() if now is None else now
    record = pending_record(task_id, name, parent if parent != task_id else None, now, owner)
    keys = [*KEYS, owner_key(owner)] if owner else KEYS
    script = _scripts.get(id(client))
    if script is None:  # sent once per client, then called by its SHA
        script = _scripts[id(client)] = client.register_script(REGISTER)
    return record if script(keys=keys, args=[task_id, json.dumps(record), now]) else None


_client: Any = None  # tests put an in-memory Redis here


def client() -> Any:
    """The Redis client the index is written with: the result backend's."""
    if _client is not None:
        return _client
    from tasks.celery_app import celery_app

    return celery_app.backend.client


@before_task_publish.connect
def _on_publish(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    headers = headers or {}
    task_id = headers.get("id")
    if not task_id or (headers.get("retries") or 0) > 0:
        return
    try:
        owner = headers.get("owner")  # set by the dashboard's launch (message headers)
        register(client(), task_id, sender, headers.get("parent_id"),
                 owner if isinstance(owner, str) and owner else None)
    except Exception:  # the task is sent; the dashboard will learn of it from events instead
        log.warning("could not register task %s in the dashboard index", task_id, exc_info=True)
