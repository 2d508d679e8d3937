"""A skipped progress call reads no clock: the throttle looks at the time about once per report,
where the loop's pace says the next one is due, and the process's ticker makes every reporter look
once per interval, for a loop that slowed down. A report due is on time at a steady pace, and late
by at most an interval and one call however the pace changes (celery_dashboard.reporting.Throttle)."""
from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from celery_dashboard import reporting, revocations
from celery_dashboard.reporting import TICKS_PER_INTERVAL, Throttle
from tests.unit.test_progress import FakeClock

TICK = 0.1 / TICKS_PER_INTERVAL  # at PROGRESS_INTERVAL 0.1 s


class CountingClock(FakeClock):
    """test_progress's clock (moving it past a tick's boundary is the ticker ticking meanwhile, as
    the ticker thread does in real time), counting how often it is read."""

    reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class FakeTask:
    name = "tests.fake"
    app = None

    def __init__(self) -> None:
        self.request = SimpleNamespace(id="t1", retries=0, is_eager=False)
        self.sent: list[tuple[float, float]] = []  # (progress current, clock time when sent)
        self.clock: CountingClock | None = None

    def send_event(self, kind: str, **fields: Any) -> None:
        assert self.clock is not None
        self.sent.append((fields["progress"]["current"], self.clock.now))

    def update_state(self, state: str, meta: dict[str, Any]) -> None:
        pass


