from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from celery.exceptions import Ignore

from celery_dashboard import reporting as progress_module
from celery_dashboard import revocations
from celery_dashboard.reporting import SENT_KEY, Throttle, progress, progress_meta


class FakeClock:
    """A clock the test moves on. Time passing is also the process's ticker ticking: moving the
    clock past a tick's boundary (PROGRESS_INTERVAL / TICKS_PER_INTERVAL) ticks (reporting.tick), as the
    ticker thread would have meanwhile."""

    def __init__(self, ticks: bool = True) -> None:
        self._now = 100.0
        self.ticks = ticks

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        step = progress_module.config.PROGRESS_INTERVAL / progress_module.TICKS_PER_INTERVAL
        if self.ticks and value // step > self._now // step:
            progress_module.tick()
        self._now = value

    def __call__(self) -> float:
        return self._now


class FakeTask:
    """Records what a bound Celery task would send and store."""

    name = "tests.fake"
    app = None  # the revocation checks read the in-memory Redis below

    def __init__(self, task_id: str | None = "t1") -> None:
        self.request = SimpleNamespace(id=task_id, retries=0, is_eager=False)
        self.events: list[dict[str, Any]] = []
        self.states: list[tuple[str, Any]] = []
        self.backend = self

    def send_event(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, **fields})

    def update_state(self, state: str, meta: dict[str, Any]) -> None:
        self.states.append((state, meta))

    def mark_as_revoked(self, task_id: str, reason: str = "", request: Any = None) -> None:
        assert task_id == self.request.id
        self.states.append(("REVOKED", reason))


