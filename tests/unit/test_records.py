from __future__ import annotations

from typing import Any

import pytest

from web import records

T0 = 1_700_000_000.0


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": "t1", "timestamp": T0, "hostname": "celery@w1", **fields}


def apply(*updates: dict[str, Any]) -> dict[str, Any]:
    record = records.new_record("t1")
    for update in updates:
        records.merge(record, update)
    return record


def progress(current: int, total: int = 10) -> dict[str, Any]:
    return records.from_event(event("task-progress", progress=records_meta(current, total)))


def records_meta(current: int, total: int) -> dict[str, Any]:
    return {"current": current, "total": total, "percent": 100.0 * current / total, "message": f"{current}"}


def test_a_task_s_life_from_events() -> None:
    record = apply(
        records.from_event(event("task-sent", name="tasks.demo.steps", parent_id="p1")),
        records.from_event(event("task-received", name="tasks.demo.steps")),
        records.from_event(event("task-started")),
        progress(5),
        records.from_event(event("task-succeeded", result="'{...}'")),
    )
    assert record["state"] == "SUCCESS"
    assert record["name"] == "tasks.demo.steps"
    assert record["parent"] == "p1"
    assert record["worker"] == "celery@w1"
    assert record["created"] == records.iso(T0)
    assert record["started"] and record["finished"]
    assert record["progress"]["percent"] == 100.0  # success fills the bar


def test_progress_after_success_does_not_move_the_task_back() -> None:
    record = apply(progress(3), records.from_event(event("task-succeeded")))
    assert not records.merge(record, progress(4))
    assert record["state"] == "SUCCESS"


def test_terminal_state_is_final_even_for_another_terminal_event() -> None:
    record = apply(records.from_event(event("task-revoked", terminated=True)))
    records.merge(record, records.from_event(event("task-revoked")))
    records.merge(record, records.from_event(event("task-succeeded")))
    assert record["state"] == "REVOKED"
    assert "terminated" in record["error"]["message"]


def test_late_started_does_not_undo_progress() -> None:
    record = apply(progress(5))
    records.merge(record, records.from_event(event("task-started")))
    assert record["state"] == "PROGRESS"
    assert record["started"] == records.iso(T0)  # but the start time is still learned


def test_older_progress_is_ignored() -> None:
    record = apply(progress(7))
    assert not records.merge(record, progress(4))
    assert record["progress"]["current"] == 7


def test_retry_then_run_again() -> None:
    retried = records.from_event(event("task-retried", exception="FlakyError('attempt 1 failed')"))
    record = apply(progress(1, 3), retried)
    assert record["state"] == "RETRY" and record["retries"] == 1  # announces the second attempt
    assert record["error"] == {"type": "FlakyError", "message": "attempt 1 failed", "traceback": None}
    records.merge(record, records.from_event(event("task-received", retries=1, timestamp=T0 + 1)))
    assert record["state"] == "RETRY"  # still waiting for its countdown
    records.merge(record, records.from_event(event("task-started", timestamp=T0 + 2)))
    records.merge(record, progress(2, 3))
    assert record["state"] == "PROGRESS" and record["retries"] == 1
    # A duplicate of the first attempt's retry, arriving late, changes nothing.
    assert not records.merge(record, retried)
    assert record["state"] == "PROGRESS"


def test_a_retry_reported_after_the_next_attempt_was_received_still_shows() -> None:
    # The worker receives the retried message before it reports the retry (seen in the logs).
    record = apply(progress(2, 3), records.from_event(event("task-received", retries=2, timestamp=T0 + 1)))
    late_retry = records.from_event(event("task-retried", exception="FlakyError('x')", timestamp=T0 + 2))
    assert records.merge(record, late_retry)
    assert record["state"] == "RETRY" and record["retries"] == 2
    records.merge(record, records.from_event(event("task-started", timestamp=T0 + 3)))
    records.merge(record, records.from_event(event("task-progress", timestamp=T0 + 3, retries=2,
                                                   progress=records_meta(3, 3))))
    assert record["state"] == "PROGRESS" and record["progress"]["current"] == 3


def test_order_places_attempts_phases_and_progress() -> None:
    assert records.order("PENDING") < records.order("STARTED") < records.order("PROGRESS", 0, {"current": 1})
    assert records.order("PROGRESS", 0, {"current": 1}) < records.order("PROGRESS", 0, {"current": 2})
    assert records.order("PROGRESS", 0, {"current": 99}) < records.order("RECEIVED", 1)
    assert records.order("RECEIVED", 1) < records.order("RETRY", 1) < records.order("STARTED", 1)
    assert records.order("PROGRESS", 5, {"current": 10**9}) < records.order("REVOKED")


def test_retry_sent_by_the_task_itself_is_not_its_parent() -> None:
    update = records.from_event(event("task-sent", name="x", parent_id="t1"))
    assert update["parent"] is None


def test_failure_event_keeps_type_and_message() -> None:
    update = records.from_event(event("task-failed", exception="ValueError('boom')", traceback="Traceback..."))
    assert update["error"]["type"] == "ValueError"
    assert update["error"]["message"] == "boom"
    assert update["fetch"] is True


@pytest.mark.parametrize("kind", ["worker-heartbeat", "task-rejected", "task-progress"])
def test_events_the_dashboard_ignores(kind: str) -> None:
    assert records.from_event({"type": kind, "uuid": "t1"}) is None


def test_backend_success_meta() -> None:
    update = records.from_meta("t1", {"status": "SUCCESS", "result": {"n": 1},
                                      "date_done": "2026-11-24T03:00:00.000001+00:00", "name": "x"})
    assert update["state"] == "SUCCESS" and update["result"] == {"n": 1}
    assert update["finished"] == "2026-11-24T03:00:00.000001+00:00"
    assert records.iso(T0) == "2023-11-14T22:13:20.000000+00:00"  # fixed width: sorts as text


def test_backend_failure_meta_gives_type_message_and_traceback() -> None:
    update = records.from_meta("t1", {"status": "FAILURE", "traceback": "Traceback ... raise ValueError",
                                      "result": {"exc_type": "ValueError", "exc_message": ["boom"]},
                                      "date_done": "2026-11-24T03:00:00"})
    assert update["error"] == {"type": "ValueError", "message": "boom",
                               "traceback": "Traceback ... raise ValueError"}
    assert update["finished"].endswith("+00:00")


def test_backend_progress_meta() -> None:
    update = records.from_meta("t1", {"status": "PROGRESS", "result": records_meta(2, 4)})
    assert update["state"] == "PROGRESS" and update["progress"]["current"] == 2
    assert "finished" not in update


def test_backend_pending_or_missing_is_nothing_new() -> None:
    assert records.from_meta("t1", None) is None
    assert records.from_meta("t1", {"status": "WEIRD"}) is None
