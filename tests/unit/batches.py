"""One task's updates stored as the web stores them, for the unit tests of web.records' merging:
each tick's updates merged by web.coalescer.Coalescer into one partial update per task, the
batch's endings filled from the result backend (web.pusher.Pusher.fill_results, here from `meta`,
the backend's meta for every task asked), and the partial merged into the stored task object
(records.merge, as web.store.TaskStore.merge does). The task is always "t1"."""
from __future__ import annotations

from typing import Any

from web import records
from web.coalescer import Coalescer
from web.pusher import Pusher

T0 = 1_700_000_000.0  # epoch seconds: the events' times are given as seconds after it


def event(kind: str, at: float = 0.0, **fields: Any) -> dict[str, Any] | None:
    """Celery event `kind` about "t1" from celery@w1, `at` seconds after T0 (`timestamp` in
    `fields` overrides it), as records.from_event reads it."""
    return records.from_event({"type": kind, "uuid": "t1", "timestamp": T0 + at, "hostname": "celery@w1", **fields})


def stored(*updates: dict[str, Any]) -> dict[str, Any]:
    """A new task object with `updates` merged into it one at a time."""
    record = records.new_record("t1")
    for update in updates:
        records.merge(record, update)
    return record


def batch(updates: list[dict[str, Any]], meta: dict[str, Any], coalescer: Coalescer | None = None) -> dict[str, Any]:
    """`updates` added to `coalescer` (a new one by default) in one tick: the partial update its
    next batch holds for "t1", endings filled from `meta`."""
    coalescer = coalescer or Coalescer()
    for update in updates:
        coalescer.add(update)
    taken, fetch = coalescer.take()
    Pusher(None, coalescer, lambda ids: {i: meta for i in ids}, lambda _: None).fill_results(taken, fetch)  # type: ignore[arg-type]
    return taken["t1"]


def apply(record: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
    """A copy of the stored task object `record` with the batch's `partial` merged in."""
    record = dict(record)
    records.merge(record, partial)
    return record


def through(record: dict[str, Any], updates: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` after `updates` were stored in one batch."""
    return apply(record, batch(updates, meta))


def ticks(record: dict[str, Any], updates: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` after `updates` were added in one tick and stored in as many batches as
    the coalescer needs (it holds a next attempt back one batch)."""
    coalescer = Coalescer()
    for update in updates:
        coalescer.add(update)
    while coalescer:
        taken, fetch = coalescer.take()
        Pusher(None, coalescer, lambda ids: {i: meta for i in ids}, lambda _: None).fill_results(taken, fetch)  # type: ignore[arg-type]
        if "t1" in taken:
            record = apply(record, taken["t1"])
    return record
