"""The task index in Redis, as the dashboard reads and writes it: newest first, bounded in size.

Every web process writes what its own listener learns; writes are compare-and-set on each task's
version (see `SAVE`), so two processes, or a slow one, never move a task back.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis

from celery_dashboard import index
from celery_dashboard.index import ACTIVE_KEY, DATA_KEY, KEYS, RECENT_KEY, VERSION_KEY, children_key, owner_key
from web import lifecycle, records
from web.filters import TaskFilter, unknown_states
from web.results import dumps, json_safe

log = logging.getLogger(__name__)

# Compare-and-set on each task's version. ARGV holds groups of seven: id, the version the record was
# merged from, the record (JSON, carrying that version plus one), creation score, settled (0/1:
# leaves the set of tasks to reconcile), the owner's sorted set and its parent's children sorted
# set ('' for none). Which update may
# replace which is decided in Python (web.lifecycle); a write whose base version is no longer
# current is rejected, and the caller merges again from what is stored. Returns the rejected ids.
SAVE = """
local rejected = {}
for i = 1, #ARGV, 7 do
  local id = ARGV[i]
  local stored = tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0
  if stored == tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], id, ARGV[i + 2])
    redis.call('HSET', KEYS[2], id, stored + 1)
    redis.call('ZADD', KEYS[3], 'NX', ARGV[i + 3], id)
    if ARGV[i + 4] == '1' then redis.call('SREM', KEYS[4], id) else redis.call('SADD', KEYS[4], id) end
    if ARGV[i + 5] ~= '' then redis.call('ZADD', ARGV[i + 5], 'NX', ARGV[i + 3], id) end
    if ARGV[i + 6] ~= '' then redis.call('ZADD', ARGV[i + 6], 'NX', ARGV[i + 3], id) end
  else
    rejected[#rejected + 1] = id
  end
end
return rejected
"""
MERGE_ATTEMPTS = 5
SCAN_CHUNK = 1000  # ids read per round of a query's scan (ZRANGEBYSCORE, then one HMGET)
MAX_CHILDREN = 100


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _AllFound(Exception):
    """Stops a scan once every state looked for was seen."""


STATE_AT = b'"state": "'  # how the task object's JSON text (json.dumps' separators) gives its state


def _loads(raw: bytes) -> Any:
    """A stored task object: orjson (a snapshot of 200 tasks decodes in about a third of the json
    module's time), else the json module, for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class Hit:
    """A task found by a scan: its id, its state and its object, decoded on first use."""

    __slots__ = ("id", "raw", "state", "_record")

    def __init__(self, task_id: str, raw: bytes) -> None:
        self.id, self.raw, self._record = task_id, raw, None
        # The first `"state": "` is the object's own: "id" and "name", the only keys before it,
        # are strings, whose quotes JSON escapes. A state with an escape in it is read decoded.
        at = raw.find(STATE_AT)
        end = raw.find(b'"', at + len(STATE_AT)) if at >= 0 else -1
        text = raw[at + len(STATE_AT):end] if end >= 0 else b"\\"
        self.state: str | None = None if b"\\" in text else text.decode()

    def record(self) -> dict[str, Any]:
        if self._record is None:
            self._record = _loads(self.raw)
            self.state = self._record.get("state")
        return self._record


class TaskStore:
    """Reads and writes task objects; the result backend stays the truth for results."""

    def __init__(self, client: redis.Redis, history_limit: int = 10_000, history_seconds: float = 7 * 86400,
                 scan_limit: int | None = None) -> None:
        self.client = client
        self.history_limit = history_limit
        # The most index entries one query reads (QUERY_SCAN_LIMIT); past it, its answer says so.
        self.scan_limit = scan_limit or history_limit
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
            task_id: _loads(raw)
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

    def unknown(self, task_ids: list[str]) -> list[str]:
        """The ids of `task_ids` this store holds no task object for (one HMGET of the versions)."""
        if not task_ids:
            return []
        versions = self.client.hmget(VERSION_KEY, task_ids)
        return [task_id for task_id, version in zip(task_ids, versions, strict=True) if version is None]

    def active_count(self, owner: str, limit: int) -> int:
        """How many of `owner`'s tasks have not ended yet, counted up to `limit` (a count of `limit`
        means "at least that many"). One command, computed in Redis: ZINTERCARD of the owner's set
        and the unfinished set, which walks the smaller of the two and stops at `limit` (Redis 7.0).
        On an older Redis ("unknown command"), the owner's newest 1,000 ids are read and checked
        with SMISMEMBER (Redis 6.2): two round trips and 1,000 ids each way once a user has that
        many tasks in the history, which cost a launch several ms."""
        try:
            return int(self.client.zintercard(2, [owner_key(owner), ACTIVE_KEY], limit=max(1, limit)))
        except redis.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
        ids = self.client.zrevrange(owner_key(owner), 0, 999)
        return min(limit, sum(1 for flag in self.client.smismember(ACTIVE_KEY, ids) if flag)) if ids else 0

    def count(self) -> int:
        return int(self.client.zcard(RECENT_KEY))

    def save_many(self, items: Iterable[dict[str, Any]]) -> list[str]:
        """Write records merged from the version they carry; each is stored with that version plus
        one unless another write came first. Return the ids whose write lost (merge again). A value
        JSON cannot carry (NaN, an object) is replaced in the record itself by its text
        (web.results.json_safe), as it is stored."""
        args: list[Any] = []
        for record in items:
            base = int(record.get("version") or 0)
            try:
                text = json.dumps(dict(record, version=base + 1), allow_nan=False)
            except (TypeError, ValueError):  # a value JSON cannot carry: replaced by its text, here too,
                record.update(json_safe(record))  # so that what merge returns is what was stored
                text = dumps(dict(record, version=base + 1))
            args += [record["id"], base, text,
                     records.epoch(record.get("created") or record.get("updated")) or time.time(),
                     "1" if lifecycle.is_settled(record) else "0",
                     owner_key(record["owner"]) if record.get("owner") else "",
                     children_key(record["parent"]) if record.get("parent") else ""]
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
            parents: dict[str, list[str]] = {}
            for task_id, record in self.get_many(chunk).items():
                if record.get("owner"):
                    owners.setdefault(record["owner"], []).append(task_id)
                if record.get("parent"):
                    parents.setdefault(record["parent"], []).append(task_id)
            pipe = self.client.pipeline(transaction=False)
            for owner, ids in owners.items():
                pipe.zrem(owner_key(owner), *ids)
            for parent, ids in parents.items():
                pipe.zrem(children_key(parent), *ids)
            pipe.delete(*(children_key(task_id) for task_id in chunk))
            pipe.hdel(index.PARAMS_KEY, *chunk)
            pipe.zrem(RECENT_KEY, *chunk)
            pipe.hdel(DATA_KEY, *chunk)
            pipe.hdel(VERSION_KEY, *chunk)
            pipe.srem(ACTIVE_KEY, *chunk)
            pipe.execute()
        return len(old)

    def params(self, task_id: str) -> dict[str, Any] | None:
        """The params a dashboard launch was sent with (unmasked: never send them to a browser), or
        None for a task the dashboard did not launch or the index no longer holds."""
        raw = self.client.hget(index.PARAMS_KEY, task_id)
        value = json.loads(raw) if raw is not None else None
        return value if isinstance(value, dict) else None

    def children(self, task_id: str, limit: int = MAX_CHILDREN) -> tuple[list[dict[str, Any]], int]:
        """The first `limit` children of a task in the order they were sent, each {id, name,
        state}, and how many it has in the index."""
        key = children_key(task_id)
        ids = [_text(i) for i in self.client.zrange(key, 0, limit - 1)]
        total = int(self.client.zcard(key)) if len(ids) >= limit else len(ids)
        found = self.get_many(ids)
        shown = [{"id": i, "name": found[i].get("name"), "state": found[i].get("state")} for i in ids if i in found]
        return shown, total

    def unfinished(self, owner: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The newest `limit` tasks not yet seen to end (only `owner`'s when given), and whether
        there were more."""
        ids = self.active_ids()
        if not ids:
            return [], False
        scores = self.client.zmscore(owner_key(owner) if owner is not None else RECENT_KEY, ids)
        ranked = sorted(((score or 0.0, i) for i, score in zip(ids, scores, strict=True)
                         if score is not None or owner is None), reverse=True)
        found = self.get_many(i for _, i in ranked[:limit])
        tasks = [found[i] for _, i in ranked[:limit]
                 if i in found and (owner is None or found[i].get("owner") == owner)]
        return tasks, len(ranked) > limit

    def scan(self, flt: TaskFilter, owner: str | None, sort: str, on_match: Callable[[Hit], None],
             bound: int | None = None) -> bool:
        """Call `on_match` with a Hit for every task that passes `flt` (and is `owner`'s, when
        given), newest or oldest first by creation; read at most `bound` index entries (default
        scan_limit). Return True when it stopped at the bound with entries left unread.

        The index holds up to HISTORY_LIMIT tasks: ids are read SCAN_CHUNK at a time from the
        sorted set (the user's own, when only one user's tasks can match; the time range applied
        by score), their objects with one HMGET. An object is decoded at most once, and only
        when the filter needs its fields or the caller its object: a filter on states alone reads
        each state from the JSON text (`Hit.state`)."""
        if owner is not None and flt.owner not in (None, owner):
            return False  # another user's tasks: never shown to this one
        who = owner if owner is not None else flt.owner
        key = owner_key(who) if who is not None else RECENT_KEY
        # Task times are shown (and given back as `since`/`until`) rounded to the nearest
        # microsecond (datetime.fromtimestamp), while the index's score keeps time.time()'s full
        # precision: a `since` or `until` equal to a task's shown time includes that task.
        low = "-inf" if flt.since is None else flt.since - 1e-6
        high = "+inf" if flt.until is None else flt.until + 1e-6
        bound = self.scan_limit if bound is None else bound
        decode = any(value is not None for value in (flt.name, flt.queue, flt.worker, flt.q))
        needles = flt.needles()
        start = 0
        while start < bound:
            count = min(SCAN_CHUNK, bound - start)
            if sort == "oldest":
                ids = self.client.zrangebyscore(key, low, high, start=start, num=count)
            else:
                ids = self.client.zrevrangebyscore(key, high, low, start=start, num=count)
            if not ids:
                return False
            for task_id, raw in zip(ids, self.client.hmget(DATA_KEY, ids), strict=True):
                if raw is None:
                    continue
                if needles:
                    lowered = raw.lower()
                    if not all(needle in lowered for needle in needles):
                        continue  # a text the filter asks for is not even in the JSON text
                hit = Hit(_text(task_id), raw)
                if decode or hit.state is None:
                    if not flt.matches(hit.record(), times=False):
                        continue
                elif flt.states and hit.state not in flt.states:
                    continue
                on_match(hit)
            start += len(ids)
            if len(ids) < count:
                return False
        if sort == "oldest":
            return bool(self.client.zrangebyscore(key, low, high, start=start, num=1))
        return bool(self.client.zrevrangebyscore(key, high, low, start=start, num=1))

    def query(self, flt: TaskFilter, limit: int, offset: int, owner: str | None, sort: str = "newest",
              bound: int | None = None) -> dict[str, Any]:
        """One page of the tasks matching `flt` (`owner`'s only, when given: a non-admin's):
        {"tasks": the `limit` after `offset`, "total": how many match, "counts": {state: how
        many match in it}, "truncated": the scan stopped at its bound, so total and counts are
        lower bounds}."""
        page: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        total = 0

        def take(hit: Hit) -> None:
            nonlocal total
            if offset <= total < offset + limit:
                page.append(hit.record())
            total += 1
            state = str(hit.state)
            counts[state] = counts.get(state, 0) + 1

        truncated = self.scan(flt, owner, sort, take, bound)
        self.check_states(flt, owner, bound, counts, complete=flt.states_only and not truncated)
        return {"tasks": page, "total": total, "counts": counts, "truncated": truncated}

    def held_states(self, names: frozenset[str], owner: str | None,
                    bound: int | None = None) -> tuple[frozenset[str], bool]:
        """Which of the state names `names` some task in the index holds now (`owner`'s tasks
        only, when given), newest first, stopping once all are seen; and whether the search
        stopped at its bound (at most `bound` entries, default scan_limit) before that."""
        held: set[str] = set()

        def take(hit: Hit) -> None:
            held.add(str(hit.state))
            if held >= names:
                raise _AllFound

        try:
            cut = self.scan(TaskFilter(states=names), owner, "newest", take, bound)
        except _AllFound:
            cut = False
        return frozenset(held), cut

    def check_states(self, flt: TaskFilter, owner: str | None, bound: int | None = None,
                     counts: dict[str, int] | None = None, complete: bool = False) -> None:
        """Raise ApiError 422 naming `state` (web.filters.unknown_states) when `flt` asks for a state
        that neither Celery nor the dashboard knows and no task (of `owner`'s, when given) holds: a
        slip such as "success" or "FOO" is said, not answered with an empty list. A task's own
        state (update_state) passes while a task is in it. `counts`: {state: tasks} a query of
        `flt` found; `complete`: that query read every entry filtering on states alone, so its
        counts already tell. When the search stops at its bound the names pass (not proven wrong)."""
        missing = flt.custom_states - {state for state, n in (counts or {}).items() if n}
        if not missing:
            return
        if not complete:
            held, cut = self.held_states(missing, owner, bound)
            if cut:
                return
            missing -= held
        if missing:
            raise unknown_states(missing, several=len(flt.states) > len(missing))

    def matching_ids(self, flt: TaskFilter, owner: str | None, cap: int, sort: str = "newest",
                     bound: int | None = None) -> tuple[list[str], int]:
        """The ids of the first `cap` tasks matching `flt` (newest first; `owner`'s only, when
        given), and how many match in all (a lower bound when the scan stopped at its bound)."""
        ids: list[str] = []
        total = 0

        def take(hit: Hit) -> None:
            nonlocal total
            if total < cap:
                ids.append(hit.id)
            total += 1

        self.scan(flt, owner, sort, take, bound)
        return ids, total

    def merge(self, updates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply updates (by task id) to the stored objects and save them; return the objects as
        stored now, for the ids that exist. A write that lost to another process's is merged again
        from what that process stored (a few times; then the stored object is returned as is)."""
        current = self.get_many(updates)
        todo = dict(updates)
        for _ in range(MERGE_ATTEMPTS):
            merged: dict[str, dict[str, Any]] = {}
            for task_id, update in todo.items():
                record = records.repaired(dict(current.get(task_id) or records.new_record(task_id)))
                try:
                    changed = records.merge(record, update)
                except Exception:  # one task's odd update or stored object must not hold back the batch
                    log.exception("update of task %s dropped: it could not be merged", task_id)
                    continue
                if changed or task_id not in current:
                    merged[task_id] = record
            lost = self.save_many(merged.values())
            for task_id, record in merged.items():
                current[task_id] = dict(record, version=int(record.get("version") or 0) + 1)
            if not lost:
                break
            current.update(self.get_many(lost))
            todo = {task_id: updates[task_id] for task_id in lost}
        return [current[task_id] for task_id in updates if task_id in current]
