"""The task index in Redis: every task the dashboard has seen, newest first, bounded in size."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from web import records

DATA_KEY = "dashboard:tasks"      # hash: task id -> task object (JSON)
RECENT_KEY = "dashboard:recent"   # sorted set: task id scored by creation time
ACTIVE_KEY = "dashboard:active"   # set: ids not yet in a terminal state (reconciled from the backend)


class TaskStore:
    """Reads and writes task objects; the result backend stays the truth for results."""

    def __init__(self, client: redis.Redis, history_limit: int = 10_000) -> None:
        self.client = client
        self.history_limit = history_limit

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

    def recent(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` tasks, optionally only those in `state`."""
        found: list[dict[str, Any]] = []
        page, start = max(limit, 100), 0
        while len(found) < limit:
            ids = self.client.zrevrange(RECENT_KEY, start, start + page - 1)
            if not ids:
                break
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
            by_id = self.get_many(ids)
            for task_id in ids:
                record = by_id.get(task_id)
                if record and (state is None or record.get("state") == state):
                    found.append(record)
            start += page
            if state is None:
                break
        return found[:limit]

    def active_ids(self) -> list[str]:
        return [i.decode() if isinstance(i, bytes) else i for i in self.client.smembers(ACTIVE_KEY)]

    def save_many(self, items: Iterable[dict[str, Any]]) -> None:
        items = list(items)
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(DATA_KEY, mapping={r["id"]: json.dumps(r, default=str) for r in items})
        pipe.zadd(RECENT_KEY, {r["id"]: records.epoch(r.get("created") or r.get("updated")) for r in items},
                  nx=True)
        done = [r["id"] for r in items if records.is_terminal(r)]
        running = [r["id"] for r in items if not records.is_terminal(r)]
        if done:
            pipe.srem(ACTIVE_KEY, *done)
        if running:
            pipe.sadd(ACTIVE_KEY, *running)
        pipe.zcard(RECENT_KEY)
        size = pipe.execute()[-1]
        if size > self.history_limit * 1.1:  # trim in steps, not on every write
            self.trim()

    def trim(self) -> None:
        """Drop the oldest tasks beyond the history limit."""
        excess = self.client.zcard(RECENT_KEY) - self.history_limit
        if excess <= 0:
            return
        old = self.client.zrange(RECENT_KEY, 0, excess - 1)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(RECENT_KEY, *old)
        pipe.hdel(DATA_KEY, *old)
        pipe.srem(ACTIVE_KEY, *old)
        pipe.execute()

    def merge(self, updates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply updates (by task id) to the stored objects; save and return those that changed."""
        stored = self.get_many(updates)
        changed = []
        for task_id, update in updates.items():
            record = stored.get(task_id) or records.new_record(task_id)
            if records.merge(record, update) or task_id not in stored:
                changed.append(record)
        self.save_many(changed)
        return changed
