"""Coalesced fan-out: merges task updates per task, stores them, pushes one batch per tick."""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis

from web import records
from web.store import TaskStore

log = logging.getLogger(__name__)

Emit = Callable[[list[dict[str, Any]]], None]
ReadResults = Callable[[list[str]], dict[str, dict[str, Any]]]
RUNNING = ("STARTED", "PROGRESS")


def digest(record: dict[str, Any]) -> bytes:
    return hashlib.blake2b(json.dumps(record, sort_keys=True, default=str).encode(), digest_size=8).digest()


class Relay:
    """Between the listener (and the API) and this process's browsers.

    `add` costs one dict merge; `flush` does the I/O: one read and one compare-and-set write to
    Redis, one read of the result backend for tasks that just ended, one emit of what this
    process's clients have not seen yet. It also keeps track of which workers are alive.
    """

    def __init__(self, store: TaskStore, read_results: ReadResults, emit: Emit,
                 interval: float = 0.1, reconcile_every: float = 5.0, burst: int = 10,
                 worker_timeout: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, remembered: int = 20_000,
                 max_batch: int = 1000) -> None:
        self.store = store
        self.read_results = read_results
        self.emit = emit
        self.interval = interval
        self.reconcile_every = reconcile_every
        self.burst = burst
        self.worker_timeout = worker_timeout
        self.clock = clock
        self.sleep = sleep
        self.remembered = remembered
        self.max_batch = max_batch
        self.pending: dict[str, dict[str, Any]] = {}
        self.to_fetch: set[str] = set()
        self.deferred: dict[str, dict[str, Any]] = {}  # next attempts held back one batch (see add)
        self.sent: OrderedDict[str, bytes] = OrderedDict()  # what this process's clients last got
        self.workers: dict[str, float] = {}  # hostname -> last sign of life (clock)
        self.connected_at: float | None = None  # when the listener last (re)connected
        self.wake = threading.Event()
        # Held while a batch is stored and emitted, and while a client gets its snapshot: a
        # client then never receives a batch older than its snapshot, nor misses one.
        self.lock = threading.Lock()
        self.running = False
        self.next_reconcile = 0.0

    # ---- input --------------------------------------------------------------------------

    def add(self, update: dict[str, Any]) -> None:
        """Queue one update; a newer state replaces an older one, a terminal one is never dropped.

        A retried task is often picked up again within one tick: its next attempt waits for the
        following batch, so that every client sees that it was retrying.
        """
        task_id = update["id"]
        current = self.pending.get(task_id)
        if task_id in self.deferred:
            records.merge(self.deferred[task_id], update)
        elif current is None:
            self.pending[task_id] = {k: v for k, v in update.items() if k != "fetch"}
        elif current.get("state") == "RETRY" and update.get("state") != "RETRY" and records.accepts(current, update):
            self.deferred[task_id] = {k: v for k, v in update.items() if k != "fetch"}
        else:
            records.merge(current, update)
        if update.get("fetch"):
            self.to_fetch.add(task_id)
        self.wake.set()

    def worker_event(self, event: dict[str, Any]) -> None:
        """A sign of life (any event a worker or its pool processes sent), or a worker going offline."""
        hostname = event.get("hostname")
        if not hostname:
            return
        if event.get("type") == "worker-offline":
            self.workers[hostname] = float("-inf")
            self.reconcile_soon(0.0)
        else:
            self.workers[hostname] = self.clock()

    def listener_connected(self) -> None:
        """The listener (re)connected: events may have been missed, reconcile once subscribed."""
        self.connected_at = self.clock()
        self.reconcile_soon()

    def reconcile_soon(self, delay: float = 0.5) -> None:
        self.next_reconcile = min(self.next_reconcile, self.clock() + delay)
        self.wake.set()

    # ---- truth from the result backend ----------------------------------------------------

    def worker_lost(self, hostname: str | None) -> bool:
        """True when `hostname` has shown no sign of life for `worker_timeout` while we listened.

        After a Redis outage a worker's own connection comes back on Celery's growing retry
        schedule, seconds after ours, and it sends no heartbeat meanwhile: right after the
        listener (re)connects, a worker gets twice the timeout.
        """
        now = self.clock()
        if not hostname or self.connected_at is None or now - self.connected_at < 2 * self.worker_timeout:
            return False
        return now - self.workers.get(hostname, float("-inf")) > self.worker_timeout

    def reconcile(self, task_ids: Iterable[str] | None = None) -> int:
        """Queue the result backend's truth for tasks not yet seen to end, and end the running
        tasks of lost workers; return how many updates that made."""
        ids = list(self.store.active_ids() if task_ids is None else task_ids)
        found = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            metas = self.read_results(chunk)
            stored = self.store.get_many(chunk) if self.connected_at is not None else {}
            for task_id in chunk:
                meta, record = metas.get(task_id), stored.get(task_id) or {}
                update = records.from_meta(task_id, meta)
                state = (update or {}).get("state") or record.get("state")
                worker = (meta or {}).get("worker") or record.get("worker")
                if state in RUNNING and self.worker_lost(worker):
                    update = records.lost(task_id, worker)
                if update:
                    self.add(update)
                    found += 1
        return found

    def _fill_results(self, pending: dict[str, dict[str, Any]], ids: set[str]) -> None:
        """Replace the truncated result and error of the events with the backend's."""
        ids = {i for i in ids if i in pending}
        if not ids:
            return
        for task_id, meta in self.read_results(sorted(ids)).items():
            truth = records.from_meta(task_id, meta)
            update = pending[task_id]
            if truth and truth["state"] == update.get("state"):
                for key in ("result", "error"):
                    if key in truth:
                        update[key] = truth[key]

    # ---- output ---------------------------------------------------------------------------

    def unseen(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records this process's clients have not been sent in this exact form."""
        batch = []
        for record in items:
            mark = digest(record)
            if self.sent.get(record["id"]) != mark:
                self.sent[record["id"]] = mark
                batch.append(record)
            self.sent.move_to_end(record["id"])
        while len(self.sent) > self.remembered:
            self.sent.popitem(last=False)
        return batch

    def flush(self) -> list[dict[str, Any]]:
        """Store what is pending and emit one batch; return the batch."""
        if len(self.pending) <= self.max_batch:
            pending, self.pending = self.pending, {}
        else:  # after a long gap (a reconcile of many tasks): one bounded write and batch per tick
            ids = list(self.pending)[:self.max_batch]
            pending = {task_id: self.pending.pop(task_id) for task_id in ids}
            self.wake.set()
        fetch = self.to_fetch & pending.keys()
        self.to_fetch -= fetch  # tasks left for a later batch keep theirs
        deferred, self.deferred = self.deferred, {}
        with self.lock:
            try:
                self._fill_results(pending, fetch)
                current = self.store.merge(pending) if pending else []
            except Exception:
                # Keep the updates for the next try (Redis may be down): nothing is lost.
                for update in (*pending.values(), *deferred.values()):
                    self.add(update)
                self.to_fetch |= fetch
                raise
            for update in deferred.values():
                self.add(update)
            self.to_fetch |= fetch & deferred.keys()
            batch = self.unseen(current)
            if batch:
                self.emit(batch)
        return batch

    def run(self) -> None:
        """Flush forever: at once when woken after a quiet spell, at most once per tick under load.

        A token bucket (`burst` tokens, one more per `interval`) lets the few updates that follow
        each other at idle (received, started, first progress) go out without waiting for a tick,
        while a storm settles into one batch per `interval`.
        """
        self.running = True
        backoff = self.interval
        tokens, last = float(self.burst), self.clock()
        while self.running:
            self.wake.wait(timeout=min(1.0, max(0.0, self.next_reconcile - self.clock())))
            if not self.running:
                break
            self.wake.clear()
            if not self.pending and not self.deferred and self.clock() < self.next_reconcile:
                continue  # nothing to send: a wake-up without work must not use up a token
            now = self.clock()
            tokens, last = min(self.burst, tokens + (now - last) / self.interval), now
            if tokens < 1:
                self.sleep((1 - tokens) * self.interval)
                tokens, last = 1.0, self.clock()
            tokens -= 1
            try:
                if self.clock() >= self.next_reconcile:
                    self.next_reconcile = self.clock() + self.reconcile_every
                    self.reconcile()
                    self.store.trim()
                self.flush()
                backoff = self.interval
            except (redis.RedisError, ConnectionError, OSError) as exc:
                log.warning("relay flush failed (%s); retrying in %.1f s", exc, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("relay flush failed; retrying in %.1f s", backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.running = False
        self.wake.set()


def backend_reader(backend: Any) -> ReadResults:
    """Read many task results from a Celery Redis result backend in one round trip."""

    def read(task_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        keys = [backend.get_key_for_task(task_id) for task_id in task_ids]
        values = backend.client.mget(keys)
        return {task_id: backend.decode(value) for task_id, value in zip(task_ids, values, strict=True) if value}

    return read