@pytest.fixture(autouse=True)
def redis_server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    """The Redis the revocation checks read: in memory."""
    server = fakeredis.FakeServer()
    monkeypatch.setattr(revocations, "_client", fakeredis.FakeRedis(server=server))
    return server


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(progress_module, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(progress_module, "_throttles", {})
    return clock


def test_throttle_sends_first_call_then_one_per_interval() -> None:
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    assert throttle.due(1, 100)
    assert not throttle.due(2, 100)
    clock.now += 0.05
    assert not throttle.due(3, 100)
    clock.now += 0.06
    assert throttle.due(4, 100)
    assert throttle.sent == 2


def test_throttle_always_sends_the_final_value() -> None:
    clock = FakeClock()
    throttle = Throttle(10.0, clock)
    assert throttle.due(1, 5)
    assert not throttle.due(4, 5)
    assert throttle.due(5, 5)


def test_a_million_calls_in_one_interval_send_two() -> None:
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    sent = sum(throttle.due(i, 1_000_000) for i in range(1, 1_000_001))
    assert sent == 2  # the first and the final value


def test_progress_meta_shape_and_bounds() -> None:
    assert progress_meta(3, 10, "page 3 of 10") == {
        "current": 3, "total": 10, "percent": 30.0, "message": "page 3 of 10"}
    assert progress_meta(12, 10)["percent"] == 100.0
    assert progress_meta(0, 0)["percent"] == 0.0
    assert len(progress_meta(1, 2, "x" * 5000)["message"]) == progress_module.MAX_MESSAGE


def test_progress_pushes_an_event_and_stores_the_state(monkeypatch: Any) -> None:
    clock = FakeClock()
    monkeypatch.setattr(progress_module, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(progress_module, "_throttles", {})
    task = FakeTask()
    for i in range(1, 11):
        progress(task, i, 10, f"step {i} of 10")
    # The first call and the final one go out; the eight between fall inside one interval.
    assert [e["progress"]["current"] for e in task.events] == [1, 10]
    assert task.events[-1]["type"] == "task-progress"
    assert task.events[-1]["progress"]["message"] == "step 10 of 10"
    # Stored with the time the event says it was sent: a later read of the backend can be ordered.
    assert task.states[-1] == ("PROGRESS", {**task.events[-1]["progress"], SENT_KEY: task.events[-1]["sent"]})


def test_progress_outside_a_worker_sends_nothing() -> None:
    task = FakeTask(task_id=None)
    progress(task, 1, 1)
    assert task.events == [] and task.states == []


def test_a_new_run_starts_with_a_fresh_throttle(monkeypatch: Any) -> None:
    clock = FakeClock()
    monkeypatch.setattr(progress_module, "Throttle", lambda interval: Throttle(interval, clock))
    monkeypatch.setattr(progress_module, "_throttles", {})
    task = FakeTask()
    assert progress(task, 1, 10)
    assert not progress(task, 2, 10)
    progress_module._new_run(sender=task)  # Celery's task_prerun: the next run of this task
    assert progress(task, 1, 10)


def test_progress_object_formats_the_message_only_when_it_sends(monkeypatch: Any) -> None:
    clock = FakeClock()
    monkeypatch.setattr(progress_module, "Throttle", lambda interval: Throttle(interval, clock))
    task = FakeTask()
    report = progress_module.Progress(task, 100)
    formatted = []

    class Spy:
        def __format__(self, spec: str) -> str:
            formatted.append(spec)
            return "x"

    for i in range(1, 101):
        report(i, "{} done", Spy())
    assert [e["progress"]["current"] for e in task.events] == [1, 100]
    assert len(formatted) == 2 and task.events[-1]["progress"]["message"] == "x done"


def test_a_progress_report_that_cannot_be_sent_does_not_fail_the_task() -> None:
    class Unreachable(FakeTask):
        def send_event(self, kind: str, **fields: Any) -> None:
            raise ConnectionError("redis is down")

    task = Unreachable()
    assert progress(task, 1, 1) is True  # reported as due, and the task goes on


def test_a_revoked_task_stops_at_its_next_sent_report(clock: FakeClock) -> None:
    task = FakeTask()
    assert progress(task, 1, 100)
    revocations.revoke(revocations._client, "t1")
    for i in range(2, 50):  # inside the interval: skipped, so not checked, and the task goes on
        assert not progress(task, i, 100)
    clock.now += 1
    with pytest.raises(Ignore):
        progress(task, 50, 100)
    assert task.states[-1] == ("REVOKED", "revoked")
    assert task.events[-1] == {"type": "task-revoked", "terminated": True, "signum": None, "expired": False}
    assert [e["progress"]["current"] for e in task.events if e["type"] == "task-progress"] == [1]


def test_the_final_report_also_checks(clock: FakeClock) -> None:
    task = FakeTask()
    assert progress(task, 1, 10)
    revocations.revoke(revocations._client, "t1")
    with pytest.raises(Ignore):
        progress(task, 10, 10)  # no time has passed: only the final value is due
    assert task.states[-1][0] == "REVOKED"


def test_the_progress_object_is_a_cancel_point_too(clock: FakeClock) -> None:
    task = FakeTask()
    report = progress_module.Progress(task, 10)
    revocations.revoke(revocations._client, "t1")
    with pytest.raises(Ignore):
        report(1, "first")
    assert [s for s, _ in task.states] == ["REVOKED"]


def test_a_body_that_swallows_the_stop_is_stopped_again_without_a_second_revocation(clock: FakeClock) -> None:
    task = FakeTask()
    revocations.revoke(revocations._client, "t1")
    with pytest.raises(Ignore):
        progress(task, 1, 10)
    clock.now += 1
    with pytest.raises(Ignore):
        progress(task, 2, 10)
    assert [s for s, _ in task.states] == ["REVOKED"]
    assert [e["type"] for e in task.events] == ["task-revoked"]


def test_another_tasks_revocation_does_not_stop_this_one(clock: FakeClock) -> None:
    task = FakeTask()
    revocations.revoke(revocations._client, "t2")
    assert progress(task, 10, 10)
    assert task.states[-1][0] == "PROGRESS"


def test_an_expired_revocation_does_not_stop_the_task(clock: FakeClock) -> None:
    task = FakeTask()
    revocations.revoke(revocations._client, "t1", ttl=10, now=1000)
    assert progress(task, 10, 10)


def test_a_revocation_check_without_redis_never_fails_the_task(clock: FakeClock, redis_server: Any,
                                                               caplog: Any) -> None:
    task = FakeTask()
    redis_server.connected = False
    with caplog.at_level(logging.WARNING):
        assert progress(task, 10, 10)
    assert task.states[-1][0] == "PROGRESS"  # the report itself went out
    assert "revocation of t1 not checked" in caplog.text


def test_reports_are_stored_once_a_store_interval_the_first_and_the_final_always(clock: FakeClock) -> None:
    """Every report due sends its event; the result backend gets the first, then one per
    PROGRESS_STORE_INTERVAL (1 s), and the final value, each with its event's time (SENT_KEY): a
    dashboard that reads the backend knows an older stored report for older (web.records.from_meta)."""
    task = FakeTask()
    for i in range(1, 31):  # one call per 0.125 s: each one is due
        assert progress(task, i, 30)
        clock.now += 0.125
    assert [e["progress"]["current"] for e in task.events] == list(range(1, 31))
    stored = [meta for _, meta in task.states]
    assert [meta["current"] for meta in stored] == [1, 9, 17, 25, 30]
    by_current = {e["progress"]["current"]: e for e in task.events}
    assert stored == [{**by_current[m["current"]]["progress"], SENT_KEY: by_current[m["current"]]["sent"]}
                      for m in stored]


def test_a_store_interval_no_longer_than_the_report_interval_stores_every_report() -> None:
    clock = FakeClock()
    throttle = Throttle(0.5, clock, store_interval=0.5)
    stored = []
    for i in range(1, 6):
        assert throttle.due(i, 10)
        stored.append(throttle.store)
        clock.now += 0.5
    assert stored == [True] * 5


def test_overlapping_runs_of_one_task_object_each_keep_their_own_pace(clock: FakeClock) -> None:
    """A thread pool runs the same task object twice at once: each run keeps a throttle of its own
    (celery_dashboard.reporting.Lane), so neither run's reports are skipped for the other's."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import get_ident

    task = FakeTask()
    sent: list[tuple[int, float]] = []
    task.send_event = lambda kind, **fields: sent.append((get_ident(), fields["progress"]["current"]))

    def call(i: int, begin: bool = False, end: bool = False) -> int:
        if begin:
            progress_module._new_run(sender=task)  # Celery's task_prerun, in the thread that runs the task
        progress(task, i, 99)
        clock.now += 0.03
        if end:
            progress_module._run_ended(sender=task)  # task_postrun
        return get_ident()

    with ThreadPoolExecutor(1) as first, ThreadPoolExecutor(1) as second:
        a = first.submit(call, 1, begin=True).result()
        for i in range(2, 21):  # the first run alone: 0.03 s per call, a report each 0.1 s
            first.submit(call, i).result()
        b = second.submit(call, 1, begin=True).result()  # a second run starts while the first is under way
        for i in range(21, 100):  # the two take turns: each run calls every 0.06 s
            first.submit(call, i, end=i == 99).result()
            second.submit(call, i - 19).result()  # the second run goes on after the first ended
        for i in range(81, 100):
            second.submit(call, i, end=i == 99).result()
    of_a = [c for t, c in sent if t == a]
    of_b = [c for t, c in sent if t == b]
    assert of_a == [1, 5, 9, 13, 17] + list(range(21, 100, 2))  # 0.12 s apart alone, then every other call
    assert of_b == list(range(1, 80, 2)) + [82, 86, 90, 94, 98, 99]  # every other call, then 0.12 s apart alone


def test_calls_past_the_total_are_throttled_after_the_final_value() -> None:
    """A total that was an underestimate: the final value goes out at once, the calls past it one
    per interval (each of them used to send an event and write the result backend)."""
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    sent = []
    for i in range(1, 3001):
        if throttle.due(i, 1000):
            sent.append((i, throttle.store))
        clock.now += 0.0001  # 3,000 calls in 0.3 s
    assert sent[:2] == [(1, True), (1000, True)]  # the first, and the final value at once, stored
    later = sent[2:]  # then one per 0.1 s at most, the next one 0.1 s after the final value
    assert 1 <= len(later) <= 2 and all(i >= 1999 for i, _ in later), later
    assert not any(stored for _, stored in later)  # within PROGRESS_STORE_INTERVAL (1 s): events only


def test_calls_without_a_total_are_throttled() -> None:
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    assert sum(throttle.due(i, 0) for i in range(1, 2001)) == 1  # the first; no time passed


def test_a_second_phase_that_reaches_its_total_again_shows_it_at_once() -> None:
    clock = FakeClock()
    throttle = Throttle(10.0, clock)
    assert throttle.due(10, 10)  # phase one ends
    clock.now += 11
    assert throttle.due(1, 10)  # phase two starts (a report below the total goes out)
    assert not throttle.due(5, 10)
    assert throttle.due(10, 10)  # and its end is shown at once
    assert not throttle.due(10, 10)  # told once


def test_progress_outside_a_worker_says_nothing_was_sent() -> None:
    from celery_dashboard.reporting import Progress

    task = FakeTask(task_id=None)
    assert progress(task, 1, 1) is False
    assert Progress(task, 5)(1) is False and Progress(task, 5)(5) is False
    assert task.events == [] and task.states == []


def test_a_reporter_s_own_message_is_filled_with_current_and_total_when_it_sends(clock: FakeClock) -> None:
    """`Progress(self, total, message=...)` then `report(n)`: the README's tight loop, one argument a
    call; the message is filled positionally or by name, and one that does not fit is sent as written."""
    task = FakeTask()
    report = progress_module.Progress(task, 40, message="{} of {} rows")
    for n in range(1, 41):
        report(n)
    assert [e["progress"]["message"] for e in task.events] == ["1 of 40 rows", "40 of 40 rows"]
    named = progress_module.Progress(FakeTask(), 8, message="{current}/{total} pages")
    broken = progress_module.Progress(FakeTask(), 8, message="{} of {} of {} rows")
    assert named(3) and broken(3)
    assert named.task.events[-1]["progress"]["message"] == "3/8 pages"
    assert broken.task.events[-1]["progress"]["message"] == "{} of {} of {} rows"
    assert report(40, "a call's own {}", "message") is False  # the final value was told: skipped
    clock.now += 1
    assert report(41, "a call's own {}", "message")
    assert task.events[-1]["progress"]["message"] == "a call's own message"


def test_a_total_that_drops_or_becomes_known_shows_its_final_value_at_once(clock: FakeClock) -> None:
    """progress() is given the total each call: the skip compares with this call's total too (a
    review found 4 of 4 never sent after 1..3 of 10, and 7 of 7 after 6 of 0)."""
    task = FakeTask()
    for current, total in ((1, 10), (2, 10), (3, 10), (4, 4)):
        progress(task, current, total)
    assert [(e["progress"]["current"], e["progress"]["total"]) for e in task.events] == [(1, 10), (4, 4)]
    other = FakeTask("t2")
    for current, total in ((5, 0), (6, 0), (7, 7)):
        progress(other, current, total)
    assert [(e["progress"]["current"], e["progress"]["total"]) for e in other.events] == [(5, 0), (7, 7)]


def test_a_message_that_does_not_fit_its_arguments_and_a_decimal_never_fail_the_task(clock: FakeClock) -> None:
    from decimal import Decimal
    from fractions import Fraction

    task = FakeTask()
    assert progress(task, 1, 10, "{} of {}", 1)  # one argument short: sent as written
    assert task.events[-1]["progress"]["message"] == "{} of {}"
    clock.now += 1
    assert progress(task, Decimal("2.5"), Decimal("10"))
    assert task.events[-1]["progress"]["percent"] == 25.0
    clock.now += 1
    assert progress(task, Fraction(1, 2), 2)
    assert task.events[-1]["progress"]["percent"] == 25.0


def test_a_current_below_the_small_int_range_still_reports(clock: FakeClock) -> None:
    task = FakeTask()
    low = -(2 ** 31)
    assert progress(task, low, 10)
    clock.now += 1
    assert progress(task, low + 1, 10)  # looked at after the tick: not skipped for ever


def test_an_overlapping_run_s_throttle_goes_with_the_run(clock: FakeClock) -> None:
    """Under gevent and eventlet each run is a new greenlet: a throttle kept per run after it ended
    grew without bound (17,352 after 23,000 runs) and was ticked 40 times a second."""
    from concurrent.futures import ThreadPoolExecutor

    task = FakeTask()

    def run(begin: bool) -> None:
        if begin:
            progress_module._new_run(sender=task)
        progress(task, 1, 10)

    def end() -> None:
        progress_module._run_ended(sender=task)

    with ThreadPoolExecutor(1) as first:
        first.submit(run, True).result()
        for _ in range(20):  # runs that overlap the first, each on a thread of its own
            with ThreadPoolExecutor(1) as other:
                other.submit(run, True).result()
                other.submit(end).result()
        first.submit(end).result()
    assert progress_module._throttles == {}
