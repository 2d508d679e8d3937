"""Progress call cost: a task that reports progress on every iteration of a loop, with and without the call.

Uses the real bound task object (`tasks.demo.primes`, with a request pushed on its stack as a
worker does), so `task.request`, `send_event` and `update_state` are Celery's own and do real
work whenever the throttle lets a report through: an event PUBLISH and the revocation check for
every report, a result-backend read and write for those stored (the first, the final value and
one per PROGRESS_STORE_INTERVAL).

    python -m bench.progress_cost --calls 1000000 [--repeats 3]   # what the benchmark's step runs

Loops, each timed with and without its progress call in pairs of runs back to back (the overhead is
the median over the pairs, see `paired`; CPU time of this process, so that time spent waiting for a
CPU on a shared machine is not counted):
- `demo primes`: the demo task's own body, run as written in tasks/demo.py (whatever progress API
  it uses), against the same loop with the progress line removed;
- `progress() in a light loop`: `celery_dashboard.reporting.progress` after an add and a multiply: the cost
  per call of the function API;
- `Progress reporter in a light loop`: the same with `celery_dashboard.reporting.Progress` as the
  README's tight loop calls it, `report(n)` (its message given once, to Progress), and with a
  message and arguments on every call (`report(n, "{} of {} rows", n, total)`);
- `an empty function in a light loop`: the floor, what any Python call with progress()'s arguments costs;
- `... on a 2 us body`: all of them again around a loop body calibrated to take about 2 microseconds
  (the overhead a task author would see on a short but real loop body; the goal is under 5%), and
  the empty functions there too (what any call costs on that body: with progress()'s arguments,
  and with the reporter's one).
Prints one JSON line. `measure(run)` is the benchmark's step: it runs this in a process of its own,
on a Redis database of its own (the reports it lets through must not reach the relays).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def primes_demo(task: Any, calls: int) -> Any:
    """The demo task's body as written: limit = calls + 1 reports on numbers 2..limit."""
    return task.run(limit=calls + 1)


def primes_bare(_: Any, calls: int) -> Any:
    """The same loop without its progress call."""
    from tasks.demo import _is_prime

    count, largest = 0, None
    for n in range(2, calls + 2):
        if _is_prime(n):
            count, largest = count + 1, n
    return {"limit": calls + 1, "count": count, "largest": largest}


def light_bare(_: Any, calls: int) -> int:
    total = 0
    for n in range(1, calls + 1):
        total += n * n
    return total


# progress() is called with a literal message whose fields are filled from its arguments only when a
# report is sent (`progress(self, n, total, "{} of {} rows", n, total)`); the floor's empty function
# gets the same arguments. The reporter is timed as the README's tight loop calls it (`report(n)`,
# the message given once to Progress) and with that message and its arguments on every call.


def light_function(task: Any, calls: int) -> int:
    from celery_dashboard.reporting import progress

    total = 0
    for n in range(1, calls + 1):
        total += n * n
        progress(task, n, calls, "{} of {} rows", n, calls)
    return total


def _no_op(task: Any, current: float, total: float, message: str = "", *args: Any) -> bool:
    return False


def light_floor(task: Any, calls: int) -> int:
    """The floor: an empty function with progress()'s signature, called the same way."""
    total = 0
    for n in range(1, calls + 1):
        total += n * n
        _no_op(task, n, calls, "{} of {} rows", n, calls)
    return total


def light_reporter(task: Any, calls: int) -> int:
    from celery_dashboard.reporting import Progress

    report = Progress(task, calls, message="{} of {} rows")
    total = 0
    for n in range(1, calls + 1):
        total += n * n
        report(n)
    return total


def light_reporter_args(task: Any, calls: int) -> int:
    from celery_dashboard.reporting import Progress

    report = Progress(task, calls)
    total = 0
    for n in range(1, calls + 1):
        total += n * n
        report(n, "{} of {} rows", n, calls)
    return total


def _no_op1(current: float) -> bool:
    return False


