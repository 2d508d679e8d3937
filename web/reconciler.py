"""Checks what events may have missed against the truth: the result backend, the broker's queues
and the workers themselves, and gives the verdicts nobody reports (lost, outcome unknown)."""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson
import redis

from web import lifecycle, records
from web.coalescer import Coalescer
from web.store import TaskStore
from web.workers import Workers

log = logging.getLogger(__name__)

ReadResults = Callable[[list[str]], dict[str, dict[str, Any]]]
CHUNK = 500
# Seconds the backend of a task ended by an event, without an ending in the backend, is read again.
CONFIRM_WINDOW = 10.0
# Recovering a gap (`recover`): the result backend's keys read per SCAN, at most this many keys in
# all, and at most RECOVER_LIMIT tasks (the newest) added; entries stored up to RECOVER_SLACK s
# before the gap began count too: a worker's clock may be behind (its offset is not known before it
# sends an event), and an unheard-of entry from before the gap was missed all the same.
RECOVER_SCAN = 1000
RECOVER_KEYS = 1_000_000
RECOVER_LIMIT = 10_000
RECOVER_SLACK = 300.0
# Seconds a worker that went offline has to come back before its running tasks are shown lost.
# When a worker loses its broker connection (a Redis outage) Celery restarts its consumer: it sends
# worker-offline, then worker-online from the same main process once reconnected, and its pool
# keeps running the tasks. Only a worker still offline and silent after this is taken as stopped.
OFFLINE_SETTLE = 2.0
# Seconds a task's start may precede its worker's process start (`stats` uptime, rounded to 1 s;
# event times within SKEW_TOLERANCE of ours are not corrected) and still have run on that process.
ORPHAN_TOLERANCE = 2.0


class Control(Protocol):
    """What the reconciler asks the workers (web.control.Control)."""

    def enable_events(self) -> None: ...
    def ping(self, hostnames: list[str], timeout: float = 1.0) -> set[str]: ...
    def active(self, timeout: float = 1.0) -> dict[str, set[str]] | None: ...
    def stats(self, timeout: float = 1.0) -> dict[str, dict[str, Any]]: ...
    # Optional (web.control.Control has it): hostname -> queues it consumes, None on failure.
    # def active_queues(self, limit: int | None = None, timeout: float = 1.0) -> dict[str, list[str]] | None


class Queues(Protocol):
    """What the reconciler asks the broker: the tasks waiting in its queues (web.queues)."""

    def __call__(self) -> tuple[list[dict[str, Any]], bool]: ...


