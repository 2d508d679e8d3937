"""Events and stored task objects with fields of types Celery never sends: any process with the
broker's URL can publish a task event, and one task's `retries` of "x" once stopped every task's
live updates (its merge raised in every flush, and the whole batch was put back each time)."""
from __future__ import annotations

import json

import fakeredis
import pytest

from celery_dashboard.index import DATA_KEY, VERSION_KEY
from web import records
from web.store import TaskStore

T0 = 1_700_000_000.0


def odd(kind: str, **fields: object) -> dict:
    return {"type": kind, "uuid": "t1", "timestamp": T0, "hostname": "celery@w1", **fields}


@pytest.mark.parametrize("retries", ["x", True, -1, 10**12, 2.5, None, [1]])
def test_a_retries_that_is_not_an_attempt_number_is_left_out(retries: object) -> None:
    received = records.from_event(odd("task-received", name="x", retries=retries))
    assert received["retries"] == 0  # as Celery's own task-received with no retries
    for kind in ("task-started", "task-progress", "task-succeeded", "task-failed"):
        update = records.from_event(odd(kind, retries=retries, progress={"current": 1, "total": 2}))
        assert "retries" not in update, kind
    numbering = records.Numbering()
    numbering.number(odd("task-received", retries=retries))
    assert "retries" not in numbering.number(odd("task-started"))


def test_text_fields_of_another_type_are_left_out_and_a_bad_timestamp_is_no_time() -> None:
    update = records.from_event(odd("task-received", name=5, parent_id=[1], hostname={"h": 1}, timestamp="late",
                                    retries=1))
    assert (update["name"], update["parent"], update["worker"], update["created"]) == (None, None, None, None)
    assert update["retries"] == 1
    failed = records.from_event(odd("task-failed", exception=["not", "text"], traceback={"a": 1}))
    assert failed["error"]["type"] == "Error" and failed["error"]["traceback"] is None
    assert records.sane_event(odd("task-started", retries=2)) == odd("task-started", retries=2)


def test_every_merge_works_on_a_task_whose_events_were_odd() -> None:
    record = records.new_record("t1")
    for event in (odd("task-received", retries="x", name="x"), odd("task-started", retries=0),
                  odd("task-progress", retries=True, progress={"current": 1, "total": 2}),
                  odd("task-succeeded", retries="x")):
        records.merge(record, records.from_event(event))
    assert record["state"] == "SUCCESS" and record["retries"] == 0


def test_an_odd_object_stored_before_is_repaired_and_merged() -> None:
    client = fakeredis.FakeRedis()
    store = TaskStore(client)
    stored = dict(records.new_record("t1"), retries="x", attempts="y", progress=5, version=1)
    client.hset(DATA_KEY, "t1", json.dumps(stored))
    client.hset(VERSION_KEY, "t1", 1)
    [task] = store.merge({"t1": records.from_event(odd("task-started", retries=0))})
    assert task["state"] == "STARTED" and task["retries"] == 0 and task["progress"] is None
    assert [a["retries"] for a in task["attempts"]] == [0]


def test_one_task_that_cannot_be_merged_does_not_hold_back_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    store = TaskStore(fakeredis.FakeRedis())
    merge = records.merge

    def breaks_on_t1(record: dict, update: dict, **kwargs: object) -> bool:
        if record["id"] == "t1":
            raise ValueError("an object this web cannot read")
        return merge(record, update, **kwargs)

    monkeypatch.setattr(records, "merge", breaks_on_t1)
    updates = {i: dict(records.from_event(dict(odd("task-started"), uuid=i)), id=i) for i in ("t0", "t1", "t2")}
    stored = {task["id"]: task["state"] for task in store.merge(updates)}
    assert stored == {"t0": "STARTED", "t2": "STARTED"}


def test_an_absurd_timestamp_does_not_make_its_worker_s_events_fail() -> None:
    """The diff review: one event from celery@w1 timed 1e20 set w1's clock offset to ~1e20, and for
    the next 10 s every event of w1 came out timed -1e20, which no date can hold: each was lost."""
    from web.workers import Workers

    now = [T0]
    workers = Workers(clock=lambda: now[0], wall=lambda: now[0])
    forged = workers.see(odd("task-started", uuid="other", timestamp=1e20))
    assert "timestamp" not in forged  # taken untimed
    assert records.from_event(forged)["state"] == "STARTED"
    real = workers.see(odd("task-started", timestamp=T0 + 0.5))
    assert records.from_event(real)["started"] == records.iso(T0 + 0.5)
    assert records.iso(1e20) is None  # and a date none can hold is no date, not an error


def test_a_late_report_whose_numbers_came_as_text_gives_no_bar_and_no_error() -> None:
    record = records.new_record("t1")
    for event in (odd("task-received", retries=0, name="x"), odd("task-succeeded", retries=0)):
        records.merge(record, records.from_event(event))
    late = records.from_event(odd("task-progress", retries=0, progress={"current": 2**60, "total": 10}))
    assert isinstance(late["progress"]["current"], str)  # past 2**53: text (results.json_safe)
    records.merge(record, late)  # raised TypeError (text <= int) before
    assert record["state"] == "SUCCESS" and record["progress"] is None