@pytest.fixture(autouse=True)
def in_memory_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "_client", fakeredis.FakeRedis(server=fakeredis.FakeServer()))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> CountingClock:
    clock = CountingClock()
    monkeypatch.setattr(reporting, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(reporting, "_throttles", {})
    return clock


@pytest.mark.parametrize("ticks", [True, False], ids=["ticking", "paced-alone"])
@pytest.mark.parametrize("api", ["reporter", "function"])
def test_a_steady_loop_reads_the_clock_about_once_a_report_and_reports_on_time(
        api: str, ticks: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a steady pace the loop looks when a report is due, on time to the call, with or without
    the ticker's looks (without them, and without the pace, only the first and last are sent)."""
    clock = CountingClock(ticks=ticks)
    monkeypatch.setattr(reporting, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(reporting, "_throttles", {})
    task = FakeTask()
    task.clock = clock
    calls, step = 50_000, 10e-6  # 10 us per iteration: 0.5 s in all, a report due every 0.1 s
    report = reporting.Progress(task, calls, interval=0.1)
    for n in range(1, calls + 1):
        clock.now += step
        if api == "reporter":
            report(n)
        else:
            reporting.progress(task, n, calls)
    # the first call, the next (its pace), at most two a report (a pace rounded down looks a call
    # early) and a tick's look each interval, the final value
    assert clock.reads <= 2 + 5 * (2 + ticks) + 1
    times = [when for _, when in task.sent]
    assert task.sent[-1][0] == calls and len(times) == 6  # the first, one per interval, the last
    for earlier, later in zip(times[:-2], times[1:-1], strict=True):
        assert 0.1 - 1e-9 <= later - earlier <= 0.1 + step + 1e-9


@pytest.mark.parametrize("current", [7, 7.5, "decimal"])
def test_a_current_with_no_pace_waits_for_the_ticker(clock: CountingClock, current: Any) -> None:
    """A `current` that does not rise (a loop reporting a phase's message at the same value), or that
    is not an int or a float, has no pace: the ticker's look, once an interval, finds its reports
    due, late by at most that interval."""
    from decimal import Decimal

    value = Decimal("7.5") if current == "decimal" else current
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 100, interval=0.1)
    for _ in range(5000):  # 0.5 s at 100 us a call
        clock.now += 100e-6
        report(value, "phase {}", 1)
    times = [when for _, when in task.sent]
    assert 5 <= len(times) <= 6
    for earlier, later in zip(times, times[1:], strict=False):
        assert 0.1 - 1e-9 <= later - earlier <= 0.1 + TICK + 100e-6 + 1e-9


def test_a_pace_is_never_past_the_total_nor_an_int_total_s_check_a_float(clock: CountingClock) -> None:
    """The final value is still looked at at once (the pace stops at the total), and an int total's
    check stays an int when the current is a float (CPython's fast comparison of two small ints)."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 1000, interval=0.1)
    report(1)
    clock.now += 0.001
    report(2)  # the pace: 1 a millisecond, so 100 more by the next report's time
    assert 2 + 98 <= report.throttle.check_at <= 2 + 99  # 0.099 s left, rounded down
    clock.now += 0.05
    report(900)  # a jump: 898 in 50 ms, and 49 ms left would put it past the total
    assert report.throttle.check_at == 1000
    floats = reporting.Progress(FakeTask(), 1000, interval=0.1)
    floats(0.5)
    clock.now += 0.001
    floats(1.5)  # float currents keep a float check (two floats compare fast too), not rounded down
    assert type(floats.throttle.check_at) is float and 100.4 < floats.throttle.check_at < 100.6


@pytest.mark.parametrize("total", [1, 100, 0])
def test_float_currents_with_an_int_total_look_about_once_a_report(clock: CountingClock, total: int) -> None:
    """Review finding: "fraction done" (`report(n / N)` with total 1) or a percent of 100 rounded the
    pace down to a whole number, and every call between it and the due point read the clock
    (917,110 reads in 1,000,000 calls); negative fractions rounded toward zero, and came late."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, total, interval=0.1)
    calls, step = 50_000, 10e-6
    for n in range(calls):
        clock.now += step
        report((total or 1) * n / calls - (1 if total == 0 else 0))
    sent = len(task.sent)
    assert 5 <= sent <= 6
    assert clock.reads <= 3 * sent + 3
    times = [when for _, when in task.sent]
    for earlier, later in zip(times, times[1:], strict=False):
        assert later - earlier <= 0.1 + step + 1e-9


@pytest.mark.parametrize("current", [float("-inf"), float("nan"), float("inf")])
def test_a_current_that_is_not_finite_never_fails_the_task(clock: CountingClock, current: float) -> None:
    """Review finding: -inf as a run's first current with an int total raised OverflowError."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 100)
    for _ in range(3):
        clock.now += 0.05
        assert report(current) in (True, False)
        assert reporting.progress(task, current, 100) in (True, False)


@pytest.mark.parametrize("current, total", [(Decimal("NaN"), 100), ("7", 100), (7, None), (None, 10)])
def test_a_current_or_total_that_does_not_compare_sends_nothing_and_never_fails_the_task(
        clock: CountingClock, current: Any, total: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Decimal('NaN') raises InvalidOperation when compared; a str or None, TypeError: the call
    sends nothing and the task goes on; the first such call of the process is logged."""
    reporting._warned_unusable.clear()
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, total)
    assert report(current) is False and reporting.progress(task, current, total) is False
    assert task.sent == [] and "do not compare" in caplog.text


def test_a_float_current_far_below_zero_with_an_int_total_still_reports_each_interval(clock: CountingClock) -> None:
    """Review finding (older): the ticker cut an int total's check to -(2**30 - 1), which a float
    current of -5e9 stays below: after the first, no report was ever sent."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 100, interval=0.1)
    for _ in range(5000):
        clock.now += 100e-6
        report(-5e9)
    assert 5 <= len(task.sent) <= 6


def test_after_a_slowdown_the_tick_s_look_measures_the_new_pace(clock: CountingClock) -> None:
    """Review finding: the tick's look took the pace since the last look, an average over the fast
    phase, so the report after it was late. A look before the point the last one aimed at now
    measures the pace at the next call, and the reports stay on time to the call."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 10 ** 9, interval=0.1)
    clock.now += 0.05  # the ticker's phase is not the reports': here half an interval apart
    n = 0
    for _ in range(150_000):  # 1 us a call
        n += 1
        clock.now += 1e-6
        report(n)
    slow_from = len(task.sent)
    for _ in range(200):  # then 5 ms a call, 1 s
        n += 1
        clock.now += 5e-3
        report(n)
    times = [when for _, when in task.sent[slow_from - 1:]]  # from the fast phase's last report
    assert len(times) >= 10
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(gap <= 0.1 + 5e-3 + 1e-6 for gap in gaps), gaps  # on time to the call (0.155 s before)


def test_the_ticker_ticks_at_the_shortest_interval_of_a_reporter_it_watches() -> None:
    """Review finding: a reporter of its own shorter interval (0.02 s) that slowed down was late by
    the ticker's 0.1 s, five of its intervals, at every report."""
    short = reporting.Progress(FakeTask(), 1000, interval=0.02)
    assert reporting.tick() == 0.02
    del short
    import gc

    gc.collect()
    assert reporting.tick() != 0.02  # held weakly: gone with its reporter


def test_a_loop_that_slows_down_reports_within_a_tick_of_each_interval(clock: CountingClock) -> None:
    """After a fast phase the pace puts the next look thousands of calls away; the ticker's look
    finds the slow pace, and the reports stay within a tick of their interval."""
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 10_000, interval=0.1)
    for n in range(1, 2001):  # fast
        clock.now += 1e-6
        report(n)
    sent_fast = len(task.sent)
    for n in range(2001, 2041):  # then 50 ms per iteration: a report every second call
        clock.now += 0.05
        report(n)
    times = [when for _, when in task.sent[sent_fast - 1:]]
    assert len(times) >= 20
    for earlier, later in zip(times, times[1:], strict=False):
        assert 0.1 - 1e-9 <= later - earlier <= 0.1 + TICK + 0.05 + 1e-9


def test_between_ticks_a_skipped_call_reads_no_clock() -> None:
    """No tick at all (the clock does not move): the first call, the next one (which finds no pace)
    and the final value are the only looks."""
    clock = CountingClock(ticks=False)
    task = FakeTask()
    task.clock = clock
    original = reporting.Throttle
    reporting.Throttle = lambda interval: original(interval, clock)  # type: ignore[assignment,misc]
    try:
        report = reporting.Progress(task, 1000, interval=0.1)
        for n in range(1, 1001):
            report(n)
    finally:
        reporting.Throttle = original  # type: ignore[misc]
    assert clock.reads == 3 and [c for c, _ in task.sent] == [1, 1000]


