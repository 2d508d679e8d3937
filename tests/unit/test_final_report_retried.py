"""A retried task's final progress report, in the orders a loaded web receives a retried task's events
and backend reads (Celery's default backend, without result_extended), stored through the coalescer
and the pusher's fill_results as the web stores them: the message shown on SUCCESS is the
succeeding attempt's, and never an earlier attempt's (web.records._late_final_report)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.unit.batches import apply, batch, stored
from tests.unit.batches import event as ev
from web import records
from web.coalescer import Coalescer

DONE = "2023-11-14T22:13:28"  # T0 + 8 s: the backend's date_done of the attempt that succeeded
PLAIN = {"status": "SUCCESS", "result": {"attempts": 2}, "date_done": DONE}  # no result_extended


def report(current: int, total: int, retries: int, at: float, message: str | None = None) -> dict[str, Any]:
    meta = {"current": current, "total": total, "message": message or f"attempt {current} of {total}"}
    return ev("task-progress", at, progress=meta, retries=retries)


def flush(record: dict[str, Any], updates: list[dict[str, Any]], meta: dict[str, Any] = PLAIN) -> dict[str, Any]:
    """One coalescer batch, nothing held back for a next one, stored into a copy of `record`."""
    coalescer = Coalescer()
    partial = batch(updates, meta, coalescer)
    assert not coalescer.deferred
    return apply(record, partial)


def flaky_until_attempt_1_succeeded() -> dict[str, Any]:
    """tasks.demo.flaky(failures=1): attempt 0 reported "attempt 1 of 2" and was retried; the
    reconciler stored the backend's SUCCESS (read without result_extended) while the listener was
    behind: the attempt-1 task-received was stored, its report "attempt 2 of 2" not yet."""
    record = stored(ev("task-received", 1, name="tasks.demo.flaky", retries=0), ev("task-started", 2, retries=0),
                    report(1, 2, 0, 3), ev("task-retried", 4.01, exception="FlakyError('attempt 1 failed')"),
                    ev("task-received", 5, name="tasks.demo.flaky", retries=1))
    record = flush(record, [records.read_entry("t1", PLAIN)])
    assert (record["state"], record["retries"], record["progress"]["message"]) == ("SUCCESS", 1, "")
    return record


# A batch that holds the succeeding attempt's final report and a late event of an earlier attempt.
@pytest.mark.parametrize("batch", [
    # the main process's buffered events (Celery's task-started of attempt 0 is numbered 0 by the
    # listener) arrive after the pool process's report of attempt 1
    lambda: [ev("task-started", 2.05, retries=0), report(2, 2, 1, 7)],
    # both attempts' pool-process reports arrive late, in order
    lambda: [report(1, 2, 0, 3), report(2, 2, 1, 7)],
], ids=["late-main-event", "late-pool-reports"])
def test_the_final_report_is_kept_when_its_batch_also_names_an_earlier_attempt(batch: Any) -> None:
    record = flush(flaky_until_attempt_1_succeeded(), batch())
    assert record["state"] == "SUCCESS" and record["retries"] == 1
    assert record["progress"]["message"] == "attempt 2 of 2"


@pytest.mark.parametrize("backlog", [
    # the listener is behind (ci78): the reconciler's SUCCESS read, then the backlog, the pool's
    # unbuffered reports first and the main process's buffered events after, in one tick
    lambda: [report(2, 2, 0, 3, "step 2 of 2"), report(1, 2, 1, 7, "step 1 of 2"),
             ev("task-received", 1, name="x", retries=0), ev("task-retried", 4.01, exception="E('x')"),
             ev("task-received", 5, name="x", retries=1), ev("task-succeeded", 8.01, retries=1)],
    # the commit's own case (attempt 1 succeeded without a report) before the SUCCESS was stored
    lambda: [report(2, 2, 0, 3, "step 2 of 2"), ev("task-succeeded", 8.01, retries=1)],
], ids=["backlog", "late-report"])
def test_an_earlier_attempt_s_final_report_is_not_shown_on_success(backlog: Any) -> None:
    # Attempt 0 reached "step 2 of 2" and was retried; attempt 1 reported "step 1 of 2" (or
    # nothing) and succeeded: SUCCESS keeps no message (merge), as when the events come in order.
    record = stored(ev("task-sent", 0, name="x"))
    if len(backlog()) == 2:
        record = stored(ev("task-received", 1, name="x", retries=0), ev("task-retried", 4.01, exception="E('x')"),
                        ev("task-received", 5, name="x", retries=1))
    record = flush(record, [records.read_entry("t1", PLAIN), *backlog()])
    assert record["state"] == "SUCCESS"
    assert (record["progress"] or {}).get("message", "") == ""


def test_an_earlier_attempt_s_report_never_replaces_the_held_final_message() -> None:
    # Both attempts reached their total; attempt 1's "B" is stored with its SUCCESS. A late batch
    # (the reconciler's read again, attempt 0's late report, a late event of attempt 1) replaces it.
    record = stored(ev("task-received", 1, name="x", retries=0), ev("task-retried", 4.01, exception="E('x')"),
                    ev("task-received", 5, name="x", retries=1), report(2, 2, 1, 7, "B"),
                    records.read_entry("t1", PLAIN))
    assert record["progress"]["message"] == "B"
    record = flush(record, [records.read_entry("t1", PLAIN), report(2, 2, 0, 3, "A"), ev("task-started", 6, retries=1)])
    assert record["progress"]["message"] == "B"  # "a message about the end already held is never replaced"


# The reconciler's read of the backend's PROGRESS (it names no attempt; the backend holds only the
# latest attempt's) in a batch with a late event of an earlier attempt: its bar is shown.
@pytest.mark.parametrize("late", [
    lambda: ev("task-started", 2, retries=0),  # celery_dashboard's own, from the pool process
    lambda: ev("task-received", 1, name="x", retries=0),  # Celery's, from a lagging web process
], ids=["pool-task-started", "other-web-process"])
def test_a_latest_progress_read_keeps_its_bar_beside_a_late_earlier_attempt_event(late: Any) -> None:
    record = stored(ev("task-received", 1, name="tasks.demo.flaky", retries=0), report(1, 3, 0, 3),
                    ev("task-retried", 4.01, exception="FlakyError('attempt 1 failed')"),
                    ev("task-received", 5, name="tasks.demo.flaky", retries=1))
    assert (record["state"], record["retries"], record["progress"]["message"]) == ("RETRY", 1, "attempt 1 of 3")
    read = records.read_entry("t1", {"status": "PROGRESS", "result": {"current": 2, "total": 3,
                                                                      "message": "attempt 2 of 3"}})
    record = flush(record, [read, late()])
    assert record["state"] == "PROGRESS" and record["retries"] == 1
    assert record["progress"]["message"] == "attempt 2 of 3"
