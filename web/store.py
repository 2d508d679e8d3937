"""The task index in Redis, as the dashboard reads and writes it: newest first, bounded in size.

Every web process writes what its own listener learns; writes are compare-and-set on each task's
place in its life (`records.order`), so two processes, or a slow one, never move a task back.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from celery_dashboard.index import ACTIVE_KEY, DATA_KEY, KEYS, ORDER_KEY, RECENT_KEY, owner_key
from web import records

# ARGV holds groups of six: id, order (JSON list), record (JSON), creation score, terminal (0/1),
# and the owner's sorted set ('' for none). Returns the ids whose write lost to a later place.
SAVE = """
local rejected = {}
for i = 1, #ARGV, 6 do
  local id, order = ARGV[i], cjson.decode(ARGV[i + 1])
  local stored = redis.call('HGET', KEYS[2], id)
  local newer = true
  if stored then
    local old = cjson.decode(stored)
    for j = 1, #order do
      if order[j] ~= old[j] then newer = order[j] > old[j]; break end
    end
  end
  if newer then
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    redis.call('HSET', KEYS[2], id, ARGV[i + 1])
    redis.call('ZADD', KEYS[3], 'NX', ARGV[i + 3], id)
    if ARGV[i + 4] == '1' then redis.call('SREM', KEYS[4], id) else redis.call('SADD', KEYS[4], id) end
    if ARGV[i + 5] ~= '' then redis.call('ZADD', ARGV[i + 5], 'NX', ARGV[i + 3], id) end
  else
    rejected[#rejected + 1] = id
  end
end
return rejected
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TaskStore:
    """Reads and writes task objects; the result backend stays the truth for results."""

    def __init__(self, client: redis.Redis, history_limit: int = 10_000, history_seconds: float = 7 * 86400) -> None:
        self.client = client
        self.history_limit = history_limit
        self.history_seconds = history_seconds
        self._save = client.register_script(SAVE)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.get_many([task_id]).get(task_id)

    def get_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(task_ids)
        if not ids:
            return {}
        return {
            task_id: json.loads(raw)
            for task_id, raw in zip(ids, self.client.hmget(DATA_KEY, ids), strict=True)
            if raw is not None
        }

    def recent(self, limit: int = 50, state: str | None = None, offset: int = 0,
               owner: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` tasks after skipping `offset`, optionally only those in `state`, and
        only `owner`'s when given (from that user's own index, so paging stays cheap)."""
        found: list[dict[str, Any]] = []
        page, start = max(limit, 100), 0
        key = owner_key(owner) if owner is not None else RECENT_KEY
        while len(found) < offset + limit:
            ids = [_text(i) for i in self.client.zrevrange(key, start, start + page - 1)]
            if not ids:
                break
            by_id = self.get_many(ids)
            for task_id in ids:
                record = by_id.get(task_id)
                if record and (state is None or record.get("state") == state) and (
                        owner is None or record.get("owner") == owner):
                    found.append(record)
            start += page
        return found[offset:offset + limit]

    def active_ids(self) -> list[str]:
        return [_text(i) for i in self.client.smembers(ACTIVE_KEY)]

    def active_count(self, owner: str, newest: int = 1000) -> int:
        """How many of `owner`'s newest tasks have not ended yet."""
        ids = self.client.zrevrange(owner_key(owner), 0, newest - 1)
        return sum(1 for flag in self.client.smismember(ACTIVE_KEY, ids) if flag) if ids else 0

    def count(self) -> int:
        return int(self.client.zcard(RECENT_KEY))

    def save_many(self, items: Iterable[dict[str, Any]]) -> list[str]:
        """Write records unless a later state is stored; return the ids whose write lost."""
        args: list[Any] = []
        for record in items:
            args += [record["id"], json.dumps(records.record_order(record)), json.dumps(record, default=str),
                     records.epoch(record.get("created") or record.get("updated")),
                     "1" if records.is_terminal(record) else "0",
                     owner_key(record["owner"]) if record.get("owner") else ""]
        if not args:
            return []
        return [_text(i) for i in self._save(keys=KEYS, args=args)]

    def trim(self, now: float | None = None) -> int:
        """Drop tasks older than the history window and the oldest beyond the history limit."""
        now = time.time() if now is None else now
        old = [_text(i) for i in self.client.zrangebyscore(RECENT_KEY, "-inf", now - self.history_seconds)]
        excess = self.client.zcard(RECENT_KEY) - len(old) - self.history_limit
        if excess > 0:
            old += [_text(i) for i in self.client.zrange(RECENT_KEY, len(old), len(old) + excess - 1)]
        for start in range(0, len(old), 1000):
            chunk = old[start:start + 1000]
            owners: dict[str, list[str]] = {}
            for task_id, record in self.get_many(chunk).items():
                if record.get("owner"):
                    owners.setdefault(record["owner"], []).append(task_id)
            pipe = self.client.pipeline(transaction=False)
            for owner, ids in owners.items():
                pipe.zrem(owner_key(owner), *ids)
            pipe.zrem(RECENT_KEY, *chunk)
            pipe.hdel(DATA_KEY, *chunk)
            pipe.hdel(ORDER_KEY, *chunk)
            pipe.srem(ACTIVE_KEY, *chunk)
            pipe.execute()
        return len(old)

    def merge(self, updates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply updates (by task id) to the stored objects and save them; return the results as
        stored now (a write that lost to a later state returns what is stored instead)."""
        stored = self.get_many(updates)
        merged: dict[str, dict[str, Any]] = {}
        for task_id, update in updates.items():
            record = stored.get(task_id) or records.new_record(task_id)
            if records.merge(record, update) or task_id not in stored:
                merged[task_id] = record
        lost = self.save_many(merged.values())
        if lost:
            merged.update(self.get_many(lost))
        return [merged.get(task_id) or stored[task_id] for task_id in updates if task_id in merged or task_id in stored]
