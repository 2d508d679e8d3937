"""Progress reporting for task authors, throttled before it touches the network; a cancel point.

Each report that is sent also checks whether the task was revoked (celery_dashboard.revocations):
a revoked task stops at that report, on every pool, even solo and threads where Celery's
`revoke(terminate=True)` cannot stop a running task.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from threading import get_ident
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import task_postrun, task_prerun

from celery_dashboard import revocations
from celery_dashboard import settings as config

# The key of a stored report's meta that says when it was sent: namespaced, so a task's own meta
# (an email task's {"current", "total", "sent": 42}) is never read as a time.
SENT_KEY = "celery_dashboard_sent"

log = logging.getLogger(__name__)

PROGRESS = "PROGRESS"
MAX_MESSAGE = 500
TICKS_PER_INTERVAL = 1  # the ticker's rate: the safety net for a loop that slowed down (see Throttle)
NEVER = math.inf
NOW = -math.inf
# The same for an integer total. A skipped call's comparison stays CPython's specialised one for
# two small ints only while `check_at` stays a small int: a tick that set -inf (a float) to an int
# total's check_at cost ~23 ns a call in a tight loop (deoptimised each tick), a third of the call.
NEVER_INT = 2 ** 62
NOW_INT = -(2 ** 30 - 1)  # the smallest int CPython 3.11 compares on its fast path (a reporter whose
#                           current goes below it looks on the float path: -inf)


class Throttle:
    """Decides which progress calls are sent: at most one per interval, and the final value at once.

    The final value (current >= total, total > 0) is sent at once when the last report sent was not
    one: a loop that reaches its total shows 100% without waiting for the interval. Calls past it
    (a total that was an underestimate: current 1,001 of 1,000, and on) and calls with no total (0)
    are throttled like any other: before, each of them was sent and stored, so a loop that overshot
    by 1,000 calls sent 1,000 events and wrote the result backend 1,000 times.

    A skipped call is meant to cost next to nothing: one comparison, `current < check_at`, made by
    the caller (Progress, progress) before it calls `due`. After each look (a call that reads the
    clock), `check_at` is where the loop's `current` is expected to be when the next report is due:
    the loop's pace (`current`'s rise per second between the last two looks, `_paced`) times the
    time left. A loop at a steady pace thus looks about once per report, when it is due. The
    first look of a run is followed by a look at the next call (its pace is not known yet); a
    `current` that does not rise (or is not an int or a float) gets no pace. `check_at` is never
    above the total (the final value is looked at at once) and is NEVER where there is no total or
    the final value was sent. A loop that slows down after a look would come late to that
    `current`, so the process's ticker (`_tick`, an OS thread) also sets every `check_at` to NOW
    (`look_at`: NOW_INT and NEVER_INT for an int current with an int total, so that it stays an
    int) once per PROGRESS_INTERVAL (TICKS_PER_INTERVAL), or per a reporter's own shorter
    interval: the next call then looks and measures the new pace. A report due is thus sent on
    time at a steady pace, and late by at most one interval and one call however the loop's pace
    changes. Where the ticker could not be started, every call reads the clock (`check_at` stays
    NOW).

    Why not tick more often instead of pacing: each tick is the ticker thread taking the GIL from
    the loop, two thread switches. Four ticks per interval (the rule before) cost a loop of 2 us
    bodies about 1.5 points of overhead on this project's 2-core machine (bench/progress_cost.py).

    After a call that is due, `store` says whether its report is also stored in the result backend:
    the first, the final value, and then the first due once `store_interval` seconds have passed
    since the last stored (see send_progress).
    """

    __slots__ = ("interval", "clock", "next_at", "sent", "check_at", "look_at", "store_interval", "store_at",
                 "store", "at_total", "seen", "seen_at", "aim", "__weakref__")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 store_interval: float | None = None) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = 0.0
        self.sent = 0
        self.store_interval = config.PROGRESS_STORE_INTERVAL if store_interval is None else store_interval
        self.store_at = -math.inf  # the clock from which the next report due is stored
        self.store = True
        self.at_total = False  # the last report sent was a final value (current >= total > 0)
        self.check_at = NOW  # calls with a smaller current are skipped without a look (the first looks)
        self.look_at = NOW  # what the ticker sets check_at to: the next call looks
        self.seen: Any = None  # the `current` of the last look, and the clock then (the loop's pace)
        self.seen_at = 0.0
        self.aim: Any = NOW  # the `check_at` the last look set: a look before it was a tick's

    def due(self, current: float, total: float) -> bool:
        """True when this call should be sent: the first, then one per interval; a final value
        (current >= total > 0) at once, unless the last report sent was one already. Sets
        `check_at` for the calls after it."""
        now = self.clock()
        at_total = current >= total > 0
        final = at_total and not self.at_total
        if now < self.next_at and not final:
            self._aim(total, self.at_total, current, now)
            return False
        self.next_at = now + self.interval
        self.sent += 1
        self.at_total = at_total
        self.store = final or now >= self.store_at
        if self.store:
            self.store_at = now + self.store_interval
        self._aim(total, at_total, current, now)
        return True

    def _aim(self, total: float, at_total: bool, current: Any, now: float) -> None:
        """After a look: where the calls after it look next (`check_at`, and `aim`, which the ticker
        does not cut short)."""
        self.check_at = self.aim = _check_at(self, total, at_total, current, _paced(self, current, now))


def _paced(throttle: Throttle, current: Any, now: float) -> Any:
    """Where `current` is expected to be when `throttle`'s next report is due (its `next_at`), from
    the loop's pace between its last look and this one (`current` and `now`, which become the last
    look); None where no pace is known: a `current` that did not rise, or that is not an int or a
    float. At the first look of a run, `current` itself: the next call that is not behind it looks,
    and measures the pace; the same after a look that came before the point the last one aimed at
    (the ticker cut it short: the loop went slower than its pace said, and the pace since the last
    look would still be too fast). An int `current` gives an int (rounded down: a look a call
    early costs one more look, a look late delays the report), a float a float."""
    seen, seen_at = throttle.seen, throttle.seen_at
    throttle.seen, throttle.seen_at = current, now
    kind = type(current)
    if kind is not int and kind is not float:
        return None
    if seen is None or current < throttle.aim:
        return current
    if type(seen) is not kind or not current > seen or not now > seen_at:
        return None
    try:
        ahead = (current - seen) * (throttle.next_at - now) / (now - seen_at)
        return current + int(ahead) if kind is int else current + ahead
    except (OverflowError, ValueError):  # an inf or nan current: no pace
        return None


def _check_at(holder: Any, total: float, at_total: bool, current: Any = 0, paced: Any = None) -> float:
    """Until which current value calls are skipped: `paced` (see _paced) where there is one, but
    never past the total while the final value is still to come, else NEVER; NOW (every call
    looks) where this process has no ticker to cut it short. Sets `holder.look_at`: NOW_INT for an
    int current (at least NOW_INT) with an int total, so that both sides of a skipped call's
    comparison stay ints; else the float NOW, which any number compares with."""
    small = type(total) is int and type(current) is int and current >= NOW_INT
    now, never = (NOW_INT, NEVER_INT) if small else (NOW, NEVER)
    holder.look_at = now
    if _ticking_in[-1:] != [os.getpid()] and not _watch(holder):
        return now
    limit = total if total > 0 and not at_total else never  # (due() compared total already: a number)
    if paced is not None and paced < limit:
        return paced
    return limit


def progress_meta(current: float, total: float, message: str = "") -> dict[str, Any]:
    """The progress object as the dashboard shows it."""
    try:
        percent = round(100.0 * float(current) / float(total), 1) if total else 0.0
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        percent = 0.0
    return {
        "current": current,
        "total": total,
        "percent": max(0.0, min(100.0, percent)),
        "message": str(message)[:MAX_MESSAGE],
    }


def send_progress(task: Task, meta: dict[str, Any], store: bool = True) -> None:
    """Push a `task-progress` event for the live view and, when `store`, store the state for later
    readers (PROGRESS, `meta` as its info: what `AsyncResult(id).info` gives).

    The throttles store the first report of a run, the final value, and at most one report per
    PROGRESS_STORE_INTERVAL in between (Throttle.store): storing is Celery's `update_state`, a read
    and a write of the result backend (celery.backends.base.BaseKeyValueStoreBackend._store_result
    reads the stored state first), about half of a report's cost (bench/progress_cost.py).
    The stored meta holds SENT_KEY (epoch seconds, the worker's clock, the event's `sent`): the
    dashboard also reads the backend of running tasks (web.reconciler, another web process), and a
    stored report older than the last event it merged is then older, not new: it never moves a
    progress bar back (web.records.from_meta).

    First checks whether the task was revoked in Redis: if so, it is ended as revoked (stored
    REVOKED, `task-revoked` with terminated=True) and `celery.exceptions.Ignore` is raised, so the
    body stops here and Celery stores nothing over REVOKED. Let Ignore propagate out of the task.
    A check that cannot reach Redis is logged and the task goes on.
    """
    request = task.request
    if request.id is None:  # called directly, not as a Celery task (the callers return False)
        return
    if getattr(request, revocations.FLAG, None) == revocations.STOPPED:
        raise Ignore()  # already ended as revoked: the body caught Ignore and went on
    if not getattr(request, "is_eager", False) and _revoked(task, request.id):
        revocations.stop(task, terminated=True)
    try:
        sent = time.time()
        task.send_event("task-progress", progress=meta, sent=sent, retries=task.request.retries or 0,
                        retry_policy={"max_retries": 0})
        if store:
            task.update_state(state=PROGRESS, meta={**meta, SENT_KEY: sent})
    except Exception as exc:  # a progress report must never fail the task (Redis may be away)
        log.warning("progress report for %s not sent: %s", task.request.id, exc)


_warned_unusable: list[bool] = []


def _unusable(task: Task, current: Any, total: Any, exc: Exception) -> bool:
    """A call whose current or total cannot be compared (a str, None, Decimal('NaN')): nothing is
    sent, the task goes on (False), and the first such call of the process is logged."""
    if not _warned_unusable:
        _warned_unusable.append(True)
        log.warning("progress of %s not reported: current %r of total %r do not compare (%r)",
                    getattr(task, "name", task), current, total, exc)
    return False


def _report(task: Task, current: float, total: float, message: str, args: tuple[Any, ...],
            throttle: Throttle) -> bool:
    """Send the report a throttle let through, its message formatted now, stored when the throttle says.
    False when there is nothing to send it for: the task was called directly, not run by a worker
    (no request id), so progress() and Progress never say True for a report nobody got."""
    if task.request.id is None:
        return False
    send_progress(task, progress_meta(current, total, _filled(message, *args) if args else message), throttle.store)
    return True


def _filled(message: str, *args: Any, **kwargs: Any) -> str:
    """`message.format(*args, **kwargs)`; a message that does not fit its arguments is sent as
    written (a report never fails the task)."""
    try:
        return message.format(*args, **kwargs)
    except (IndexError, KeyError, ValueError, AttributeError, TypeError):
        return message


def _template(template: str, current: float, total: float) -> str:
    """A Progress reporter's own message, filled at a report: "{} of {} rows" or "{current} of {total} rows"."""
    return _filled(template, current, total, current=current, total=total)


