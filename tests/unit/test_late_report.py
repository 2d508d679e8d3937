"""A final progress report kept aside by a batch whose SUCCESS names no attempt (records.LATE_REPORT,
Celery's default backend): the stored task object gives it only for the latest attempt it knows of,
one that did not fail; it survives a batch put back into a newer one, and never reaches a stored
object."""
from __future__ import annotations

from typing import Any

from tests.unit.batches import T0, apply, stored, ticks
from tests.unit.batches import batch as batch_of
from tests.unit.batches import event as ev
from web import records
from web.coalescer import Coalescer

DONE = "2023-11-14T22:13:30.000000"
PLAIN = {"status": "SUCCESS", "result": 2, "date_done": DONE}  # Celery's default: no result_extended


def report(current: int, total: int, retries: int, at: float, message: str) -> dict[str, Any]:
    return ev("task-progress", at, progress={"current": current, "total": total, "message": message}, retries=retries)


# Attempt 0 reaches its total, then raises Retry; attempt 1 succeeds with its own final message.
ATTEMPT0 = [ev("task-received", 1, name="x", retries=0), ev("task-started", 2, retries=0),
            report(1, 2, 0, 3, "a0: step 1 of 2")]


def test_a_batch_that_tells_attempt_0_s_retry_does_not_give_attempt_0_s_final_message() -> None:
    # The reconciler read attempt 1's SUCCESS (no result_extended) while the listener was behind;
    # the listener then catches up with attempt 0's last report and the worker's task-retried for
    # it, in one tick. The batch itself says attempt 0 failed: its message is not the ending's.
    record = stored(*ATTEMPT0)
    partial = batch_of([records.read_entry("t1", PLAIN), report(2, 2, 0, 4, "a0: done"),
                        ev("task-retried", 4.01, exception="E('x')")], PLAIN)
    print(partial.get(records.NOTES), partial.get(records.LATE_REPORT))
    record = apply(record, partial)
    # attempt 1's events come next
    record = ticks(record, [ev("task-received", 5, name="x", retries=1), ev("task-started", 6, retries=1),
                                     report(2, 2, 1, 7, "a1: done"), ev("task-succeeded", 8, retries=1)], PLAIN)
    assert record["retries"] == 1
    assert record["progress"]["message"] == "a1: done", record["progress"]


def test_a_late_report_put_back_into_a_pending_update_is_not_lost() -> None:
    # A batch that could not be stored (Redis away) is put back; meanwhile the worker's
    # task-succeeded for the same task reached the coalescer. The set-aside report must survive.
    record = stored(ATTEMPT0[0], ATTEMPT0[1], report(1, 2, 0, 3, "step 1 of 2"))
    coalescer = Coalescer()
    coalescer.add(records.read_entry("t1", PLAIN))
    coalescer.add(report(2, 2, 0, 4, "step 2 of 2"))
    batch, fetch = coalescer.take()
    assert records.LATE_REPORT in batch["t1"]
    coalescer.add(ev("task-succeeded", 5, retries=0))  # arrives while the flush fails
    coalescer.put_back(batch, fetch)
    partial = batch_of([], PLAIN, coalescer)
    record = apply(record, partial)
    assert record["progress"]["message"] == "step 2 of 2", record["progress"]


def test_late_report_never_reaches_a_stored_object() -> None:
    record = stored(*ATTEMPT0)
    partial = batch_of([records.read_entry("t1", PLAIN), report(2, 2, 0, 4, "a0: done")], PLAIN)
    record = apply(record, partial)
    assert records.LATE_REPORT not in record and records.NOTES not in record


def test_a_stored_object_that_knows_attempt_0_failed_does_not_take_its_final_message() -> None:
    # Fuzz seed "both_final 1 0 1 4193". The stored object already holds attempt 0's retry (its
    # attempts say attempt 0 failed) but its `retries` is still 0: a batch's task-retried whose RETRY
    # lost to a newer backend read of attempt 1's report (SENT_KEY time) is kept as a note only.
    # The next batch (attempt 1's SUCCESS, unnamed, and attempt 0's late final report) then gives
    # attempt 0's message, which attempt 1's own final report can no longer replace.
    from celery_dashboard.reporting import SENT_KEY
    half = {"current": 1, "total": 2, "message": "a1 half", SENT_KEY: T0 + 7}
    read_a1_half = records.read_entry("t1", {"status": "PROGRESS", "result": half})
    record = ticks(records.new_record("t1"), [report(1, 2, 0, 3, "a0 half")], PLAIN)
    record = ticks(record, [ev("task-received", 1, name="x", retries=0), read_a1_half, ev("task-started", 2.05),
                            ev("task-retried", 4.01, exception="E('x')")], PLAIN)
    assert record["attempts"][0]["error"]  # the stored object knows attempt 0 failed
    record = ticks(record, [records.read_entry("t1", PLAIN), report(2, 2, 0, 3.5, "a0 done")], PLAIN)
    record = ticks(record, [report(2, 2, 1, 7.5, "a1 done"), ev("task-received", 5, name="x", retries=1),
                            ev("task-started", 6.05), ev("task-succeeded", 8.01)], PLAIN)
    assert record["retries"] == 1
    assert record["progress"]["message"] == "a1 done", record["progress"]