def light_floor1(task: Any, calls: int) -> int:
    """The reporter's floor: an empty function with one argument, called the same way."""
    total = 0
    for n in range(1, calls + 1):
        total += n * n
        _no_op1(n)
    return total


# Inner iterations of an add and a multiply that make the 2 us body (set by calibrate()).
_inner = 40


def calibrate(target_ns: float = 2000.0) -> float:
    """Choose the inner loop's length so that one body takes about `target_ns`; its measured ns."""
    global _inner
    body_2us_bare(None, 1, 200_000)  # warm up first: the interpreter specialises the loop, the CPU clocks up
    for _ in range(3):
        start = time.process_time()
        body_2us_bare(None, 1, 50_000)
        per_body = (time.process_time() - start) * 1e9 / 50_000
        _inner = max(1, round(_inner * target_ns / per_body))
    start = time.process_time()
    body_2us_bare(None, 1, 50_000)
    return (time.process_time() - start) * 1e9 / 50_000


def _body(n: int) -> int:
    total = 0
    for i in range(_inner):
        total += i * n
    return total


# On the 2 us body the loop is one long task loop cut in slices (`sliced`): `first` is the slice's
# first value of `n`, the total is never reached, and each reporter is made once and kept across the
# slices, as one reporter serves a whole loop. Only the throttle decides what is sent.
_BIG = 10 ** 9  # a total CPython still compares as a small int, as most totals are
_held: dict[str, Any] = {}


class LoopClock:
    """The throttles' clock on the 2 us body: time.monotonic() without the slices run without the
    call (`pause`, `resume`). A report is due once an interval of the loop's own time has passed, as
    in one unbroken loop: on the wall clock the slices without the call let the interval pass too,
    and a report fell due at the start of nearly every slice with the call, up to twice the steady
    rate once reports came on time (the throttle's pace, reporting._paced)."""

    def __init__(self) -> None:
        self.paused = 0.0
        self.since: float | None = None

    def __call__(self) -> float:
        return time.monotonic() - self.paused

    def pause(self) -> None:
        self.since = time.monotonic()

    def resume(self) -> None:
        if self.since is not None:
            self.paused += time.monotonic() - self.since
            self.since = None


_loop_clock = LoopClock()


def _reporter(task: Any, key: str, **kwargs: Any) -> Any:
    from celery_dashboard.reporting import Progress

    if key not in _held:
        _held[key] = Progress(task, _BIG, **kwargs)
        _held[key].throttle.clock = _loop_clock
    return _held[key]


def body_2us_bare(_: Any, first: int, calls: int) -> int:
    total = 0
    for n in range(first, first + calls):
        total += _body(n)
    return total


def body_2us_floor(task: Any, first: int, calls: int) -> int:
    """The floor on the 2 us body: the empty function with progress()'s signature."""
    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        _no_op(task, n, _BIG, "{} of {} rows", n, _BIG)
    return total


def body_2us_function(task: Any, first: int, calls: int) -> int:
    from celery_dashboard.reporting import progress

    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        progress(task, n, _BIG, "{} of {} rows", n, _BIG)
    return total


def body_2us_fstring(task: Any, first: int, calls: int) -> int:
    """progress() as the README's first example calls it: its message an f-string, formatted by the
    caller on every call (reported beside the goal's rows, not in them: the formatting is the caller's)."""
    from celery_dashboard.reporting import progress

    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        progress(task, n, _BIG, f"{n} of {_BIG} rows")
    return total


def body_2us_reporter(task: Any, first: int, calls: int) -> int:
    """The reporter as the README's tight loop calls it: `report(n)`, its message given once."""
    report = _reporter(task, "reporter", message="{} of {} rows")
    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        report(n)
    return total


def body_2us_reporter_args(task: Any, first: int, calls: int) -> int:
    """The reporter with a message and its arguments on every call."""
    report = _reporter(task, "reporter_args")
    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        report(n, "{} of {} rows", n, _BIG)
    return total


def body_2us_floor1(task: Any, first: int, calls: int) -> int:
    """The reporter's floor on the 2 us body: the empty function with one argument."""
    total = 0
    for n in range(first, first + calls):
        total += _body(n)
        _no_op1(n)
    return total


