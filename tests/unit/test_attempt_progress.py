"""A progress report names the attempt it came from (Celery's `retries`), so that a retried task
shows the ending of the attempt that succeeded: its final report's message, or a full bar with no
message where it ended halfway; never an earlier attempt's "step 2 of 2" (web.records)."""
from __future__ import annotations

from typing import Any

from tests.unit.batches import T0, stored, ticks
from tests.unit.batches import event as ev
from web import records

DONE = "2023-11-14T22:13:28.000000"  # T0 + 8 s


def report(current: int, total: int, retries: int, at: float) -> dict[str, Any]:
    meta = {"current": current, "total": total, "message": f"step {current} of {total}"}
    return ev("task-progress", progress=meta, retries=retries, timestamp=T0 + at)


def attempt_0_reached_its_total_and_retried() -> list[dict[str, Any]]:
    return [ev("task-received", 1, name="x", retries=0), ev("task-started", 2, retries=0), report(2, 2, 0, 3),
            ev("task-retried", 4, exception="E('a0')")]


def test_a_report_names_its_attempt_from_its_event_and_from_a_stored_state_with_result_extended() -> None:
    assert report(1, 2, 1, 7)["progress"]["retries"] == 1
    extended = {"status": "PROGRESS", "result": {"current": 1, "total": 2}, "retries": 1, "name": "x"}
    assert records.from_meta("t1", extended)["progress"]["retries"] == 1
    # Celery's default backend does not say which attempt stored it: the report does not say either.
    plain = {"status": "PROGRESS", "result": {"current": 1, "total": 2}}
    assert "retries" not in records.from_meta("t1", plain)["progress"]


def test_the_attempt_that_succeeded_without_a_report_does_not_show_an_earlier_attempt_s_final_message() -> None:
    # Attempt 0 reported "step 2 of 2" and then failed and retried; attempt 1 succeeded without a
    # report. Before, the SUCCESS kept "step 2 of 2": a message about an attempt that did not succeed.
    record = stored(*attempt_0_reached_its_total_and_retried(), ev("task-received", 5, name="x", retries=1),
                    ev("task-started", 6, retries=1), ev("task-succeeded", 8, retries=1))
    assert record["state"] == "SUCCESS" and record["retries"] == 1
    assert record["progress"]["percent"] == 100.0 and record["progress"]["message"] == ""


def test_the_same_in_one_batch() -> None:
    record = stored(ev("task-received", 1, name="x", retries=0))
    record = ticks(record, [ev("task-started", 2, retries=0), report(2, 2, 0, 3),
                            ev("task-retried", 4, exception="E('a0')"), ev("task-received", 5, name="x", retries=1),
                            ev("task-succeeded", 8, retries=1)],
                   {"status": "SUCCESS", "result": 2, "date_done": DONE})
    assert record["state"] == "SUCCESS" and record["progress"]["message"] == ""


def test_a_late_report_of_the_attempt_that_succeeded_still_gives_the_task_its_bar() -> None:
    # The worker's task-succeeded was merged before attempt 1's only report (1 of 2), which then came
    # late. Before, the report was dropped and the task ended with no bar; now the bar is full, with
    # no message (the report was not about the end). An earlier attempt's late report changes nothing.
    record = stored(ev("task-received", 1, name="x", retries=0), ev("task-started", 2, retries=0),
                    ev("task-retried", 4, exception="E('a0')"), ev("task-received", 5, name="x", retries=1),
                    ev("task-succeeded", 8, retries=1))
    assert record["progress"] is None
    assert not records.merge(record, report(2, 2, 0, 3))
    assert records.merge(record, report(1, 2, 1, 7))
    assert record["progress"] == {"current": 2, "total": 2, "percent": 100.0, "message": "", "retries": 1}
    # Its final report, later still, gives its message.
    assert records.merge(record, report(2, 2, 1, 7.5))
    assert record["progress"]["message"] == "step 2 of 2"


def test_a_batch_with_the_backend_s_retry_and_the_worker_s_task_retried_keeps_the_next_attempt_s_report() -> None:
    # The reconciler read the stored RETRY (attempt 0's, announcing attempt 1) and the listener then
    # took in the worker's task-retried for the same retry, then attempt 1's events, in one tick. The
    # batch counted two retries and dropped attempt 1's events as older than attempt 2: its final
    # report's message was lost.
    retry = records.read_entry("t1", {"status": "RETRY", "result": {"exc_type": "E", "exc_message": ["a0"]},
                                      "retries": 0, "name": "x"})
    record = stored(ev("task-received", 1, name="x", retries=0), ev("task-started", 2, retries=0))
    record = ticks(record, [retry, ev("task-retried", 4, exception="E('a0')"),
                            ev("task-received", 5, name="x", retries=1), ev("task-started", 6, retries=1),
                            report(2, 2, 1, 7), ev("task-succeeded", 8, retries=1)],
                   {"status": "SUCCESS", "result": 2, "date_done": DONE, "retries": 1, "name": "x"})
    assert record["state"] == "SUCCESS" and record["retries"] == 1
    assert record["progress"]["message"] == "step 2 of 2"
    assert [a["retries"] for a in record["attempts"]] == [0, 1] and record["attempts"][0]["error"]["message"] == "a0"
