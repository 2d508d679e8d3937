"""What the dashboard knows of each worker from its events: when it last spoke, which incarnation
is running (a restart under the same node name is a new one), how far its clock is off, and what
it does (tasks running, processed, failed)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A clock offset below this is taken as network delay, not skew: times stay as the worker sent them.
SKEW_TOLERANCE = 1.0
# Seconds every reading must stay below a worker's clock offset before the offset goes down.
LOWER_AFTER = 10.0
# Two answers about one process whose start times differ by more than this are two processes.
RESTART_TOLERANCE = 5.0
# Celery's rule (celery.events.state.HEARTBEAT_EXPIRE_WINDOW, 200 %): a worker is alive while
# now < its last heartbeat + freq * 2. Heartbeats are rarely slower than this many seconds apart.
HEARTBEAT_EXPIRE_FACTOR = 2.0
MAX_FREQ = 3600.0
MAX_SKEW = 86_400.0  # seconds: an event timed further than this from the web's clock is taken untimed
# Task ids remembered as running on one worker (a task whose end event was lost stays until the
# worker's next heartbeat says it runs nothing).
MAX_RUNNING = 10_000
TASK_ENDS = ("task-succeeded", "task-failed", "task-revoked", "task-rejected", "task-ignored", "task-retried")


@dataclass
class Worker:
    hostname: str
    pid: int | None = None        # the worker's main process (worker-* events): its incarnation
    first_pid: int | None = None  # the first incarnation seen
    started: float | None = None  # when its process started (epoch s, from `stats` uptime)
    measured: float | None = None  # the last `timestamp - now` reading
    lower_since: float | None = None  # since when readings are lower than the offset (our clock)
    lower_max: float = 0.0
    last_seen: float = 0.0        # our monotonic clock
    offset: float = 0.0           # seconds its clock is ahead of ours
    offline: bool = False
    pool: str | None = None       # prefork, solo, threads, gevent, eventlet (asked: web.control.Control.stats)
    beacon: bool = False          # sends celery_dashboard's worker-beacon (a sign of life while busy)
    previous_pids: set[int] = field(default_factory=set)
    concurrency: int | None = None  # pool processes/threads/greenlets (`stats`: pool.max-concurrency)
    queues: list[str] | None = None  # the queues it consumes (`active_queues`), None until it said
    running: set[str] = field(default_factory=set)  # task ids started and not ended (events)
    reported_active: int = 0      # `active` of its last heartbeat (tasks it runs)
    reported_processed: int = 0   # `processed` of its last heartbeat (tasks this process accepted)
    ended: int = 0                # tasks seen ending on it (events, since this web process started)
    failed: int = 0               # of those, task-failed
    last_heartbeat: float | None = None  # wall clock (epoch s) of its last worker-* event
    online_at: float | None = None  # its last worker-online (its consumer (re)connected), epoch s, our clock
    freq: float | None = None     # seconds between its heartbeats (`freq` of its last worker-* event)


class Workers:
    """Worker liveness, incarnations and clocks, fed every event the listener reads.

    Celery events carry `hostname`, `pid` (the sending process) and `timestamp` (the sender's
    clock; celery.events.dispatcher). Worker events (`worker-online`, `worker-heartbeat`,
    `worker-offline`) come from the main process, so their `pid` names the incarnation. prefork
    sends heartbeats while tasks run; solo, and gevent holding the CPU, send none: silence alone
    is never taken as death.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 limit: int = 10_000) -> None:
        self.clock = clock
        self.wall = wall
        self.limit = limit
        self.workers: dict[str, Worker] = {}
        self.restarted: list[tuple[str, int | None]] = []  # (hostname, old pid) since last taken

    def get(self, hostname: str | None) -> Worker | None:
        return self.workers.get(hostname or "")

    def see(self, event: dict[str, Any]) -> dict[str, Any]:
        """Note one event's sign of life; return the event with `timestamp` on our wall clock."""
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or not hostname or event.get("type") == "task-sent":
            return event  # task-sent comes from the sending process (Celery names it gen<pid>@host)
        worker = self.workers.get(hostname)
        if worker is None:
            if len(self.workers) >= self.limit:
                self.workers.pop(min(self.workers, key=lambda h: self.workers[h].last_seen))
            worker = self.workers[hostname] = Worker(hostname)
        worker.last_seen = self.clock()
        kind, pid = event.get("type", ""), event.get("pid")
        if kind.startswith("worker-") and isinstance(pid, int):
            if kind == "worker-offline":
                worker.offline = True
                self.restarted.append((hostname, worker.pid))
            elif kind == "worker-beacon" and worker.offline and pid == worker.pid:
                pass  # its beacon thread outlives its goodbye by a moment (it stops at worker_shutdown)
            else:
                self.incarnation(hostname, pid)
                if kind == "worker-beacon":
                    worker.beacon = True
        self._activity(worker, kind, event)  # after a new incarnation reset the counts
        stamp = event.get("timestamp")
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) \
                and not abs(stamp - self.wall()) <= MAX_SKEW:  # (also NaN)
            # Not a clock, however wrong (any process on the broker may send anything): one such
            # event made every event of its worker fail for 10 s. The event is taken untimed.
            event = {key: value for key, value in event.items() if key != "timestamp"}
        elif isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            self._measure(worker, stamp - self.wall())
            if worker.offset:
                event = dict(event, timestamp=stamp - worker.offset)
            if kind == "worker-online":  # Celery sends it as its consumer starts, and after each reconnect
                worker.online_at = stamp - worker.offset
        return event

    def _activity(self, worker: Worker, kind: str, event: dict[str, Any]) -> None:
        """Count what the event tells of the worker's work: a task started or ended on it, or its
        heartbeat's `active` and `processed` (Celery's worker-online/-heartbeat fields)."""
        task_id = event.get("uuid")
        if kind == "task-started" and isinstance(task_id, str):
            if len(worker.running) < MAX_RUNNING:
                worker.running.add(task_id)
        elif kind in TASK_ENDS:
            if isinstance(task_id, str) and task_id in worker.running:
                worker.running.discard(task_id)
                worker.reported_active = max(0, worker.reported_active - 1)
            if kind in ("task-succeeded", "task-failed"):  # task-revoked may come from every worker
                worker.ended += 1
                worker.failed += kind == "task-failed"
        elif kind.startswith("worker-"):
            worker.last_heartbeat = self.wall()
            freq = event.get("freq")
            if isinstance(freq, (int, float)) and not isinstance(freq, bool) and 0 < freq <= MAX_FREQ:
                worker.freq = float(freq)
            active, processed = event.get("active"), event.get("processed")
            if isinstance(active, int) and not isinstance(active, bool):
                worker.reported_active = active
                if active == 0:
                    worker.running.clear()  # an end event we missed
            if isinstance(processed, int) and not isinstance(processed, bool):
                worker.reported_processed = processed

    def _measure(self, worker: Worker, skew: float) -> None:
        """Update the worker's clock offset from one event's `timestamp - now`.

        Network delay only makes an event look older, and so do events a worker held while the
        broker was away (Celery buffers them and sends them late): a lower reading is believed
        only when every reading has been lower for LOWER_AFTER seconds; a higher one at once."""
        first = worker.measured is None
        worker.measured = skew
        if first or skew > worker.offset + SKEW_TOLERANCE:
            worker.offset = skew if abs(skew) > SKEW_TOLERANCE else 0.0
            worker.lower_since = None
        elif skew < worker.offset - SKEW_TOLERANCE:
            now = self.clock()
            if worker.lower_since is None:
                worker.lower_since, worker.lower_max = now, skew
            worker.lower_max = max(worker.lower_max, skew)
            if now - worker.lower_since > LOWER_AFTER:
                worker.offset = worker.lower_max if abs(worker.lower_max) > SKEW_TOLERANCE else 0.0
                worker.lower_since = None
        else:
            worker.lower_since = None

    def incarnation(self, hostname: str, pid: int, pool: str | None = None, started: float | None = None,
                    concurrency: int | None = None) -> None:
        """The worker `hostname` runs as process `pid`, started at `started` (epoch seconds, when
        known: its answer to `stats` has its uptime). A pid other than the known one is a restart;
        so is the same pid started later (in a container the restarted worker often gets the same
        pid)."""
        worker = self.workers.get(hostname)
        if worker is None:
            worker = self.workers[hostname] = Worker(hostname, last_seen=self.clock())
        reborn = (started is not None and worker.started is not None and pid == worker.pid
                  and started - worker.started > RESTART_TOLERANCE)
        if worker.pid is not None and ((pid != worker.pid and pid not in worker.previous_pids) or reborn):
            worker.previous_pids.add(worker.pid)
            self.restarted.append((hostname, worker.pid))
        if started is not None and (worker.started is None or reborn or pid != worker.pid):
            worker.started = started
        elif pid != worker.pid:
            worker.started = None  # the old process's start: the new one's is asked (`stats`)
        if pid != worker.pid:
            # A new incarnation may run another pool, size and queues: ask again.
            worker.pool = worker.concurrency = worker.queues = None
            if worker.pid is not None:
                worker.running.clear()
                worker.reported_active = worker.reported_processed = worker.ended = worker.failed = 0
        worker.pid, worker.offline = pid, False
        if worker.first_pid is None:
            worker.first_pid = pid
        if pool:
            worker.pool = pool
        if concurrency:
            worker.concurrency = concurrency

    def ended(self, hostname: str | None, task_id: str) -> None:
        """The dashboard shows `task_id` ended by another way than an event from `hostname` (the
        backend's record, a LOST or REVOKED verdict): it no longer counts among the worker's active."""
        worker = self.workers.get(hostname or "")
        if worker is not None and task_id in worker.running:
            worker.running.discard(task_id)
            worker.reported_active = max(0, worker.reported_active - 1)

    def take_restarts(self) -> list[tuple[str, int | None]]:
        """The (hostname, old incarnation pid) of workers that restarted or went offline since the
        last call."""
        restarted, self.restarted = self.restarted, []
        return restarted

    def silent(self, hostname: str, timeout: float) -> bool:
        """No event from `hostname` for `timeout` seconds (unknown workers count as silent)."""
        worker = self.workers.get(hostname)
        return worker is None or self.clock() - worker.last_seen > timeout

    def summary(self, limit: int = 100) -> dict[str, dict[str, Any]]:
        """hostname -> {"pool", "pid", "seconds_since_seen", "offline", "clock_offset", "beacon"}: the
        workers seen most recently, at most `limit`."""
        now = self.clock()
        newest = sorted(self.workers.values(), key=lambda w: w.last_seen, reverse=True)[:limit]
        return {w.hostname: {"pool": w.pool, "pid": w.pid, "seconds_since_seen": round(now - w.last_seen, 1),
                             "offline": w.offline, "clock_offset": round(w.offset, 3), "beacon": w.beacon}
                for w in newest}

    def status(self, worker: Worker, timeout: float, offline_after: float = float("inf")) -> str:
        """"offline" (it said so: worker-offline; or silent for `offline_after` s: killed without a
        goodbye), "not responding" (its heartbeat is late: silent for longer than freq * 2, Celery's
        rule, or `timeout` s when its heartbeat interval is not known yet; a busy solo worker is
        silent too) or "online"."""
        silence = self.clock() - worker.last_seen
        if worker.offline or silence > offline_after:
            return "offline"
        expires = worker.freq * HEARTBEAT_EXPIRE_FACTOR if worker.freq else timeout
        return "not responding" if silence > expires else "online"

    def forget(self, after: float) -> list[str]:
        """Drop the workers silent for more than `after` seconds (gone for good: the list stays
        bounded); their hostnames. One heard from again comes back as new."""
        now = self.clock()
        gone = [h for h, w in self.workers.items() if now - w.last_seen > after]
        for hostname in gone:
            del self.workers[hostname]
        return gone

    def rows(self, timeout: float, limit: int = 100, offline_after: float = float("inf"),
             forget_after: float = float("inf")) -> list[dict[str, Any]]:
        """The workers for the API and the page, online ones first, then the most recently heard,
        at most `limit`: {"hostname", "online", "status" (see `status`), "pool", "concurrency",
        "active" (tasks running: for a worker "not responding", the last count it gave, less the
        tasks the dashboard has shown ended since (`ended`); 0 for one offline), "processed" (tasks
        its process accepted, from its heartbeats, or the ends seen when more), "failed" (task-failed
        seen from this process since the web process started),
        "last_heartbeat" (ISO 8601 UTC or None), "seconds_since_seen", "pid", "queues" (names or
        None when not known yet)}. Workers silent for more than `forget_after` s are forgotten
        first (`forget`)."""
        if forget_after != float("inf"):
            self.forget(forget_after)
        now = self.clock()
        order = sorted(self.workers.values(), key=lambda w: (w.offline, now - w.last_seen))[:limit]
        rows = []
        for w in order:
            status = self.status(w, timeout, offline_after)
            beat = (datetime.fromtimestamp(w.last_heartbeat, UTC).isoformat(timespec="seconds")
                    if w.last_heartbeat is not None else None)
            rows.append({"hostname": w.hostname, "online": status == "online", "status": status, "pool": w.pool,
                         "concurrency": w.concurrency,
                         "active": 0 if status == "offline" else len(w.running) or w.reported_active,
                         "processed": max(w.reported_processed, w.ended), "failed": w.failed,
                         "last_heartbeat": beat, "seconds_since_seen": round(now - w.last_seen, 1),
                         "pid": w.pid, "queues": list(w.queues) if w.queues is not None else None})
        return rows

    def offset(self, hostname: str | None) -> float:
        worker = self.workers.get(hostname or "")
        return worker.offset if worker else 0.0
