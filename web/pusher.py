"""Pushes task updates to this process's browsers: stores each batch, then emits what changed."""
from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from celery_dashboard import revocations
from web import config, lifecycle, records
from web.coalescer import Coalescer
from web.store import TaskStore

log = logging.getLogger(__name__)

COSTS_KEPT = 5  # the push tick follows the median cost of this many last batches (Pusher.run)
MAX_TICK = 0.5  # ... and never stretches past this many seconds (nor below PUSH_INTERVAL)
HOLD_CANCELLED = 2.0  # seconds a cancelled task's event-told ending waits for the backend's (hold_cancelled)

Emit = Callable[[list[dict[str, Any]]], None]
ReadResults = Callable[[list[str]], dict[str, dict[str, Any]]]


class Pusher:
    """Between the coalescer and this process's browsers.

    `flush` does the I/O of one batch: one read and one compare-and-set write to Redis, one read
    of the result backend for tasks that just ended, one emit of what this process's clients
    have not seen yet. `run` flushes forever, at most once per `interval` (the tick).
    """

    def __init__(self, store: TaskStore, coalescer: Coalescer, read_results: ReadResults, emit: Emit,
                 interval: float = config.PUSH_INTERVAL, busy_share: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 remembered: int = 20_000,
                 unconfirmed: Callable[[list[str]], None] | None = None) -> None:
        self.store = store
        self.coalescer = coalescer
        self.read_results = read_results
        self.emit = emit
        self.interval = interval
        self.busy_share = busy_share  # the largest share of a tick one batch's pushing may take (see run)
        self.clock = clock
        self.sleep = sleep
        self.remembered = remembered
        # Told the ids of tasks a worker's event ended while the backend had no ending for them yet
        # (the reconciler reads those again for a while: see Reconciler.confirm).
        self.unconfirmed = unconfirmed or (lambda ids: None)
        # What this process's clients last got of each task: its (version, updated). The store gives
        # each content of a task its own version (a compare-and-set write), and `updated` tells a
        # task the store dropped and made anew (its versions start again at 1).
        self.sent: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        # Held while a batch is stored and emitted (and while it waits for `next_emit`: a few ms, see
        # `run`), and while a client gets its snapshot: a client then never receives a batch older
        # than its snapshot, nor misses one.
        self.lock = threading.Lock()
        # Taken by a connecting client before `lock`, for as long as its snapshot: connecting
        # clients wait their turn here, one at a time, so a flush waits for `lock` behind at most
        # one snapshot, never behind a herd of them (1,000 clients connecting at once after a
        # restart held every connected client's updates back for 13 s). See `snapshot_turn`.
        self.connect_turn = threading.Lock()
        self.running = False
        self.emitted_at: float | None = None  # clock() when the last flush began its emit
        # clock() before which no batch is emitted (set by `run`: the last emit plus one tick), so that
        # two batches reach the writers a tick apart however long each one's work before its emit took.
        self.next_emit = float("-inf")
        self.waited = 0.0  # how long the last flush waited for `next_emit` (s)
        # Cancelled tasks whose event-told ending waits for the backend's: id -> clock() of the first
        # hold (see `hold_cancelled`), at most `remembered`.
        self.holding: OrderedDict[str, float] = OrderedDict()
        # Run at each flush, before the batch: writes this process batches per tick (the launches
        # noted for attaching, web.launches.Remembered). A chore that fails is logged; the batch goes on.
        self.chores: list[Callable[[], None]] = []

    def fill_results(self, batch: dict[str, dict[str, Any]], ids: set[str]) -> None:
        """Replace the events' truncated results with the backend's; where the backend has an
        ending, it is the truth (its state included)."""
        if not ids:
            return
        waiting = {i for i in ids if not lifecycle.is_terminal(batch[i].get("state"))}
        self.coalescer.to_fetch |= waiting  # its ending is held back for the next batch: read it then
        ended = sorted(ids - waiting)
        metas = self.read_results(ended)
        # A pool that kills a task (gevent, eventlet) has the worker send the task's task-succeeded
        # (result None) around the task-revoked it sends while it writes REVOKED to the backend:
        # an ending the backend does not have yet is read again (the backend's outranks an event's).
        unsure = [i for i in ended if not lifecycle.is_terminal((metas.get(i) or {}).get("status"))]
        if self.holding:
            for task_id in set(ended) - set(unsure):
                self.holding.pop(task_id, None)
        held = self.hold_cancelled(batch, unsure)
        self.unconfirmed([i for i in unsure if i not in held])
        for task_id, meta in metas.items():
            if task_id in held:
                continue
            update = batch[task_id]
            if "undecodable" in meta:
                update.update(result=f"(the result cannot be decoded: {meta['undecodable']})", result_truncated=True)
                continue
            truth = records.from_meta(task_id, meta)
            if truth and lifecycle.is_terminal(truth["state"]):
                for key in ("updated", "finished"):  # keep the event's times (the web's clock)
                    if update.get(key):
                        truth.pop(key, None)
                update.update(truth)

    def hold_cancelled(self, batch: dict[str, dict[str, Any]], unsure: list[str]) -> set[str]:
        """Of `unsure` (tasks an event ended while the result backend has no ending for them yet),
        the ones a user cancelled (a revocation in Redis: celery_dashboard.revocations) whose event
        says anything but REVOKED: taken out of `batch` and queued again for the next one, where the
        backend is read again, for HOLD_CANCELLED seconds at most from the first hold. On gevent and
        eventlet a killed task's task-succeeded (result None) can come before the worker has written
        REVOKED, and the row showed SUCCESS before it turned REVOKED (the eventlet conformance test
        of a cancel, on a machine kept busy: 3 of 10 runs, 1 of 10 before b3ebe28). Returns the held
        ids; a Redis error (or a Redis older than 6.2, without ZMSCORE) holds none: the event's
        ending goes out and is read again for CONFIRM_WINDOW, as before."""
        candidates = [i for i in unsure if batch[i].get("state") != "REVOKED"]
        if not candidates:
            return set()
        try:
            cancelled = revocations.revoked_among(self.store.client, candidates)
        except redis.RedisError:
            return set()
        now = self.clock()
        held = set()
        for task_id in candidates:
            if task_id not in cancelled:
                continue
            since = self.holding.setdefault(task_id, now)
            if now - since >= HOLD_CANCELLED:
                self.holding.pop(task_id, None)
                continue
            held.add(task_id)
            self.coalescer.add(dict(batch.pop(task_id), fetch=True))
        while len(self.holding) > self.remembered:
            self.holding.popitem(last=False)
        return held

    def unseen(self, items: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], tuple[Any, Any]]]:
        """The records this process's clients have not been sent in this exact form (the stored
        objects `TaskStore.merge` returned, JSON-safe as stored), each with the mark to remember
        once it is sent."""
        marked = []
        sent = self.sent
        for record in items:
            mark = (record.get("version"), record.get("updated"))
            if sent.get(record["id"]) != mark:
                marked.append((record, mark))
        return marked

    @contextlib.contextmanager
    def snapshot_turn(self) -> Iterator[None]:
        """Hold `lock` for a connecting client's join and snapshot, after the clients that came
        first (in `connect_turn`); a flush waiting meanwhile goes next, before the other clients."""
        with self.connect_turn, self.lock:
            yield

    def flush(self) -> list[dict[str, Any]]:
        """Store what is pending and emit one batch; return the batch emitted."""
        for chore in self.chores:
            try:
                chore()
            except Exception as exc:  # noqa: BLE001 - Redis may be away: the chore keeps its work
                log.warning("push chore %s failed: %r", getattr(chore, "__name__", chore), exc)
        pending, fetch = self.coalescer.take()
        if not pending:
            return []
        with self.lock:
            try:
                self.fill_results(pending, fetch)
                current = self.store.merge(pending)
            except Exception:
                self.coalescer.put_back(pending, fetch)  # Redis may be down: nothing is lost
                raise
            marked = self.unseen(current)
            batch = [record for record, _ in marked]
            try:
                if batch:
                    early = self.next_emit - self.clock()
                    if early > 0:
                        self.sleep(early)  # this flush's work before its emit was quicker than foreseen
                    self.waited = max(early, 0.0)
                    self.emitted_at = self.clock()
                    self.emit(batch)
            except Exception:
                for record in batch:  # not counted as sent: the next flush sends them again
                    self.coalescer.add(dict(record))
                raise
            for record, mark in marked:
                self.sent[record["id"]] = mark
                self.sent.move_to_end(record["id"])
            while len(self.sent) > self.remembered:
                self.sent.popitem(last=False)
        return batch

    def run(self) -> None:
        """Flush forever: at once when woken after a quiet tick, never more than once per tick.

        An update that comes at least a tick after the last emit (a launch, a task starting at
        idle) goes out at once, after its store round trips; whatever comes sooner waits for the
        next tick and goes out in that one batch. No batch reaches the writers less than a tick
        after the last one (`next_emit`), whatever the work before each emit took (the store's
        round trips, which the greenlets of launches and events stretch, the lock behind a
        snapshot): run L received two batches 1 ms apart at one client at a 50 ms tick, from
        flushes begun a tick apart. Each flush begins early enough for the longest of the last
        COSTS_KEPT flushes' own work before their emits, and a quicker one waits the difference
        before its emit (holding `lock`): one slow flush moves the next few, not the rest of a
        storm. Every client then gets at most one message per tick: its cost (a queue, a
        writer, a frame and a send per client) is paid once per tick, not once per update (a
        token bucket here let a launch storm send up to ten batches in one tick).

        The tick stretches when batches cost more than `busy_share` of it: the time from each
        emit until this process's writers have sent it (one yield to them) is measured, and the
        next flush waits at least the median of the last COSTS_KEPT divided by `busy_share`. With a
        thousand clients a batch's sends alone can take 100 ms; pushes then keep the
        process from launches, events and new connections, and every client falls behind. What
        else runs in that yield (a burst of events) is measured with it, and the store's round
        trips before the emit would be too: they are not counted, and one dear batch alone does
        not stretch the tick (in a 500-client storm, one flush measured 139 ms with its store
        write, another 176 ms from its emit, among batches of 20-60 ms; each stretched the next
        tick to 330 ms and the clients' lag with it). The tick is at most MAX_TICK seconds (or
        `interval`, if longer): a process starved of CPU measures every batch dear, and an unbounded
        tick would hold every client's view still for as long, merging away the states in between.
        A cap in seconds, not in ticks, keeps pushing under half of this process's time up to the
        same cost per batch (250 ms) whatever PUSH_INTERVAL is.
        """
        self.running = True
        backoff = self.interval
        last, tick = float("-inf"), self.interval
        costs: deque[float] = deque(maxlen=COSTS_KEPT)
        works: deque[float] = deque(maxlen=COSTS_KEPT)  # each flush's own time from its start to its emit
        wake = self.coalescer.wake
        while self.running:
            wake.wait(timeout=1.0)
            if not self.running:
                break
            wake.clear()
            if not self.coalescer:
                continue  # nothing to send: a wake-up without work starts no tick
            # A tick after the last flush began, and late enough that the emit, after this flush's own
            # work (foreseen as the longest of the last few), comes a tick after the last emit.
            early = max(last + tick, self.next_emit - max(works, default=0.0)) - self.clock()
            if early > 0:
                self.sleep(early)  # what arrives meanwhile joins this batch
            last = self.clock()
            self.emitted_at = None
            self.waited = 0.0
            try:
                if self.flush():
                    self.sleep(0)  # this batch's writers run: what they took is the batch's cost
                if self.emitted_at is not None:
                    costs.append(self.clock() - self.emitted_at)
                    tick = min(max(self.interval, statistics.median(costs) / self.busy_share),
                               max(self.interval, MAX_TICK))
                    works.append(self.emitted_at - last - self.waited)
                backoff = self.interval
            except (redis.RedisError, ConnectionError, OSError) as exc:
                log.warning("push failed (%s); retrying in %.2f s", exc, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("push failed; retrying in %.2f s", backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            if self.emitted_at is not None:  # also when the emit raised: some rooms may have had it
                self.next_emit = self.emitted_at + tick
            if self.coalescer:
                wake.set()

    def stop(self) -> None:
        self.running = False
        self.coalescer.wake.set()
