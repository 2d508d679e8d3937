from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from celery_dashboard import reporting as progress_module
from celery_dashboard.reporting import Throttle, progress, progress_meta


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTask:
    """Records what a bound Celery task would send."""

    def __init__(self, task_id: str | None = "t1") -> None:
        self.request = SimpleNamespace(id=task_id, retries=0)
        self.events: list[dict[str, Any]] = []
        self.states: list[tuple[str, dict[str, Any]]] = []

    def send_event(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, **fields})

    def update_state(self, state: str, meta: dict[str, Any]) -> None:
        self.states.append((state, meta))


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
    assert task.states[-1] == ("PROGRESS", task.events[-1]["progress"])


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
