"""Merges task updates per task between two pushes: a newer state replaces an older one, an
ending is never dropped, and a retry is always pushed before the next attempt."""
from __future__ import annotations

import threading
from typing import Any

from web import lifecycle, records


class Coalescer:
    """Pending updates by task id; `add` costs one dict merge, `take` hands out one bounded batch.

    `wake` is set whenever there is something to take, so a pusher can sleep until then."""

    def __init__(self, max_batch: int = 1000) -> None:
        self.max_batch = max_batch
        self.pending: dict[str, dict[str, Any]] = {}
        self.to_fetch: set[str] = set()  # ended tasks whose result must be read from the backend
        self.deferred: dict[str, dict[str, Any]] = {}  # next attempts held back one batch (see add)
        self.wake = threading.Event()

    def __bool__(self) -> bool:
        return bool(self.pending or self.deferred)

    def add(self, update: dict[str, Any]) -> None:
        """Queue one update (a partial task object with `id`).

        A retried task is often picked up again within one tick: its next attempt waits for the
        following batch, so that every client sees that it was retrying.
        """
        task_id = update["id"]
        current = self.pending.get(task_id)
        if task_id in self.deferred:
            records.merge(self.deferred[task_id], update, partial=True)
        elif current is None:
            self.pending[task_id] = self._pending(update)
        elif (current.get("state") == "RETRY" and update.get("state") != "RETRY"
              and lifecycle.accepts(current, lifecycle.resolve_retry(current, update))):
            self.deferred[task_id] = self._pending(update)
        else:
            self._merge(current, update)
        if update.get("fetch"):
            self.to_fetch.add(task_id)
        self.wake.set()

    @staticmethod
    def _pending(update: dict[str, Any]) -> dict[str, Any]:
        """An update as held here. An ending carries its confidence, as a stored record does: a
        held verdict (LOST, UNKNOWN) is then replaced by a real outcome added after it, even one
        timed earlier (a worker's events buffered through a Redis outage arrive late)."""
        # A task object added back (a launch's pending record, a batch whose emit failed) is held
        # as an update: its `attempts` are already stored, and notes carry what comes next.
        held = {k: v for k, v in update.items() if k not in ("fetch", "attempts")}
        if lifecycle.is_terminal(held.get("state")):
            held["confidence"] = lifecycle.confidence(held)
        return held

    @staticmethod
    def _merge(current: dict[str, Any], update: dict[str, Any]) -> None:
        """Merge two partial updates; the winner's `source` goes with its state, once merged: until
        then `current` must be what it was told as, since its own attempt notes are read from it on
        its first merge (records._collect_attempts), and a RETRY's note depends on its source. A
        task-retried event and the backend's RETRY read by the reconciler often meet in one batch:
        taking the source first lost the event's retry, or told it twice."""
        wins = "source" in update and lifecycle.accepts(current, lifecycle.resolve_retry(current, update))
        records.merge(current, update, partial=True)
        if wins:
            current["source"] = update["source"]

    def take(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The next batch (at most `max_batch` tasks) and which of them to read results for; the
        updates held back for the next attempt move up for the batch after."""
        if len(self.pending) <= self.max_batch:
            batch, self.pending = self.pending, {}
        else:  # after a long gap (a reconcile of many tasks): one bounded batch per tick
            ids = list(self.pending)[:self.max_batch]
            batch = {task_id: self.pending.pop(task_id) for task_id in ids}
        fetch = self.to_fetch & batch.keys()
        self.to_fetch -= fetch
        deferred, self.deferred = self.deferred, {}
        for update in deferred.values():
            self.add(update)
        if self.pending:
            self.wake.set()
        return batch, fetch

    def put_back(self, batch: dict[str, dict[str, Any]], fetch: set[str]) -> None:
        """Return a batch that could not be stored (Redis away): nothing is lost."""
        for update in batch.values():
            self.add(update)
        self.to_fetch |= fetch