def test_without_a_ticker_every_call_reads_the_clock_and_reports_stay_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process where the ticker thread cannot be started: nothing cuts the skipping short, so the
    throttle does not skip; reports go out on time at the dearer price (and a warning says why)."""
    clock = CountingClock(ticks=False)
    monkeypatch.setattr(reporting, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(reporting, "_ticking_in", [])
    monkeypatch.setattr(reporting, "_tried_in", [])

    def refuse(target: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(reporting, "_start_os_thread", refuse)
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 1000, interval=0.1)
    for n in range(1, 101):
        clock.now += 0.01
        report(n)
    assert clock.reads == 100
    assert [c for c, _ in task.sent] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]


class RealClock:
    """What FakeTask records as a report's time: the real monotonic clock."""

    reads = 0

    @property
    def now(self) -> float:
        import time

        return time.monotonic()


@pytest.mark.parametrize("api", ["reporter", "function"])
def test_a_loop_that_slows_down_after_a_fast_phase_reports_within_an_interval(api: str) -> None:
    """100,000 quick calls, then each call takes 0.2 s (twice the interval), on the real clock with
    the real ticker thread: the first slow report comes at the first or second slow call."""
    import time

    task = FakeTask()
    task.clock = RealClock()  # type: ignore[assignment]
    total = 1_000_000
    report = reporting.Progress(task, total)
    call = report if api == "reporter" else (lambda n: reporting.progress(task, n, total))
    for n in range(1, 100_001):
        call(n)
    before = len(task.sent)
    slow_calls = 0
    for n in range(100_001, 100_021):
        time.sleep(0.2)
        slow_calls += 1
        call(n)
        if len(task.sent) > before:
            break
    assert len(task.sent) > before and slow_calls <= 2, slow_calls


def test_a_tick_keeps_an_int_total_s_check_an_int_and_a_float_total_s_a_float(clock: CountingClock) -> None:
    """The skipped call's comparison is CPython's fast one for two small ints only while both stay
    ints: a tick that set a float (-inf) cost a third of the call in a tight loop (deoptimised)."""
    ints = reporting.Progress(FakeTask(), 1000)
    floats = reporting.Progress(FakeTask(), 1.0)
    ints(1), floats(0.001)
    reporting.tick()
    assert type(ints.throttle.check_at) is int and ints.throttle.check_at < 0
    assert floats.throttle.check_at == float("-inf")
    assert ints(2) is False and floats(0.002) is False  # looked (not yet due) and skips again
    assert (ints.throttle.check_at, floats.throttle.check_at) == (1000, 1.0)


def test_a_forked_child_reports_with_a_ticker_of_its_own() -> None:
    """A child process has none of its parent's threads: it forgets the parent's ticker, its
    reporters look at their next call, and that call starts the child's own (a review found a
    forked child's 2,500 calls sent nothing)."""
    import os
    import time

    task = FakeTask()
    task.clock = RealClock()  # type: ignore[assignment]
    report = reporting.Progress(task, 10 ** 9)
    report(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: half a second of calls, then how many reports it sent
        try:
            sent_before = len(task.sent)
            until, n = time.monotonic() + 0.5, 1
            while time.monotonic() < until:
                n += 1
                report(n)
                time.sleep(0.0005)
            os.write(write, str(len(task.sent) - sent_before).encode())
        finally:
            os._exit(0)
    os.close(write)
    sent_in_child = int(os.read(read, 100) or b"0")
    os.waitpid(pid, 0)
    assert sent_in_child >= 3  # about one per 0.1 s


def test_a_ticker_that_is_gone_makes_every_reporter_look_and_the_next_call_starts_another() -> None:
    task = FakeTask()
    task.clock = RealClock()  # type: ignore[assignment]
    report = reporting.Progress(task, 1000)
    report(1)
    report(2)  # the pace: looked twice, and skips now
    assert report.throttle.check_at > 2
    reporting._ticker_gone()  # what the ticker thread does when it ends (or a fork's child)
    assert report.throttle.check_at == reporting.NOW and reporting._ticking_in == []
    report(2)  # looks: starts this process's ticker again
    import os

    assert reporting._ticking_in == [os.getpid()]


def test_a_negative_progress_interval_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative interval made the ticker's sleep raise and the thread die: every report after a
    run's first was lost. It is now refused when the settings are read."""
    from celery_dashboard import settings

    monkeypatch.setenv("PROGRESS_INTERVAL", "-1")
    with pytest.raises(RuntimeError, match="PROGRESS_INTERVAL must be at least 0"):
        settings.number("PROGRESS_INTERVAL", 0.1, minimum=0)
    monkeypatch.setenv("PROGRESS_INTERVAL", "0")
    assert settings.number("PROGRESS_INTERVAL", 0.1, minimum=0) == 0.0