def _revoked(task: Task, task_id: str) -> bool:
    try:
        client = revocations.client_for(task.app)
        return client is not None and revocations.is_revoked(client, task_id)
    except Exception as exc:  # a cancel point must never fail the task (Redis may be away)
        log.warning("revocation of %s not checked: %s", task_id, exc)
        return False


def Progress(task: Task, total: float, interval: float | None = None, *, message: str = "") -> Callable[..., bool]:
    """A progress reporter for one run of a task, the cheapest way to report from a tight loop:
    `report = Progress(self, total, message="{} of {} rows")`, then `report(current)` as often as
    you like (about 40 ns a skipped call in CPython 3.11, the call included; bench/progress_cost.py).
    `message` is filled with the current value and the total (positionally, or as {current} and
    {total}) only when a report is sent. A call may also give its own: `report(current, "page {} of {}", current,
    total)`, formatted from its arguments only when sent. Each call returns True when its report
    was sent; `interval` is seconds between reports (default PROGRESS_INTERVAL).

    The reporter is a plain function (a closure), not an object with `__call__`: in CPython 3.11
    calling an instance costs ~80 ns more than calling a function, and a skipped call is meant to
    cost little more than the call itself (one comparison, see Throttle). Its attributes `task`,
    `total` and `throttle` say what it reports on.
    """
    throttle = Throttle(config.PROGRESS_INTERVAL if interval is None else interval)
    _watch(throttle)
    template = str(message)

    def report(current: float, message: str | None = None, *args: Any) -> bool:
        try:  # (free in CPython 3.11 until something raises)
            if current < throttle.check_at:
                return False  # the fast path: the call that sits in the loop
            if not throttle.due(current, total):
                return False
        except (TypeError, ArithmeticError) as exc:
            return _unusable(task, current, total, exc)
        if message is None:
            return _report(task, current, total, _template(template, current, total), (), throttle)
        return _report(task, current, total, message, args, throttle)

    report.task = task  # type: ignore[attr-defined]
    report.total = total  # type: ignore[attr-defined]
    report.throttle = throttle  # type: ignore[attr-defined]
    return report