@contextmanager
def counted_sends() -> Iterator[list[tuple[float, float, bool]]]:
    """celery_dashboard's send_progress, for the block, noting each report sent: (CPU s, wall s,
    whether it was also stored), in the list this yields."""
    from celery_dashboard import reporting as module

    sends: list[tuple[float, float, bool]] = []
    real = module.send_progress

    def counting(task: Any, meta: dict[str, Any], store: bool = True) -> None:
        start, wall = time.process_time(), time.perf_counter()
        real(task, meta, store)
        sends.append((time.process_time() - start, time.perf_counter() - wall, bool(store)))

    module.send_progress = counting
    try:
        yield sends
    finally:
        module.send_progress = real


def _pair(task: Any, with_progress: Callable[[Any, int, int], Any], without: Callable[[Any, int, int], Any],
          first: int, calls: int, with_first: bool) -> dict[str, tuple[float, float]]:
    """One pair of runs of `calls` iterations back to back, the loop without the call and with it
    (`with_first`: in that order), numbered on from `first`: {"without", "with"} -> (CPU s, wall s).
    The throttles' LoopClock is paused while the loop without the call runs."""
    sides: dict[str, tuple[float, float]] = {}
    for side in (("with", "without") if with_first else ("without", "with")):
        body = with_progress if side == "with" else without
        if side == "without":
            _loop_clock.pause()
        start, wall = time.process_time(), time.perf_counter()
        body(task, first, calls)
        sides[side] = (time.process_time() - start, time.perf_counter() - wall)
        _loop_clock.resume()
        first += calls
    return sides


def sliced(with_progress: Callable[[Any, int, int], Any], without: Callable[[Any, int, int], Any], calls: int,
           pairs: int) -> dict[str, Any]:
    """One long loop of the 2 us body with its progress call, `pairs` slices of `calls` iterations,
    each timed back to back with a slice of the same loop without the call (the first of each pair
    alternates). The throttles read the loop's own time (LoopClock: the slices without the call do
    not count), so the reports go out at their steady rate, one per PROGRESS_INTERVAL of the loop
    with the call, as in one unbroken loop. A slice is about one PROGRESS_INTERVAL long, and
    short: this shared machine's speed drifts by several
    per cent from one second to the next, and two slices 0.1 s apart drift alike (one-second runs,
    as this module took before, gave overheads from -9% to +48% for the same call). The figures are
    `paired`'s, on CPU time and (under "wall") wall-clock time; `reports_sent` counts the loop's
    reports, `cpu_ms_per_report` their mean cost (the first apart), `reports_per_s` their rate over
    the loop's time with the call."""
    from celery_dashboard import reporting as module
    from tasks import demo  # noqa: F401 - registers the task
    from tasks.celery_app import celery_app

    task = celery_app.tasks["tasks.demo.primes"]
    task.push_request(id=str(uuid.uuid4()), retries=0, hostname="bench@throttle",
                      delivery_info={"routing_key": "celery"})
    module._lane_of(task).throttle.clock = _loop_clock  # progress()'s throttle (no task_prerun here)
    cpu: list[tuple[float, float]] = []
    walls: list[tuple[float, float]] = []
    first = 1
    try:
        with counted_sends() as sends:
            for n in range(pairs):
                sides = _pair(task, with_progress, without, first, calls, with_first=n % 2 == 1)
                first += 2 * calls
                cpu.append((sides["without"][0], sides["with"][0]))
                walls.append((sides["without"][1], sides["with"][1]))
    finally:
        task.pop_request()
    costs = [1000 * cpu_s for cpu_s, _, _ in sends]
    with_s = sum(w for _, w in walls)
    return {"calls": calls, "pairs": pairs, **paired(cpu, calls), "wall": paired(walls, calls),
            "reports_sent": len(costs), "reports_stored": None,
            "reports_per_s": round(len(costs) / with_s, 1) if with_s else None,
            "cpu_ms_per_report": round(sum(costs[1:]) / len(costs[1:]), 2) if len(costs) > 1 else None,
            "final_value_stored": None}


