"""The last progress report (current == total) of a task whose ending reaches the web in the same
coalescer batch, or before it: its message is shown for the attempt that succeeded, and only for it
(web.records._late_final_report), stored through the pusher as the web stores it."""
from __future__ import annotations

from typing import Any

from tests.unit.batches import T0, stored
from tests.unit.batches import event as ev
from tests.unit.batches import through as flush
from web import records

DONE = "2023-11-14T22:13:21.500000"  # T0 + 1.5 s


def report(current: int, total: int, retries: int = 0, at: float = T0 + 1) -> dict[str, Any]:
    meta = {"current": current, "total": total, "message": f"step {current} of {total}"}
    return ev("task-progress", progress=meta, retries=retries, timestamp=at)


PLAIN = {"status": "SUCCESS", "result": 2, "date_done": DONE}  # Celery's default: no result_extended


def test_backend_success_read_in_the_same_batch_before_the_final_report_loses_its_message() -> None:
    # The reconciler reads the backend's SUCCESS while the listener is behind; in the same tick the
    # listener catches up with the final report and the worker's task-succeeded.
    record = stored(ev("task-received", name="x", retries=0), ev("task-started"), report(1, 2, at=T0 + 0.5))
    record = flush(record, [records.read_entry("t1", PLAIN), report(2, 2), ev("task-succeeded", retries=0,
                                                                             timestamp=T0 + 2)], PLAIN)
    assert record["state"] == "SUCCESS"
    assert record["progress"]["message"] == "step 2 of 2"


def test_backend_success_and_task_succeeded_before_a_late_final_report_in_one_batch() -> None:
    record = stored(ev("task-received", name="x", retries=0), ev("task-started"), report(1, 2, at=T0 + 0.5))
    record = flush(record, [records.read_entry("t1", PLAIN), ev("task-succeeded", retries=0, timestamp=T0 + 2),
                            report(2, 2)], PLAIN)
    assert record["progress"]["message"] == "step 2 of 2"


def test_a_batch_s_success_does_not_give_an_earlier_attempt_s_final_report() -> None:
    # Attempt 0 reported 2 of 2, then retried; attempt 1 succeeded without reaching a report. The
    # backend's SUCCESS (attempt 1) is stored first; a batch then holds attempt 0's late final
    # report and attempt 1's task-succeeded.
    ext = dict(PLAIN, retries=1, worker="celery@w1", name="x")
    record = stored(ev("task-received", name="x", retries=0), report(1, 2, at=T0 + 0.2),
                    ev("task-retried", exception="E('x')", timestamp=T0 + 0.3),
                    ev("task-received", name="x", retries=1, timestamp=T0 + 0.4),
                    records.read_entry("t1", ext))
    assert record["state"] == "SUCCESS" and record["retries"] == 1 and record["progress"]["message"] == ""
    # (the worker's task-succeeded timed before the backend's date_done on the web's clock: the
    # batch's SUCCESS is not accepted: the rule for a SUCCESS batch that merged a final report)
    record = flush(record, [report(2, 2, retries=0, at=T0 + 0.25), ev("task-succeeded", retries=1, timestamp=T0 + 1.4)],
                   ext)
    assert record["progress"]["message"] == ""  # attempt 0's "step 2 of 2" says nothing of attempt 1


def test_ci78_s_case_through_the_pusher() -> None:
    """ci78's case as the pusher stores it: fill_results makes the batch the backend's SUCCESS, and
    the stored task already holds that SUCCESS (read by the reconciler first)."""
    for succeeded_at in (T0 + 2, T0 + 1.4):  # after / before the backend's date_done
        record = stored(ev("task-received", name="x", retries=0), report(1, 2, at=T0 + 0.5),
                        records.read_entry("t1", PLAIN))
        record = flush(record, [report(2, 2), ev("task-succeeded", retries=0, timestamp=succeeded_at)], PLAIN)
        assert record["progress"]["message"] == "step 2 of 2", succeeded_at
