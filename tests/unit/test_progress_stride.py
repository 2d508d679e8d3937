"""The progress throttle reads the clock only every few calls in a fast loop, and is never more than
MAX_STRIDE calls late for it (celery_dashboard.reporting.Throttle)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from celery_dashboard import reporting, revocations
from celery_dashboard.reporting import MAX_STRIDE, Throttle


class CountingClock:
    """A clock the test moves on; counts how often it is read."""

    def __init__(self) -> None:
        self.now = 100.0
        self.reads = 0

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


@pytest.mark.parametrize("api", ["reporter", "function"])
def test_a_fast_loop_reads_the_clock_rarely_and_reports_on_time(clock: CountingClock, api: str) -> None:
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
    assert clock.reads <= calls / 8
    times = [when for _, when in task.sent]
    assert task.sent[-1][0] == calls and len(times) == 6  # the first, one per interval, the last
    for earlier, later in zip(times[:-2], times[1:-1], strict=True):
        assert 0.1 <= later - earlier <= 0.1 + MAX_STRIDE * step + 1e-9


def test_a_loop_that_slows_down_reads_the_clock_on_every_call_again(clock: CountingClock) -> None:
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 10_000, interval=0.1)
    for n in range(1, 2001):  # fast: the stride grows
        clock.now += 1e-6
        report(n)
    late = None
    for n in range(2001, 2041):  # then 50 ms per iteration
        clock.now += 0.05
        report(n)
        if late is None and len(task.sent) > 1:
            late = n - 2000
    assert late is not None and late <= MAX_STRIDE
    reads, before = clock.reads, len(task.sent)
    for n in range(2041, 2061):
        clock.now += 0.05
        report(n)
    assert clock.reads - reads == 20 and len(task.sent) - before == 10  # every call reads; one report per 0.1 s


def test_a_clock_that_does_not_move_is_read_on_every_call(clock: CountingClock) -> None:
    task = FakeTask()
    task.clock = clock
    report = reporting.Progress(task, 1000, interval=0.1)
    for n in range(1, 1001):
        report(n)
    assert clock.reads == 1000 and [c for c, _ in task.sent] == [1, 1000]


class RealClock:
    """What FakeTask records as a report's time: the real monotonic clock."""

    reads = 0

    @property
    def now(self) -> float:
        import time

        return time.monotonic()


@pytest.mark.parametrize("api", ["reporter", "function"])
def test_a_loop_that_slows_down_after_a_fast_phase_reports_within_an_interval(api: str) -> None:
    """100,000 quick calls grow the stride to MAX_STRIDE; then each call takes 0.2 s (twice the
    interval). The process's ticker makes the next call read the clock: the first slow report comes
    at the first or second slow call, not after MAX_STRIDE of them (16 calls, 3.2 s here; 160 s for
    a loop of 10 s items)."""
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
    for n in range(100_001, 100_001 + MAX_STRIDE + 4):
        time.sleep(0.2)
        slow_calls += 1
        call(n)
        if len(task.sent) > before:
            break
    assert len(task.sent) > before and slow_calls <= 3, (slow_calls, MAX_STRIDE)