class Bounded(OrderedDict):
    """An insertion-ordered dict that forgets its oldest entries beyond `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


# The verdict on a task whose result-backend entry the web cannot decode (the web never unpickles).
UNDECODABLE = ("its result backend entry cannot be read here (pickle, or corrupt: the dashboard never unpickles); "
               "no worker or queue holds it")


def digest(meta: dict[str, Any]) -> bytes:
    """8 bytes that change when a decoded backend entry does (its keys sorted, any value as text).
    orjson: the json module took 0.1-0.2 s of the event loop for an entry of 12,000 rows, at each
    poll, for each unsettled task; orjson takes 3 ms. The json module where orjson refuses (an
    integer past 64 bits)."""
    try:
        text = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        text = json.dumps(meta, sort_keys=True, default=str).encode()
    return hashlib.blake2b(text, digest_size=8).digest()


class Reconciler:
    """Runs beside the listener in two loops of its own (`start`), because asking workers takes up
    to a second per question, and the fast pass must not wait for it:

    - every `poll_every` s, in its own loop: the backend's record of running tasks (the
      tutorials' progress, `update_state(state="PROGRESS", meta={"current", "total"})`, sends no
      event), and the broker's queues (a task waiting in a queue sends no event unless its sender enabled
      `task_send_sent_event`);
    - every `reconcile_every` s, and soon after the listener (re)connects: the backend's record of
      every task not yet settled, the liveness of the workers running them, and the verdicts;
    - every `enable_events_every` s: the `enable_events` broadcast, as Flower does, so workers
      started without `-E` (Celery's default) send events, including workers started later.

    Verdicts are inferences and are confirmed before they are shown: a task is LOST only when its
    worker restarted (a new incarnation) or went offline while running it and stayed away (a
    worker back from the same process only reconnected to the broker); a silent worker that
    does not answer a ping is shown "not responding", never failed; a task is UNKNOWN only when,
    for `window` seconds, neither the backend, nor a queue, nor any worker that answered knows
    it; a received task whose worker reconnected without it while its message waits unacknowledged
    in the broker is shown dropped (records.UNHELD, `_stranded`). Any real outcome overrides a
    verdict (web.lifecycle). `queues` is web.queues.Queues (or any callable with its answer); its
    `taken_whole` says whether its last read took every unacknowledged message (True if absent).
    """

    def __init__(self, store: TaskStore, coalescer: Coalescer, read_results: ReadResults, workers: Workers,
                 control: Control | None = None, queues: Queues | None = None,
                 worker_timeout: float = 10.0, window: float = 30.0, poll_every: float = 1.0,
                 reconcile_every: float = 5.0, enable_events_every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.coalescer = coalescer
        self.read_results = read_results
        self.workers = workers
        self.control = control
        self.queues = queues
        self.worker_timeout = worker_timeout
        self.window = window
        self.poll_every = poll_every
        self.reconcile_every = reconcile_every
        self.enable_events_every = enable_events_every
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.ran_on: Bounded = Bounded(100_000)   # task id -> (hostname, worker pid) it started on
        self.running_ids: Bounded = Bounded(10_000)   # ids of tasks last seen running (polled often)
        self.confirming: Bounded = Bounded(10_000)  # task id -> until when its event-told ending is checked
        # task id -> the mark of the backend entry last read (BackendReader.changed's, else `digest`'s)
        self.seen_meta: Bounded = Bounded(100_000)
        self.undecodable: Bounded = Bounded(10_000)  # task ids whose entry could not be decoded (pickle)
        self.queued_known: Bounded = Bounded(100_000)
        self.next_reconcile = 0.0
        self.next_poll = 0.0
        self.next_enable = 0.0
        self.next_pools = 0.0
        self.next_queues = 0.0
        self.consumers_every = 5.0  # seconds between two `active_queues` questions (CONSUMERS_INTERVAL)
        self.connected_at: float | None = None
        self.recover_since: float | None = None  # a gap to look for unheard-of tasks in (epoch seconds)
        self.last_active_check = -1e9
        self.held: list[tuple[str, int | None]] = []  # worker-offline not yet confirmed (OFFLINE_SETTLE)
        self.fresh: Bounded = Bounded(10_000)  # workers whose last worker-online came from a new process
        self.cancels: Bounded = Bounded(10_000)  # task id -> True: cancelled while a worker held it
        self.last_held_check = -1e9
        self.running = False
        self.reading = threading.Lock()  # one backend read-and-queue at a time (see _backend)

    # ---- input from the listener ------------------------------------------------------------

    def worker_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Note an event's sign of life (and a worker's restart); return the event with its
        timestamp on the web's clock."""
        known = event.get("hostname") in self.workers.workers
        event = self.workers.see(event)
        if not known:
            self.next_pools = 0.0  # a worker seen for the first time: ask which pool it runs
        kind, task_id = event.get("type", ""), event.get("uuid")
        if kind in ("task-received", "task-started") and isinstance(task_id, str):
            hostname = event.get("hostname")
            if "via" not in event:
                # Sent by the worker's main process: its pid names the incarnation running the task.
                self.ran_on[task_id] = (hostname, event.get("pid"))
            elif task_id not in self.ran_on:
                # celery_dashboard's early task-started comes from the pool process (and the
                # worker's own events may be off): the incarnation is the one known now, if any.
                worker = self.workers.get(hostname)
                self.ran_on[task_id] = (hostname, worker.pid if worker else None)
        if kind == "task-started" and isinstance(task_id, str):
            self.running_ids[task_id] = True
        elif kind == "worker-online" or kind == "worker-offline":
            self.soon()
            self.next_pools = self.next_queues = 0.0
        if kind == "worker-online":
            # `processed` counts the tasks this process ever accepted (Celery's heartbeat): 0 is a
            # new process, even under its predecessor's pid (in a container it is often the same).
            if event.get("processed") == 0:
                self.fresh[event.get("hostname")] = True
            else:
                self.fresh.pop(event.get("hostname"), None)
        return event

    def listener_connected(self, since: float | None = None) -> None:
        """The listener (re)connected: events may have been missed, and workers' own connections
        come back on Celery's retry schedule, seconds after ours (after a Redis outage). `since`:
        when the gap began (epoch seconds; web.listener.Listener.gap_start), or None: the next
        full pass also looks in the result backend for tasks of the gap nobody heard of (`recover`)."""
        self.connected_at = self.clock()
        if since is not None:
            self.recover_since = since if self.recover_since is None else min(self.recover_since, since)
        self.soon()

    def confirm(self, ids: list[str]) -> None:
        """Read the backend of these ended tasks again at each poll for CONFIRM_WINDOW seconds:
        a worker's event said they ended, and the backend had no ending yet. The backend's ending,
        once written, outranks the event's (a task killed on gevent or eventlet: SUCCESS, then
        REVOKED in the backend). A task that stores no result costs a few reads, then is dropped."""
        until = self.clock() + CONFIRM_WINDOW
        for task_id in ids:
            self.confirming[task_id] = until

    def cancelled(self, task_id: str) -> None:
        """A user cancelled this task (web.api.stop): if no worker holds it and no queue has it
        (its worker restarted under it, or stopped it already), a pass soon ends it REVOKED; the
        revocation otherwise ends it where it runs."""
        self.cancels[task_id] = True
        self.soon()

    def soon(self, delay: float = 0.5) -> None:
        self.next_reconcile = min(self.next_reconcile, self.clock() + delay)

    # ---- the passes --------------------------------------------------------------------------

    def _backend(self, records_by_id: dict[str, dict[str, Any]], ids: Iterable[str]) -> None:
        """Queue the backend's record of `ids` where it changed since the last read. One loop at a
        time (`reading`): a record read before another loop's newer read of it, and queued after
        it, would take the task back (PROGRESS 3/8, then 2/8)."""
        ids = list(ids)
        for start in range(0, len(ids), CHUNK):
            with self.reading:
                self._read_chunk(records_by_id, ids[start:start + CHUNK])

    def _read_chunk(self, records_by_id: dict[str, dict[str, Any]], chunk: list[str]) -> None:
        changed = getattr(self.read_results, "changed", None)  # web.results.BackendReader's: unchanged not decoded
        if changed is not None:
            found = changed(chunk, self.seen_meta)
        else:
            found = {task_id: (None, meta) for task_id, meta in self.read_results(chunk).items()}
        for task_id in chunk:
            if task_id not in found:
                continue
            given, meta = found[task_id]
            if "undecodable" in meta:
                self.undecodable[task_id] = True
            mark = given or digest(meta)
            if self.seen_meta.get(task_id) == mark:
                continue
            self.seen_meta[task_id] = mark
            record = records_by_id.get(task_id) or {}
            worker = meta.get("worker") if isinstance(meta.get("worker"), str) else record.get("worker")
            update = records.read_entry(task_id, meta, self.workers.offset(worker))
            if update:
                self.coalescer.add(update)
                if lifecycle.is_terminal(update.get("state")):
                    self.workers.ended(worker, task_id)

    def _confirm(self) -> None:
        """Read the backend of ended tasks it had no ending for (see `confirm`): an ending it now has
        that differs from the stored state is queued (it outranks the event's); the same ending
        changes nothing and is not sent again."""
        now = self.clock()
        for task_id, until in list(self.confirming.items()):
            if until < now:
                self.confirming.pop(task_id, None)
        ids = list(self.confirming)
        if not ids:
            return
        metas = self.read_results(ids)
        stored = self.store.get_many(ids)
        for task_id in ids:
            meta = metas.get(task_id) or {}
            if not lifecycle.is_terminal(meta.get("status")):
                continue
            self.confirming.pop(task_id, None)
            record = stored.get(task_id) or {}
            if meta["status"] != record.get("state"):
                update = records.from_meta(task_id, meta, self.workers.offset(record.get("worker")))
                if update:
                    self.coalescer.add(update)

    def poll(self) -> None:
        """The fast pass: running tasks' backend records, and the queues."""
        self._confirm()
        ids = list(self.running_ids)
        if ids:
            self._backend({}, ids)
        if self.queues is not None:
            waiting, _ = self.queues()
            for update in waiting:
                if update["id"] not in self.queued_known:
                    self.queued_known[update["id"]] = True
                    update = {k: v for k, v in update.items() if k != "taken"}
                    if not update.get("created"):  # Celery's messages carry no send time
                        update["created"] = records.iso(self.wall())
                    self.coalescer.add(update)

    def reconcile(self) -> int:
        """The full pass over every task not yet settled; return how many verdicts it gave."""
        ids = self.store.active_ids()
        stored: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), CHUNK):
            stored.update(self.store.get_many(ids[start:start + CHUNK]))
        self._backend(stored, ids)
        self._forget_ended(stored)
        for task_id, record in self._open(stored):
            if lifecycle.phase(record.get("state")) >= lifecycle.STARTED:
                self.running_ids[task_id] = True
        verdicts = self._lost(stored) + self._not_responding(stored) + self._unknown(stored) + self._unheld(stored)
        for task_id in list(self.ran_on):
            if task_id in stored and lifecycle.is_settled(stored[task_id]):
                self.ran_on.pop(task_id, None)
        return verdicts

    def recover(self, since: float) -> int:
        """Queue the tasks the result backend holds an entry for, stored from `since` on (epoch
        seconds, less RECOVER_SLACK), that the dashboard never heard of: every event of them was
        lost while no listener was connected (a listener cut off at Redis's pub/sub output buffer
        limit, web processes down) and no sender registered them (an app without celery_dashboard,
        which only events tell about). Return how many were queued.

        Reads the backend's keys with SCAN (`read_results.scan`: Celery's Redis backend only; other
        readers have none, and nothing is recovered), RECOVER_SCAN a call and RECOVER_KEYS at most;
        queues the newest RECOVER_LIMIT. A Redis error propagates (the pass is retried, the gap kept)."""
        scan = getattr(self.read_results, "scan", None)
        if scan is None:
            return 0
        since -= RECOVER_SLACK
        newest: list[tuple[float, str, dict[str, Any]]] = []  # a heap: the oldest of the kept first
        cursor, read = 0, 0
        while True:
            cursor, ids = scan(cursor, RECOVER_SCAN)
            read += len(ids)
            # Each unknown entry is read for its date_done: an entry's time to live cannot say when it
            # was stored, since the app that wrote it set its own result_expires.
            unknown = self.store.unknown(ids)
            for task_id, meta in (self.read_results(unknown) if unknown else {}).items():
                worker = meta.get("worker") if isinstance(meta.get("worker"), str) else None
                update = records.from_meta(task_id, meta, self.workers.offset(worker))
                done = records.backend_epoch(meta.get("date_done"), self.workers.offset(worker))
                if update is None or done < since:
                    continue
                update.setdefault("updated", records.iso(done))
                entry = (done, task_id, update)
                if len(newest) < RECOVER_LIMIT:
                    heapq.heappush(newest, entry)
                elif entry > newest[0]:
                    heapq.heapreplace(newest, entry)
            if not cursor or read >= RECOVER_KEYS:
                break
        for _, _, update in sorted(newest, key=lambda e: (e[0], e[1])):
            self.coalescer.add(update)
        log.info("looked for tasks nobody heard of, ended since %s: %d result-backend entries read, %d recovered",
                 records.iso(since), read, len(newest))
        return len(newest)

    def _forget_ended(self, stored: dict[str, dict[str, Any]]) -> None:
        """Stop polling the tasks that ended. Only an ending drops a task: its task-started may be
        seen here before the pusher stores it (the store then still says RECEIVED, or has no such
        task yet), and a task dropped then would not be polled before the next full pass: a custom
        state the task only writes to the backend (`update_state(state="DOWNLOADING")`) would never
        show if the task ends before that."""
        unsure = []
        for task_id in list(self.running_ids):
            record = stored.get(task_id)
            if record is None:
                unsure.append(task_id)  # settled (no longer active), or not stored yet
            elif lifecycle.is_terminal(record.get("state")):
                self.running_ids.pop(task_id, None)
        for start in range(0, len(unsure), CHUNK):
            for task_id in self.store.get_many(unsure[start:start + CHUNK]):
                self.running_ids.pop(task_id, None)  # stored but not active: settled

    def _open(self, stored: dict[str, dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
        return ((i, r) for i, r in stored.items() if not lifecycle.is_terminal(r.get("state")))

    def _lost(self, stored: dict[str, dict[str, Any]]) -> int:
        """Tasks whose worker restarted (a new process under its name) or went offline under them
        and did not come back within OFFLINE_SETTLE; one that comes back from the same process only
        reconnected to the broker, and its tasks still run."""
        gone = {}
        restarts, self.held = list(dict.fromkeys(self.held + self.workers.take_restarts())), []
        for hostname, pid in restarts:
            worker = self.workers.get(hostname)
            if worker is not None and not worker.offline and worker.pid == pid and hostname not in self.fresh:
                continue  # offline, then online again from the same process: it only reconnected
            if worker is not None and worker.offline and not self.workers.silent(hostname, OFFLINE_SETTLE):
                self.held.append((hostname, pid))  # it may be reconnecting: decide at a later pass
                continue
            gone[(hostname, pid)] = "stopped" if worker is None or worker.offline else "restarted"
        if self.held:
            self.soon(OFFLINE_SETTLE)
        if not gone:
            return 0
        count = 0
        for task_id, record in self._open(stored):
            where = self.ran_on.get(task_id)
            if where and where[1] is None:  # started before we knew the worker's pid: its first one
                worker = self.workers.get(where[0])
                where = (where[0], worker.first_pid if worker else None)
            why = gone.get(where) if where else None
            if why and where and lifecycle.phase(record.get("state")) >= lifecycle.RECEIVED:
                self._end_on_dead_worker(record, record.get("worker") or where[0], why)
                count += 1
        return count

    def _unheld(self, stored: dict[str, dict[str, Any]]) -> int:
        """Tasks no worker holds any more, told by the workers themselves: one still stored as
        running on a worker whose process started after it (a restart this web process did not see:
        it was restarted too, or the worker's events were off) is LOST when that worker answers
        `inspect active/reserved/scheduled` without it (Celery's WorkerLostError: a task acknowledged
        on start is not delivered again); a cancelled one is REVOKED when its worker answers without
        it, or when its worker has been gone (offline, or unheard of) since the listener connected
        `3 * worker_timeout` s ago and no worker that answered holds it. Neither when any worker
        holds it or a queue has it (redelivered), nor while the queues were not read whole; asked at
        most every `worker_timeout` seconds, and only when such a task exists."""
        if self.control is None:
            return 0
        for task_id in list(self.cancels):
            if task_id not in stored or lifecycle.is_terminal(stored[task_id].get("state")):
                self.cancels.pop(task_id, None)
        suspects: dict[str, tuple[dict[str, Any], str]] = {}
        settled = self.connected_at is not None and self.clock() - self.connected_at > 3 * self.worker_timeout
        for task_id, record in self._open(stored):
            name = record.get("worker")
            worker = self.workers.get(name)
            if not name:
                continue
            away = worker is None or worker.offline
            if task_id in self.cancels and lifecycle.phase(record.get("state")) >= lifecycle.RECEIVED:
                # Its worker unheard of since this web process listens (gone for good while it was
                # down), or offline and silent: no verdict until the listener has been connected a
                # while (after a Redis outage the workers' connections come back later).
                if not away or (settled and self.workers.silent(name, OFFLINE_SETTLE)):
                    suspects[task_id] = (record, "cancelled, gone" if away else "cancelled")
                continue
            if away:
                continue
            began = run_started(record)
            if (lifecycle.phase(record.get("state")) >= lifecycle.STARTED and began is not None
                    and worker.started is not None and began < worker.started - ORPHAN_TOLERANCE):
                suspects[task_id] = (record, "restarted")
        if not suspects or self.clock() - self.last_held_check < self.worker_timeout:
            return 0
        self.last_held_check = self.clock()
        queued, complete = self.queues() if self.queues is not None else ([], True)
        active = self.control.active()
        if active is None or not complete:
            return 0  # no news (Redis away), or a queue longer than we read may hold them
        held = set().union(*active.values()) if active else set()
        held |= {u["id"] for u in queued}
        count = 0
        for task_id, (record, why) in suspects.items():
            worker = record["worker"]
            if task_id in held or (worker not in active and why != "cancelled, gone"):
                continue  # it runs or waits somewhere, or its worker did not answer (busy solo)
            if why.startswith("cancelled"):
                self.cancels.pop(task_id, None)
                self.coalescer.add(revoked_unheld(task_id, worker))
                self.workers.ended(worker, task_id)
            else:
                self._end_on_dead_worker(record, worker, "restarted")
            count += 1
        return count

    def _not_responding(self, stored: dict[str, dict[str, Any]]) -> int:
        """Running tasks of workers silent for `worker_timeout`: ask them (a ping) before saying
        anything, and say only "not responding"."""
        by_worker: dict[str, list[dict[str, Any]]] = {}
        for _, record in self._open(stored):
            worker = record.get("worker")
            if worker and lifecycle.phase(record.get("state")) >= lifecycle.RECEIVED:
                by_worker.setdefault(worker, []).append(record)
        silent = [w for w in by_worker if self.workers.silent(w, self.worker_timeout)]
        answered = self.control.ping(silent) if (silent and self.control is not None) else set(silent)
        if getattr(self.control, "last_error", None):
            return 0  # the question did not reach the workers (Redis away): no news is no verdict
        settled = self.connected_at is not None and self.clock() - self.connected_at > 3 * self.worker_timeout
        count = 0
        for worker, tasks in by_worker.items():
            status = records.NOT_RESPONDING if worker in silent and worker not in answered else None
            known = self.workers.get(worker)
            # A prefork worker's main process never runs task code: silence and no answer to a
            # ping mean the process is gone (or frozen; a real outcome still overrides). Any
            # other pool runs tasks in the process that answers, and may be busy, not dead.
            dead = status is not None and known is not None and known.pool == "prefork" and settled
            for record in tasks:
                if dead:
                    self._end_on_dead_worker(record, worker, "stopped responding")
                    count += 1
                elif record.get("worker_status") != status and (
                        status is not None or record.get("worker_status") == records.NOT_RESPONDING):
                    # (clears only its own: REDELIVERY or UNHELD is not cleared to None here)
                    self.coalescer.add({"id": record["id"], "worker_status": status})
                    count += status is not None
        return count

    def _end_on_dead_worker(self, record: dict[str, Any], worker: str, why: str) -> None:
        """LOST for a started task; a received one waits for the broker to deliver it again (its
        message was not acknowledged: the transport's visibility timeout brings it back)."""
        if lifecycle.phase(record.get("state")) >= lifecycle.STARTED:
            self.coalescer.add(records.lost(record["id"], worker, why))
            self.workers.ended(worker, record["id"])
        else:
            self.coalescer.add({"id": record["id"], "worker_status": records.REDELIVERY})

    def _unknown(self, stored: dict[str, dict[str, Any]]) -> int:
        """Tasks nobody knows after `window` seconds: no backend entry, in no queue, on no worker
        that answered (a task that ignores its result and ended while we were not listening)."""
        now = self.wall()
        # A stored RETRY says an attempt failed, not that its retry's message still exists: a worker
        # stopped cold under it leaves no message anywhere. It is judged like a task with no entry.
        # An entry the web cannot decode (pickle, which it never loads) tells nothing either.
        stale = [(i, r) for i, r in self._open(stored)
                 if now - records.epoch(r.get("updated") or r.get("created")) > self.window
                 and (i not in self.seen_meta or r.get("state") == "RETRY" or i in self.undecodable)]
        if not stale or self.control is None or self.clock() - self.last_active_check < self.window / 2:
            return 0
        self.last_active_check = self.clock()
        self.ask_workers()  # a worker restarted under its name answers with its new pid: LOST, not UNKNOWN
        if self._lost(stored):
            return 0  # judged again at the next pass, from what is stored then
        queued, complete = self.queues() if self.queues is not None else ([], False)
        in_queue = {u["id"] for u in queued}
        taken = {u["id"] for u in queued if u.get("taken")}
        # Unacknowledged messages past the bounded read: a received task's may be one of them.
        taken_whole = getattr(self.queues, "taken_whole", True)
        active = self.control.active()
        if active is None:
            return 0
        on_workers = set().union(*active.values()) if active else set()
        # A worker heard from lately that did not answer may be busy (solo) with a task it took
        # from the queue before anyone saw it: no verdict for tasks without a known worker then.
        unanswered = [h for h, w in self.workers.workers.items()
                      if h not in active and not w.offline and not self.workers.silent(h, self.window)]
        entries = self.read_results([i for i, _ in stale])  # an entry now: its state is news, no verdict
        count = 0
        for task_id, record in stale:
            if task_id in on_workers and record.get("worker_status") == records.UNHELD:
                self.coalescer.add({"id": task_id, "worker_status": None})  # delivered again, held again
            entry = entries.get(task_id)
            if task_id in on_workers or (entry is not None and entry.get("status") != "RETRY"
                                         and "undecodable" not in entry):
                continue
            worker = record.get("worker")
            if task_id in in_queue:
                if task_id in taken and worker in active:
                    count += self._stranded(record)
                continue
            if worker and worker not in active:
                continue  # its worker did not answer: it may be busy (solo); not ours to judge
            if not worker and (not complete or unanswered):
                continue  # a queue longer than we read, or a busy worker, may hold it
            if not taken_whole and lifecycle.phase(record.get("state")) < lifecycle.STARTED:
                continue  # its message may be among the unacknowledged ones we did not read
            odd = record.get("state") == "RETRY" or (entry is not None and "undecodable" in entry)
            if odd and (not complete or unanswered):
                # Its retry's message may wait in a queue longer than we read, or the retry (or the
                # task whose entry we cannot read) may run on a busy worker that did not answer:
                # the worker that ran it before is not the only one that could hold it now.
                continue
            if record.get("state") == "RETRY" and record.get("worker_status") == records.REDELIVERY and worker:
                # Its worker went away under it, and neither the broker nor any worker has its retry.
                self.coalescer.add(records.lost(task_id, worker, "restarted or stopped",
                                                "after this task's retry was announced; no queue or worker holds it"))
                self.workers.ended(worker, task_id)
            elif entry is not None and "undecodable" in entry:
                self.coalescer.add(records.unknown(task_id, UNDECODABLE))
            else:
                self.coalescer.add(records.unknown(task_id))
            count += 1
        return count

    def _stranded(self, record: dict[str, Any]) -> int:
        """A received task whose worker reconnected to the broker after receiving it (a worker-online
        from it since), answered without it, while its message waits in the broker's
        unacknowledged messages: Celery drops what a consumer held (prefetched, or waiting for its
        countdown) when its connection breaks, and kombu could not put the message back
        ("Restoring 1 unacknowledged message(s)" in the worker's log, to a Redis that was down).
        kombu's Redis transport delivers it again once it is older than the visibility timeout
        (`visibility_timeout`, 1 hour by default; kombu/transport/redis.py QoS.restore_visible).
        Said as UNHELD; the task's events override it. The reconnect is what tells it apart from a
        task a live worker holds where `inspect` does not list it (a rate-limited task waits in
        Celery's token bucket, in neither `reserved` nor `scheduled`). 1 when said now, else 0."""
        if record.get("state") != "RECEIVED" or record.get("worker_status") in (records.UNHELD, records.REDELIVERY):
            return 0  # (a started task's worker holds it while it runs; a RETRY waits for its next message)
        worker = self.workers.get(record.get("worker"))
        received = records.epoch(record.get("received") or record.get("updated") or record.get("created"))
        if worker is None or worker.online_at is None or not worker.online_at > received:
            return 0
        ran_on = self.ran_on.get(record["id"])
        if ran_on is not None and ran_on[1] is not None and ran_on[1] != worker.pid:
            return 0  # received by an earlier incarnation: a restart, which _lost says (REDELIVERY)
        self.coalescer.add({"id": record["id"], "worker_status": records.UNHELD})
        return 1

    def ask_pools(self) -> None:
        """Ask workers whose pool is not known yet which one they run (an idle worker answers;
        a busy solo worker cannot, and keeps what it said before)."""
        if self.control is None or not any((w.pool is None or w.concurrency is None or w.started is None)
                                           and not w.offline
                                           for w in self.workers.workers.values()):
            return
        self.ask_workers()

    def ask_workers(self) -> set[str]:
        """Ask every worker its pool and pid (`stats`): a pid that changed is a restart the worker
        has not announced yet (its events are off until the next `enable_events`). Returns the
        hostnames that answered."""
        if self.control is None:
            return set()
        answers = self.control.stats()
        for hostname, info in answers.items():
            if isinstance(info.get("pid"), int):
                self.workers.incarnation(hostname, info["pid"], info.get("pool"), info.get("started"),
                                         concurrency=info.get("concurrency"))
        return set(answers)

    def ask_queues(self) -> None:
        """Ask the workers which queues they consume (`active_queues`), for the queues' consumers;
        returns as soon as every worker heard from lately answered. A worker that does not answer
        (busy solo) keeps what it said before."""
        ask = getattr(self.control, "active_queues", None)
        if ask is None:
            return
        expected = sum(1 for h, w in self.workers.workers.items()
                       if not w.offline and not self.workers.silent(h, self.worker_timeout))
        if not expected:
            return  # nobody to ask (and an unlimited question would wait its whole timeout)
        answers = ask(limit=expected, timeout=0.5)
        for hostname, names in (answers or {}).items():
            worker = self.workers.get(hostname)
            if worker is not None:
                worker.queues = names

    def pool(self, hostname: str | None) -> str | None:
        """The pool `hostname` runs, when it said (see `ask_pools`)."""
        worker = self.workers.get(hostname)
        return worker.pool if worker else None

    # ---- the loop ----------------------------------------------------------------------------

    def step(self) -> None:
        """Run whichever passes of both loops are due, one loop after the other (unit tests)."""
        self.step_control()
        self.step_poll()

    def step_control(self) -> float:
        """Run whichever of the slow passes are due: the `enable_events` broadcast, the questions
        to the workers and the full pass. Returns when the next one is due (`clock` seconds)."""
        now = self.clock()
        if self.control is not None and now >= self.next_enable:
            self.next_enable = now + self.enable_events_every
            self.control.enable_events()
        if self.control is not None and now >= self.next_pools:
            self.next_pools = now + self.reconcile_every
            self.ask_pools()
        if self.control is not None and now >= self.next_queues:
            self.next_queues = now + self.consumers_every
            self.ask_queues()
        if now >= self.next_reconcile:
            self.next_reconcile = now + self.reconcile_every
            if self.recover_since is not None:
                since, self.recover_since = self.recover_since, None
                try:
                    self.recover(since)
                except Exception as exc:
                    if _redis_error(exc):  # Redis away: the gap is looked at again at the next pass
                        self.recover_since = since if self.recover_since is None else min(since, self.recover_since)
                        raise
                    log.warning("gap not recovered from the result backend: %r", exc)  # never stops the pass
            self.reconcile()
            self.store.trim()
        if self.control is None:
            return self.next_reconcile
        return min(self.next_reconcile, self.next_pools, self.next_enable, self.next_queues)

    def step_poll(self) -> float:
        """Run the fast pass if due; returns when it is due next (`clock` seconds)."""
        if self.clock() >= self.next_poll:
            self.next_poll = self.clock() + self.poll_every
            self.poll()
        return self.next_poll

    def start(self, spawn: Callable[[Callable[[], None]], Any]) -> None:
        """Start both loops with `spawn` (Flask-SocketIO's `start_background_task`: a green thread
        under eventlet or gevent). The fast poll has a loop of its own: a question to the workers
        waits its whole timeout (1 s) for one that does not answer, and a solo worker running a
        task answers none, so a pass can take seconds (3.6 s measured with five pools); sharing
        their loop, the running tasks' backend records (the tutorial's PROGRESS, a custom state)
        went unread that long, and a state held for less was never shown."""
        self.running = True
        spawn(self.run)
        spawn(self.run_poll)

    def run(self) -> None:
        """The slow passes' loop (`step_control`), from `start` until `stop`. It wakes at least
        every `poll_every` s, so a pass asked for `soon` (a worker seen, a cancel) is not late."""
        self._loop(self.step_control, "reconcile")

    def run_poll(self) -> None:
        """The fast pass's loop (`step_poll`), from `start` until `stop`."""
        self._loop(self.step_poll, "poll")

    def _loop(self, step: Callable[[], float], name: str) -> None:
        # `running` is set by `start` alone: a loop that begins after `stop` (a green thread runs
        # only once its spawner yields) must not undo it.
        backoff = 0.5
        while self.running:
            try:
                due = step()
                backoff = 0.5
                self.sleep(max(0.05, min(due - self.clock(), self.poll_every)))
            except Exception as exc:  # the loop must survive Redis going away
                log.warning("%s failed (%s); retrying in %.1f s", name, exc, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.running = False



def _redis_error(exc: BaseException) -> bool:
    return isinstance(exc, (redis.RedisError, ConnectionError, OSError))


def run_started(record: dict[str, Any]) -> float | None:
    """When the task's current attempt started (epoch seconds, the web's clock), or None."""
    retries = record.get("retries") or 0
    for attempt in record.get("attempts") or ():
        if isinstance(attempt, dict) and attempt.get("retries") == retries and attempt.get("started"):
            return records.epoch(attempt["started"])
    return records.epoch(record["started"]) if record.get("started") and not retries else None


def revoked_unheld(task_id: str, worker: str) -> dict[str, Any]:
    """The ending of a cancelled task its worker no longer holds and no queue has (an event's
    confidence: the backend's ending, if one is ever written, outranks it)."""
    now = records.iso(time.time())
    return {"id": task_id, "state": "REVOKED", "finished": now, "updated": now,
            "error": {"type": "TaskRevokedError", "traceback": None,
                      "message": f"cancelled (revoked); worker {worker} no longer held it"}}