BLOCK = 500  # iterations of the ~2 us body per block: about a millisecond (see blocked)


def median_interval(values: list[float]) -> list[float] | None:
    """The 95% confidence interval of the median of `values`, from their order statistics (ranks
    n/2 -+ 0.98 sqrt(n), the distribution-free interval for a median); None under 20 values."""
    if len(values) < 20:
        return None
    ordered = sorted(values)
    n = len(ordered)
    low = max(0, math.floor(n / 2 - 0.98 * math.sqrt(n)))
    high = min(n - 1, math.ceil(n / 2 + 0.98 * math.sqrt(n)))
    return [ordered[low], ordered[high]]


def blocked(with_progress: Callable[[Any, int, int], Any], without: Callable[[Any, int, int], Any],
            seconds: float, block: int = BLOCK) -> dict[str, Any]:
    """The overhead on the ~2 us body, everything counted: the loop is cut in blocks of `block`
    iterations (about a millisecond), each timed back to back with a block of the same loop without
    the call (the first of each pair alternates), for `seconds`. The figure is the ratio of sums
    over every pair, reports, ticks and clock reads included: sum(with) / sum(without) - 1 (the
    costs add up; a median would leave out the ~1% of blocks that hold a report or a look), with a
    95% interval from the pairs' spread (`ratio_of_sums`). Two blocks a millisecond apart run at the
    same machine speed, which two 0.1 s slices (`sliced`) on this shared machine do not.

    Beside it, for reading only: the median over the pairs whose block sent no report (what a
    skipped call costs), and the reports sent, each one's CPU and wall time measured around the
    send, as a share of the loop's time. CPU figures are this process's CPU time (process_time: the
    ticker thread's work included, in both sides alike), "wall" the same on wall-clock time. The
    throttles read the loop's own time (LoopClock), so reports go out at one per PROGRESS_INTERVAL
    of the loop with the call, as in one unbroken loop."""
    from celery_dashboard import reporting as module
    from tasks import demo  # noqa: F401 - registers the task
    from tasks.celery_app import celery_app

    task = celery_app.tasks["tasks.demo.primes"]
    task.push_request(id=str(uuid.uuid4()), retries=0, hostname="bench@throttle",
                      delivery_info={"routing_key": "celery"})
    module._lane_of(task).throttle.clock = _loop_clock  # progress()'s throttle (no task_prerun here)
    cpu: list[tuple[float, float, bool]] = []  # (without s, with s, the block with the call sent a report)
    walls: list[tuple[float, float, bool]] = []
    first = 1
    deadline = time.monotonic() + seconds
    try:
        with counted_sends() as sends:
            while time.monotonic() < deadline:
                before = len(sends)
                sides = _pair(task, with_progress, without, first, block, with_first=len(cpu) % 2 == 1)
                sent = len(sends) > before  # (only the side with the call reports)
                first += 2 * block
                cpu.append((sides["without"][0], sides["with"][0], sent))
                walls.append((sides["without"][1], sides["with"][1], sent))
    finally:
        task.pop_request()
    return {"block": block, "seconds": seconds, "pairs": len(cpu),
            # the body's own time as it ran here (the calibration's machine speed may have changed since)
            "body_ns": round(1e9 * sum(b for b, _, _ in cpu) / (len(cpu) * block), 1) if cpu else None,
            "pairs_with_a_report": sum(1 for *_, sent in cpu if sent), "reports_sent": len(sends),
            **ratio_of_sums(cpu, [c for c, _, _ in sends]), "wall": ratio_of_sums(walls, [w for _, w, _ in sends])}