LANE = "_celery_dashboard_progress"  # the attribute progress() keeps its state in, on the task object


class Lane:
    """progress()'s state for one task object in this process: its fast path's `check_at` (a copy
    of its throttle's, on an object the ticker also cuts short; see Throttle).

    While one run of the task object at a time reports (prefork, solo, or one run at a time on a
    thread, gevent or eventlet pool), the lane's own `check_at` and throttle serve it. When a run
    starts while another run of the same task object has not ended (task_prerun in another thread
    or green thread before the first one's task_postrun), the lane becomes `shared` for good: every
    call then finds its own thread's throttle (the dearer path, ~80 ns more per call).
    """

    __slots__ = ("check_at", "look_at", "throttle", "running", "shared", "__weakref__")

    def __init__(self) -> None:
        self.check_at = NOW  # calls with a smaller current skip the throttle; NOW: the next call looks
        self.look_at = NOW  # what the ticker sets check_at to (the throttle's)
        self.throttle = Throttle(config.PROGRESS_INTERVAL)
        self.running: int | None = None  # get_ident() of the thread whose run is under way
        self.shared = False


def _lane_of(task: Task) -> Lane:
    lane = getattr(task, LANE, None)
    if lane is None:
        lane = Lane()
        setattr(task, LANE, lane)
        _watch(lane)
    return lane


