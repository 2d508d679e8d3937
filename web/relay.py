"""Coalesced fan-out: merges task updates per task, stores them, pushes one batch per tick."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from web import records
from web.store import TaskStore

log = logging.getLogger(__name__)

Emit = Callable[[list[dict[str, Any]]], None]
ReadResults = Callable[[list[str]], dict[str, dict[str, Any]]]


class Relay:
    """Between the listener (and the API) and the browsers.

    `add` costs one dict merge; `flush` does the I/O: one read and one write to Redis, one read of
    the result backend for tasks that just ended, one emit.
    """

    def __init__(self, store: TaskStore, read_results: ReadResults, emit: Emit,
                 interval: float = 0.1, reconcile_every: float = 10.0, burst: int = 3,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.read_results = read_results
        self.emit = emit
        self.interval = interval
        self.burst = burst
        self.reconcile_every = reconcile_every
        self.clock = clock
        self.sleep = sleep
        self.pending: dict[str, dict[str, Any]] = {}
        self.to_fetch: set[str] = set()
        self.announced: dict[str, dict[str, Any]] = {}
        self.wake = threading.Event()
        self.running = False
        self.next_reconcile = 0.0

    def add(self, update: dict[str, Any]) -> None:
        """Queue one update; a newer state replaces an older one, a terminal one is never dropped."""
        task_id = update["id"]
        current = self.pending.get(task_id)
        if current is None:
            self.pending[task_id] = {k: v for k, v in update.items() if k != "fetch"}
        else:
            records.merge(current, update)
        if update.get("fetch"):
            self.to_fetch.add(task_id)
        self.wake.set()

    def announce(self, record: dict[str, Any]) -> None:
        """Push a record that is already stored (a launch), in the next batch."""
        self.announced[record["id"]] = record
        self.wake.set()

    def reconcile_soon(self, delay: float = 0.5) -> None:
        """Ask the loop to reconcile shortly (after a listener reconnect, once it is subscribed)."""
        self.next_reconcile = self.clock() + delay
        self.wake.set()

    def reconcile(self, task_ids: Iterable[str] | None = None) -> int:
        """Queue the result backend's truth for tasks not yet seen to end; return how many."""
        ids = list(self.store.active_ids() if task_ids is None else task_ids)
        found = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for task_id, meta in self.read_results(chunk).items():
                update = records.from_meta(task_id, meta)
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

    def flush(self) -> list[dict[str, Any]]:
        """Store what is pending and emit one batch; return the batch."""
        pending, self.pending = self.pending, {}
        fetch, self.to_fetch = self.to_fetch, set()
        announced, self.announced = self.announced, {}
        try:
            self._fill_results(pending, fetch)
            changed = self.store.merge(pending) if pending else []
        except Exception:
            # Keep the updates for the next try (Redis may be down): nothing is lost.
            for update in pending.values():
                self.add(update)
            self.to_fetch |= fetch
            self.announced.update(announced)
            raise
        batch = {record["id"]: record for record in announced.values()}
        batch.update((record["id"], record) for record in changed)
        if batch:
            self.emit(list(batch.values()))
        return list(batch.values())

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
            woke = self.wake.wait(timeout=min(1.0, max(0.0, self.next_reconcile - self.clock())))
            if not self.running:
                break
            self.wake.clear()
            if not woke and self.clock() < self.next_reconcile:
                continue
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
                self.flush()
                backoff = self.interval
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