def ratio_of_sums(pairs: list[tuple[float, float, bool]], sends: list[float]) -> dict[str, Any]:
    """`blocked`'s figure from its pairs, (without s, with s, whether the block with the call sent a
    report), and the seconds of each report sent: `overhead_percent`, 100 * (sum(with) /
    sum(without) - 1) over every pair, and its 95% interval (`interval_percent`: the ratio -+ 1.96
    standard errors, the delta method's, from the pairs' residuals with - ratio * without; None
    under 20 pairs); beside it, the median over the pairs without a report
    (`skipped_calls_percent`), and the reports' seconds as a share of the time without the call
    (`reports_percent`, `ms_per_report`)."""
    if not pairs:
        return {"overhead_percent": None, "interval_percent": None, "skipped_calls_percent": None,
                "reports_percent": None, "ms_per_report": None}
    bare = sum(b for b, _, _ in pairs)
    ratio = sum(w for _, w, _ in pairs) / bare
    n = len(pairs)
    interval = None
    if n >= 20:
        residuals = [w - ratio * b for b, w, _ in pairs]
        error = statistics.stdev(residuals) / math.sqrt(n) / (bare / n)
        interval = [round(100 * (ratio - 1 - 1.96 * error), 2), round(100 * (ratio - 1 + 1.96 * error), 2)]
    quiet = [100 * (w - b) / b for b, w, sent in pairs if not sent and b > 0]
    return {"overhead_percent": round(100 * (ratio - 1), 2), "interval_percent": interval,
            "skipped_calls_percent": round(statistics.median(quiet), 2) if quiet else None,
            "reports_percent": round(100 * sum(sends) / bare, 2),
            "ms_per_report": round(1000 * sum(sends) / len(sends), 3) if sends else None}


def timed(body: Callable[[Any, int], Any], calls: int) -> dict[str, Any]:
    from tasks import demo  # noqa: F401 - registers the task
    from tasks.celery_app import celery_app

    task = celery_app.tasks["tasks.demo.primes"]
    task_id = str(uuid.uuid4())
    task.push_request(id=task_id, retries=0, hostname="bench@throttle", delivery_info={"routing_key": "celery"})
    try:
        start, wall = time.process_time(), time.perf_counter()
        body(task, calls)
        elapsed, wall = time.process_time() - start, time.perf_counter() - wall
    finally:
        task.pop_request()
    meta = celery_app.backend.get_task_meta(task_id)
    info = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    return {"seconds": elapsed, "wall_s": wall, "reported": meta.get("status") == "PROGRESS",
            "final_stored": meta.get("status") == "PROGRESS" and info.get("current") == info.get("total")}


def reports_sent(body: Callable[[Any, int], Any], calls: int) -> tuple[int, int, float | None]:
    """How many reports one run sends, how many of them it also stores in the result backend
    (Throttle.store), and the CPU ms a report took on average (the event, the revocation check and,
    for those stored, the stored state), the first of the run apart: (sent, stored, mean ms)."""
    with counted_sends() as sends:
        timed(body, calls)
    costs = [1000 * cpu_s for cpu_s, _, _ in sends]
    stored = sum(1 for *_, was_stored in sends if was_stored)
    return len(costs), stored, (round(sum(costs[1:]) / len(costs[1:]), 2) if len(costs) > 1 else None)


def paired(pairs: list[tuple[float, float]], calls: int) -> dict[str, Any]:
    """The overhead from (without_s, with_s) pairs timed back to back: the median over the pairs of
    (with - without) / without, and of (with - without) / calls in ns; with the pairs' range.

    Each pair's two runs are seconds apart, so a machine that slows down or speeds up for a while (a
    shared virtual machine) changes both alike; the best run of each side, as this module took before,
    compared runs timed up to a minute apart (one run gave an empty call +5.9% on the 2 us body, against
    +1% in the runs before and after it)."""
    overheads = sorted(100 * (with_s - without_s) / without_s for without_s, with_s in pairs)
    extra_ns = sorted(1e9 * (with_s - without_s) / calls for without_s, with_s in pairs)
    return {"overhead_percent": round(statistics.median(overheads), 1),
            "ns_per_call": round(statistics.median(extra_ns), 1),
            "overhead_range_percent": [round(overheads[0], 1), round(overheads[-1], 1)],
            "overheads_percent": [round(o, 1) for o in overheads],
            "without_s": round(statistics.median(p[0] for p in pairs), 3),
            "with_s": round(statistics.median(p[1] for p in pairs), 3)}