# What the ticker cuts short (the `check_at` of a Lane, and of the Throttle of a Progress reporter or
# of a thread of a shared lane), held weakly: a reporter that is gone is forgotten.
_watched: weakref.WeakSet[Any] = weakref.WeakSet()
_ticking_in: list[int] = []  # the pid of the process whose ticker runs (one per process: prefork forks)
_tried_in: list[int] = []  # the pid of the process that tried to start one


def _watch(holder: Any) -> bool:
    """Let the ticker cut `holder.check_at` short; start this process's ticker if it has none.
    False when this process has no ticker (it could not be started: logged once)."""
    _watched.add(holder)
    pid = os.getpid()
    if _ticking_in[-1:] == [pid]:
        return True
    if _tried_in[-1:] == [pid]:
        return False
    _tried_in[:] = [pid]
    try:
        _start_os_thread(_tick)
    except Exception as exc:  # noqa: BLE001 - without it, every call reads the clock (slower, on time)
        log.warning("progress ticker not started: %r", exc)
        return False
    _ticking_in[:] = [pid]
    return True


def _originals() -> tuple[Callable[..., Any], Callable[[float], None]]:
    """The OS thread start and the blocking sleep, not the green ones of a monkey-patched process:
    the ticker must run while a task holds the CPU, which no greenlet of a gevent or eventlet
    worker does (its hub waits for the task to yield)."""
    import _thread

    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            return monkey.get_original("_thread", "start_new_thread"), monkey.get_original("time", "sleep")
    if "eventlet" in sys.modules:
        from eventlet import patcher

        if patcher.is_monkey_patched("thread"):
            return patcher.original("_thread").start_new_thread, patcher.original("time").sleep
    return _thread.start_new_thread, time.sleep


def _start_os_thread(target: Callable[[], None]) -> None:
    start, _ = _originals()
    start(target, ())


MIN_TICK = 0.005  # seconds: a PROGRESS_INTERVAL of 0 (every call reported) must not spin the ticker


def _tick() -> None:
    """This process's ticker, an OS thread that only sleeps: TICKS_PER_INTERVAL times per
    PROGRESS_INTERVAL, or per the shortest interval of a reporter it watches when that is shorter
    (MIN_TICK at least), it cuts every watched reporter short (`tick`). A tick
    that fails is logged and the next one comes; should the thread end anyway, it says so first:
    every reporter then looks at its next call and starts another ticker (`_ticker_gone`)."""
    _, sleep = _originals()
    warned = False
    period = config.PROGRESS_INTERVAL
    try:
        while True:
            sleep(max(MIN_TICK, period / TICKS_PER_INTERVAL))
            try:
                period = min(config.PROGRESS_INTERVAL, tick())
            except Exception as exc:  # noqa: BLE001 - a reporter's report must not hang on it
                if not warned:
                    log.warning("progress tick failed: %r", exc)
                    warned = True
    finally:
        _ticker_gone()


def _ticker_gone() -> None:
    """No ticker runs in this process (it ended, or this is a forked child, which has none of its
    parent's threads): forget it, and make every reporter look at its next call, which starts one."""
    _ticking_in[:] = []
    _tried_in[:] = []
    try:
        holders = list(_watched)
    except RuntimeError:
        holders = []
    for holder in holders:
        holder.check_at = NOW


os.register_at_fork(after_in_child=_ticker_gone)