def measure(with_progress: Callable[[Any, int], Any], without: Callable[[Any, int], Any], calls: int,
            repeats: int) -> dict[str, Any]:
    """`repeats` pairs of runs, the loop without its progress call and with it, back to back; the
    first of each pair alternates (without first, then with first), so that neither side always
    runs on a CPU the other has just warmed. The figures are `paired`'s, on CPU time (the process's:
    what the reports cost this process to compute) and under "wall" on wall-clock time (also the
    waits for Redis's replies that a report's sends block the task on: what the user's task takes)."""
    pairs: list[tuple[float, float]] = []
    walls: list[tuple[float, float]] = []
    final = True
    for n in range(repeats):
        if n % 2 == 0:
            bare = timed(without, calls)
            run = timed(with_progress, calls)
        else:
            run = timed(with_progress, calls)
            bare = timed(without, calls)
        pairs.append((bare["seconds"], run["seconds"]))
        walls.append((bare["wall_s"], run["wall_s"]))
        final = final and run["final_stored"]
    sent, stored, per_report = reports_sent(with_progress, calls)
    return {"calls": calls, "pairs": repeats, **paired(pairs, calls), "wall": paired(walls, calls),
            "reports_sent": sent, "reports_stored": stored, "cpu_ms_per_report": per_report,
            "final_value_stored": final,
            "runs_without_s": [round(p[0], 3) for p in pairs], "runs_with_s": [round(p[1], 3) for p in pairs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from celery_dashboard import settings as config
    from tasks import demo

    source = inspect.getsource(demo.primes.run)
    result: dict[str, Any] = {
        "progress_interval_s": config.PROGRESS_INTERVAL,
        "demo_primes_source": source[source.index("def "):][:700],
        "primes": measure(primes_demo, primes_bare, args.calls, args.repeats),
        "light": measure(light_function, light_bare, args.calls, args.repeats),
    }
    result["light_reporter"] = measure(light_reporter, light_bare, args.calls, args.repeats)
    result["light_reporter_args"] = measure(light_reporter_args, light_bare, args.calls, args.repeats)
    result["light_floor"] = measure(light_floor, light_bare, args.calls, args.repeats)
    result["light_floor1"] = measure(light_floor1, light_bare, args.calls, args.repeats)
    body_calls = 50_000  # a slice of about 0.1 s (PROGRESS_INTERVAL): see sliced
    result["body_ns"] = round(calibrate(), 1)
    result["body_inner_iterations"] = _inner
    pairs = 20 * args.repeats + 1 if args.repeats > 1 else 7  # the goal's body: many short pairs (quick: 7)
    for key, body in (("body_2us", body_2us_function), ("body_2us_reporter", body_2us_reporter),
                      ("body_2us_reporter_args", body_2us_reporter_args), ("body_2us_floor", body_2us_floor),
                      ("body_2us_floor1", body_2us_floor1), ("body_2us_fstring", body_2us_fstring)):
        result[key] = sliced(body, body_2us_bare, body_calls, pairs)
    # The goal's figures: the same loops in millisecond blocks, the reports' cost measured apart (blocked).
    block_s = 8.0 if args.repeats > 1 else 2.0
    result["blocks"] = {key: blocked(body, body_2us_bare, block_s)
                        for key, body in (("body_2us", body_2us_function), ("body_2us_reporter", body_2us_reporter),
                                          ("body_2us_reporter_args", body_2us_reporter_args),
                                          ("body_2us_floor", body_2us_floor), ("body_2us_floor1", body_2us_floor1))}
    print(json.dumps(result), flush=True)


def step(run: Any) -> dict[str, Any]:
    """The benchmark's step: this module in a process of its own, on Redis database 2; its JSON."""
    import subprocess

    from bench.harness import PYTHON
    from devstack import ROOT
    from devstack.stack import db_url

    cfg = run.p["progress_cost"]
    env = dict(run.stack.env, REDIS_URL=db_url(run.stack.redis_url, 2))
    done = subprocess.run([PYTHON, "-m", "bench.progress_cost", "--calls", str(cfg["calls"]),
                           "--repeats", str(cfg["repeats"])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