def tick() -> float:
    """One tick of the ticker: set `check_at` of every watched reporter to its `look_at` (NOW), so
    that its next call reads the clock (Throttle). A loop's own write of `check_at` at the same
    moment may undo one cut; the next comes a tick later. Returns the shortest interval among
    the watched reporters (`Progress(..., interval=0.02)`), NEVER when there is none: the ticker
    ticks once per that, if it is shorter than PROGRESS_INTERVAL."""
    try:
        holders = list(_watched)
    except RuntimeError:  # the set changed while it was read (another thread added one)
        return NEVER
    shortest = NEVER
    for holder in holders:
        look_at = holder.look_at
        if holder.check_at != look_at:
            holder.check_at = look_at
        interval = getattr(holder, "interval", None)
        if interval is None:  # a Lane: its throttle's
            interval = holder.throttle.interval
        if interval < shortest:
            shortest = interval
    return shortest


# Per-thread throttles, for a task object whose runs overlap (Lane.shared). Each thread also keeps
# its last (task, throttle) at hand: the dictionary's key (a tuple of id() and get_ident()) costs
# more than the rest of a skipped call.
_throttles: dict[tuple[int, int], Throttle] = {}
_last = threading.local()


@task_prerun.connect
def _new_run(sender: Task | None = None, **_: Any) -> None:
    """A run starts (Celery's task_prerun, sent in the thread that runs the task): a fresh throttle."""
    if sender is None:
        return
    me = get_ident()
    _throttles.pop((id(sender), me), None)
    _last.__dict__.pop("entry", None)
    lane = _lane_of(sender)
    _watch(lane)  # (a lane made before this process was forked: its ticker starts here)
    if lane.running is not None and lane.running != me and not lane.shared:
        lane.shared = True  # two runs at once: the one under way keeps its throttle, as its thread's
        _throttles[(id(sender), lane.running)] = lane.throttle
        _watch(lane.throttle)
    lane.running = me
    lane.throttle = Throttle(config.PROGRESS_INTERVAL)
    lane.check_at = lane.look_at = NOW


@task_postrun.connect
def _run_ended(sender: Task | None = None, **_: Any) -> None:
    """A run ended (Celery's task_postrun, sent whether the task succeeded or raised)."""
    if sender is None:
        return
    me = get_ident()
    # An overlapping run's own throttle goes with it: under gevent and eventlet each run is a new
    # greenlet (a new ident), and 17,352 of them were kept, and ticked, after 23,000 runs.
    _throttles.pop((id(sender), me), None)
    entry = getattr(_last, "entry", None)
    if entry is not None and entry[0] is sender:
        _last.__dict__.pop("entry", None)
    lane = getattr(sender, LANE, None)
    if lane is not None and lane.running == me:
        lane.running = None


def _throttle_for(task: Task) -> Throttle:
    key = (id(task), get_ident())
    throttle = _throttles.get(key)
    if throttle is None:
        throttle = _throttles[key] = Throttle(config.PROGRESS_INTERVAL)
        _watch(throttle)
    _last.entry = (task, throttle)
    return throttle


def progress(task: Task, current: float, total: float, message: str = "", *args: Any) -> bool:
    """Report `current` of `total` from inside a bound task; cheap enough for a tight loop.

    `message` may hold `{}` fields filled from `args` only when the report is sent. Returns True
    when the report was sent, False when the throttle skipped it. A skipped call costs one comparison
    with a value kept on the task object (Lane). Called outside a worker (no request id) it
    sends nothing and returns False. In a tight loop a Progress reporter costs less (one argument).
    """
    try:
        lane = task._celery_dashboard_progress
    except AttributeError:
        lane = _lane_of(task)
    try:  # (free in CPython 3.11 until something raises)
        if current < lane.check_at and (current < total or total == 0):
            return False  # the fast path (this call's total counts: it may have dropped, or become known)
        if lane.shared:  # (a shared lane's check_at stays NOW: each thread's throttle decides)
            return _progress_shared(task, current, total, message, args)
        throttle = lane.throttle
        due = throttle.due(current, total)
    except (TypeError, ArithmeticError) as exc:
        return _unusable(task, current, total, exc)
    if not lane.shared:
        lane.look_at, lane.check_at = throttle.look_at, throttle.check_at
    if not due:
        return False
    return _report(task, current, total, message, args, throttle)


def _progress_shared(task: Task, current: float, total: float, message: str, args: tuple[Any, ...]) -> bool:
    """progress() for a task object whose runs overlap: each thread counts down its own throttle."""
    try:
        owner, throttle = _last.entry
        if owner is not task:
            throttle = _throttle_for(task)
    except AttributeError:
        throttle = _throttle_for(task)
    if current < throttle.check_at and (current < total or total == 0):
        return False
    if not throttle.due(current, total):
        return False
    return _report(task, current, total, message, args, throttle)
