from __future__ import annotations

import re
from typing import Any

import pytest

from celery_dashboard.reporting import SENT_KEY
from web import records
from web.coalescer import Coalescer
from web.records import from_event, iso, merge, new_record

T0 = 1_700_000_000.0


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": "t1", "timestamp": T0, "hostname": "celery@w1", **fields}


def apply(*updates: dict[str, Any]) -> dict[str, Any]:
    record = records.new_record("t1")
    for update in updates:
        records.merge(record, update)
    return record


def progress(current: int, total: int = 10, at: float = T0) -> dict[str, Any]:
    return records.from_event(event("task-progress", progress=records_meta(current, total), timestamp=at))


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


def test_an_ending_is_final_for_older_reports_and_the_backend_has_the_last_word() -> None:
    record = apply(records.from_event(event("task-revoked", terminated=True, timestamp=T0 + 1)))
    assert not records.merge(record, records.from_event(event("task-succeeded", timestamp=T0)))
    assert record["state"] == "REVOKED" and "terminated" in record["error"]["message"]
    # An eventlet worker emits task-succeeded before task-revoked; the backend says REVOKED.
    record = apply(records.from_event(event("task-succeeded", timestamp=T0)))
    records.merge(record, records.from_event(event("task-revoked", terminated=True, timestamp=T0 + 0.01)))
    assert record["state"] == "REVOKED"
    backend = records.from_meta("t1", {"status": "REVOKED", "result": None, "date_done": "2023-11-14T22:13:21"})
    assert records.merge(record, backend) or record["state"] == "REVOKED"
    assert record["confidence"] == 2
    assert not records.merge(record, records.from_event(event("task-succeeded", timestamp=T0 + 5)))
    assert record["state"] == "REVOKED"


def test_progress_is_the_task_s_to_set_within_an_attempt() -> None:
    record = apply(progress(10, 10, at=T0 + 1), progress(1, 5, at=T0 + 2), progress(2, 5, at=T0 + 3))
    assert (record["progress"]["current"], record["progress"]["total"]) == (2, 5)
    assert record["progress"]["percent"] == 40.0


def test_the_tutorials_progress_meta_gives_a_percentage() -> None:
    update = records.from_meta("t1", {"status": "PROGRESS", "result": {"current": 3, "total": 10}})
    assert update["progress"] == {"current": 3, "total": 10, "percent": 30.0, "message": ""}
    assert records.from_meta("t1", {"status": "PROGRESS", "result": {"current": "x"}}).get("progress") is None


def test_custom_and_ending_states_are_named_as_celery_names_them() -> None:
    record = apply(records.from_event(event("task-started")))
    records.merge(record, records.from_meta("t1", {"status": "DOWNLOADING", "result": {"url": "u"}}))
    assert record["state"] == "DOWNLOADING"
    assert records.from_event(event("task-ignored"))["state"] == "IGNORED"
    assert records.from_event(event("task-rejected"))["state"] == "REJECTED"
    expired = records.from_event(event("task-revoked", expired=True))
    assert (expired["state"], expired["error"]["message"]) == ("REVOKED", "expired")


def test_an_error_whose_text_comes_from_str_keeps_its_text() -> None:
    meta = {"status": "FAILURE", "result": {"exc_type": "StrOnlyError", "exc_message": []},
            "traceback": "Traceback (most recent call last):\n  ...\nmytasks.StrOnlyError: the disk is full\n"}
    assert records.from_meta("t1", meta)["error"]["message"] == "the disk is full"


def test_a_worker_clock_behind_keeps_times_in_order() -> None:
    record = apply(records.from_event(event("task-received", timestamp=T0 + 120)),
                   records.from_event(event("task-started", timestamp=T0 - 5)))
    assert record["started"] >= record["created"] and record["clock_skew"] is True


def test_late_started_does_not_undo_progress() -> None:
    record = apply(progress(5))
    records.merge(record, records.from_event(event("task-started")))
    assert record["state"] == "PROGRESS"
    assert record["started"] == records.iso(T0)  # but the start time is still learned


def test_older_progress_is_ignored() -> None:
    record = apply(progress(7, at=T0 + 2))
    assert not records.merge(record, progress(4, at=T0 + 1))
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
    record = apply(records.from_event(event("task-received", retries=0, timestamp=T0 - 3)),
                   records.from_event(event("task-retried", exception="FlakyError('first')", timestamp=T0 - 2)),
                   records.from_event(event("task-received", retries=1, timestamp=T0 - 1)),
                   progress(2, 3), records.from_event(event("task-received", retries=2, timestamp=T0 + 1)))
    assert record["state"] == "RECEIVED" and record["retries"] == 2
    late_retry = records.from_event(event("task-retried", exception="FlakyError('x')", timestamp=T0 + 2))
    assert records.merge(record, late_retry)
    assert record["state"] == "RETRY" and record["retries"] == 2
    records.merge(record, records.from_event(event("task-started", timestamp=T0 + 3)))
    records.merge(record, records.from_event(event("task-progress", timestamp=T0 + 3, retries=2,
                                                   progress=records_meta(3, 3))))
    assert record["state"] == "PROGRESS" and record["progress"]["current"] == 3


def test_retry_sent_by_the_task_itself_is_not_its_parent() -> None:
    update = records.from_event(event("task-sent", name="x", parent_id="t1"))
    assert update["parent"] is None


def test_failure_event_keeps_type_and_message() -> None:
    update = records.from_event(event("task-failed", exception="ValueError('boom')", traceback="Traceback..."))
    assert update["error"]["type"] == "ValueError"
    assert update["error"]["message"] == "boom"
    assert update["fetch"] is True


@pytest.mark.parametrize("kind", ["worker-heartbeat", "task-progress", "task-unknown"])
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


def test_a_backend_read_of_an_older_report_never_moves_the_progress_back() -> None:
    # celery_dashboard sends a report's event, then stores it: a dashboard (this web process's poll,
    # or another web process) may read the backend between the two and merge that read after the
    # event. The stored report says when it was sent, as its event does.
    started = records.from_event(event("task-started", timestamp=T0))
    stored_three = {"status": "PROGRESS", "result": {**records_meta(3, 4), SENT_KEY: T0 + 3}}
    record = apply(started, progress(3, 4, at=T0 + 3.0001), progress(4, 4, at=T0 + 4.0001))
    assert not records.merge(record, records.from_meta("t1", stored_three))
    assert record["progress"]["current"] == 4
    # A later report the events never told (the listener was cut off) is still taken from the backend,
    # its time converted by the writing worker's clock offset as events are.
    stored_six = {"status": "PROGRESS", "result": {**records_meta(6, 10), SENT_KEY: T0 + 10 + 6}}
    assert records.merge(record, records.from_meta("t1", stored_six, shift=10))
    assert record["progress"]["current"] == 6 and record["updated"] == iso(T0 + 6)
    # The tutorials' update_state(meta={"current", "total"}) says no time: always new information,
    # also when the task's own meta has a "sent" (here: 42 emails sent so far).
    tutorial = {"status": "PROGRESS", "result": {**records_meta(5, 10), "sent": 42}}
    assert records.merge(record, records.from_meta("t1", tutorial))
    assert record["progress"]["current"] == 5


def test_the_same_ending_told_by_the_event_and_the_backend_keeps_one_finished_time() -> None:
    # Celery stores the result (date_done), then sends task-succeeded. One web process confirms the
    # event's ending from the backend and keeps the event's times (Pusher.fill_results); another may
    # merge the same two the other way round (its poll read the backend first). Both must store the
    # same task object, or each ended task is pushed a second time for a millisecond of `finished`.
    started = records.from_event(event("task-started", timestamp=T0))
    succeeded = records.from_event(event("task-succeeded", result="1", timestamp=T0 + 2))
    stored = {"status": "SUCCESS", "result": 1, "date_done": "2023-11-14T22:13:21.999000"}
    confirmed = dict(succeeded, **{k: v for k, v in records.from_meta("t1", stored).items()
                                   if k not in ("updated", "finished")})
    record = apply(started, confirmed)
    assert record["finished"] == iso(T0 + 2) and record["confidence"] == 2
    for first, second in ((succeeded, records.from_meta("t1", stored)), (records.from_meta("t1", stored), succeeded)):
        coalescer = Coalescer()
        coalescer.add(first)
        coalescer.add(second)
        (partial,) = coalescer.take()[0].values()
        again = {**record, "attempts": [dict(a) for a in record["attempts"]]}
        assert not records.merge(again, partial)
        assert again["finished"] == iso(T0 + 2) and again["attempts"][-1]["finished"] == iso(T0 + 2)
    # A different ending is news, with its own time: the eventlet pool's task-succeeded of a task
    # the backend says was REVOKED, and a LOST verdict a real ending replaces.
    revoked = records.from_meta("t1", {"status": "REVOKED", "result": None, "date_done": "2023-11-14T22:13:23"})
    record = apply(started, succeeded)
    assert records.merge(record, revoked)
    assert record["state"] == "REVOKED" and record["finished"] == iso(T0 + 3)
    assert record["attempts"][-1]["finished"] == iso(T0 + 3)
    record = apply(started, records.lost("t1", "celery@w1", "the worker restarted"))
    assert records.merge(record, succeeded)
    assert record["finished"] == iso(T0 + 2) and record["attempts"][-1]["finished"] == iso(T0 + 2)


def test_backend_pending_or_missing_is_nothing_new() -> None:
    assert records.from_meta("t1", None) is None
    assert records.from_meta("t1", {"status": None}) is None
    assert records.from_meta("t1", {"undecodable": "ContentDisallowed: pickle"}) is None


def test_progress_that_json_cannot_carry_is_not_progress() -> None:
    for bad in (float("nan"), float("inf")):
        assert records.progress_of({"current": bad, "total": 10}) is None
        assert records.progress_of({"current": 1, "total": bad}) is None
    assert records.from_event(event("task-progress", progress={"current": float("nan"), "total": 3})) is None


def test_a_retry_read_from_the_backend_does_not_count_another_attempt() -> None:
    retried = records.from_event(event("task-retried", exception="E('x')", timestamp=T0 + 1))
    record = apply(records.from_event(event("task-started")), retried)
    assert record["retries"] == 1
    records.merge(record, records.from_meta("t1", {"status": "RETRY", "result": {"exc_type": "E", "exc_message": []}}))
    assert record["retries"] == 1


def test_an_expired_task_says_so_from_the_backend_too() -> None:
    meta = {"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"]}}
    assert records.from_meta("t1", meta)["error"]["message"] == "expired"


def test_success_does_not_keep_a_message_about_an_earlier_step() -> None:
    record = apply(progress(3, 8), records.from_event(event("task-succeeded", timestamp=T0 + 1)))
    assert record["progress"] == {"current": 8, "total": 8, "percent": 100.0, "message": ""}


def final(current: int, total: int, message: str | None = None, retries: int = 0) -> dict[str, Any]:
    """A late task-progress event as celery_dashboard sends it (with its attempt)."""
    meta = dict(records_meta(current, total), **({"message": message} if message else {}))
    return records.from_event(event("task-progress", progress=meta, retries=retries, timestamp=T0 + 1))


def test_the_final_report_arriving_after_success_still_gives_its_message() -> None:
    # The result backend's SUCCESS can be stored before the worker's last task-progress event is
    # merged (a listener behind under load; the reconciler read the backend first): the bar is full
    # and the last report, about the end, is the task's last word. An earlier step's stays out.
    backend = records.from_meta("t1", {"status": "SUCCESS", "result": 8, "date_done": "2023-11-14T22:13:21"})
    received = records.from_event(event("task-received", name="tasks.demo.steps"))  # attempt 0
    record = apply(received, progress(3, 8), backend)
    assert not records.merge(record, final(5, 8))
    assert records.merge(record, final(8, 8))
    assert record["state"] == "SUCCESS" and record["result"] == 8
    assert record["progress"] == {"current": 8, "total": 8, "percent": 100.0, "message": "8", "retries": 0}
    # A message about the end already held is kept: which of two such reports came later is unknown.
    assert not records.merge(record, final(8, 8, message="an older copy"))
    assert record["progress"]["message"] == "8"
    # An earlier attempt's final report says nothing about the attempt that succeeded.
    record = apply(received, progress(3, 8), dict(backend, retries=1))
    assert not records.merge(record, final(8, 8))
    assert record["progress"]["message"] == ""
    # Nor does a report merged over an ending that does not say its attempt (a coalescer's partial
    # that began with the backend's SUCCESS, read without result_extended).
    partial = dict(backend)
    assert not records.merge(partial, final(8, 8), partial=True) or not partial.get("progress")
    # A coalescer batch that merged the final report and then the worker's task-succeeded holds a
    # SUCCESS of its own, which counts for less than the backend's already stored: the report's
    # message still reaches the task (ci78: "step 2 of 2" was missing from a succeeded row).
    record = apply(received, progress(3, 8), backend)
    batch = final(8, 8, message="all 8 done")
    records.merge(batch, records.from_event(event("task-succeeded", timestamp=T0 + 2)), partial=True)
    assert batch["state"] == "SUCCESS" and batch["progress"]["message"] == "all 8 done"
    assert records.merge(record, batch)
    assert record["progress"] == {"current": 8, "total": 8, "percent": 100.0, "message": "all 8 done", "retries": 0}
    assert record["state"] == "SUCCESS" and record["result"] == 8
    # Such a batch whose report was an earlier step's says nothing new (SUCCESS cleared its message).
    record = apply(received, progress(3, 8), backend)
    batch = final(5, 8, message="step 5")
    records.merge(batch, records.from_event(event("task-succeeded", timestamp=T0 + 2)), partial=True)
    assert not records.merge(record, batch)
    assert record["progress"]["message"] == ""
    # A failed or cancelled task's bar is not filled by a late report.
    record = apply(received, progress(3, 8), records.from_event(event("task-failed", exception="ValueError()")))
    assert not records.merge(record, final(8, 8))
    assert record["state"] == "FAILURE" and record["progress"]["current"] == 3


def test_arguments_from_events_are_masked_and_routing_kept() -> None:
    record = new_record("t")
    merge(record, from_event({"type": "task-sent", "uuid": "t", "timestamp": 1.0, "name": "x", "args": "(1, 'a')",
                              "kwargs": "{'Password': 'hunter2', 'opts': {'db': {'API_KEY': 'k1'}}, 'n': 3}",
                              "queue": "reports", "exchange": "", "routing_key": "reports"}))
    merge(record, from_event({"type": "task-received", "uuid": "t", "timestamp": 2.0, "name": "x",
                              "hostname": "w1", "args": "(9,)", "kwargs": "{'token': abc}"}))
    assert record["args"] == "(1, 'a')" and "hunter2" not in record["kwargs"] and "k1" not in record["kwargs"]
    assert record["kwargs"] == "{'Password': ********, 'opts': {'db': {'API_KEY': ********}}, 'n': 3}"
    assert (record["queue"], record["exchange"], record["routing_key"]) == ("reports", "", "reports")
    assert record["received"] == iso(2.0)


def test_every_attempt_is_kept_with_its_error() -> None:
    record = new_record("t")
    events = [("task-received", 1, {"hostname": "w1", "retries": 0}), ("task-started", 2, {"hostname": "w1"}),
              ("task-retried", 3, {"exception": "ValueError('first')"}),
              ("task-received", 4, {"hostname": "w2", "retries": 1}), ("task-started", 5, {"hostname": "w2"}),
              ("task-failed", 6, {"exception": "KeyError('second')"})]
    for kind, when, fields in events:
        merge(record, from_event({"type": kind, "uuid": "t", "timestamp": float(when), "name": "x", **fields}))
    assert record["attempts"] == [
        {"retries": 0, "worker": "w1", "started": iso(2.0), "finished": iso(3.0),
         "error": {"type": "ValueError", "message": "first"}},
        {"retries": 1, "worker": "w2", "started": iso(5.0), "finished": iso(6.0),
         "error": {"type": "KeyError", "message": "second"}}]


def test_attempts_are_bounded_to_the_latest() -> None:
    record = new_record("t")
    for attempt in range(25):
        merge(record, {"id": "t", "state": "STARTED", "retries": attempt, "worker": "w", "started": iso(attempt)})
    assert len(record["attempts"]) == 20 and record["attempts"][0]["retries"] == 5


def test_a_message_body_gives_masked_previews_and_its_queue() -> None:
    from kombu import Queue

    from celery_dashboard import index

    body = ((1, {"secret": "s3"}), {"password": "hunter2", "page": 2, "x": "y" * 5000}, {})
    found = index.details({"argsrepr": "ignored"}, body, "", "reports", [Queue("reports")])
    assert found["args"] == "(1, {'secret': ********})" and "hunter2" not in found["kwargs"]
    assert len(found["kwargs"]) <= 1000 and found["kwargs"].startswith("{'password': ********, 'page': 2")
    assert (found["queue"], found["exchange"], found["routing_key"]) == ("reports", "", "reports")
    # No body (a custom publisher): Celery's repr headers, masked the same way.
    assert index.details({"argsrepr": "()", "kwargsrepr": "{'token': 'abc'}"})["kwargs"] == "{'token': ********}"


def test_a_late_retry_and_a_coalesced_batch_keep_every_attempt_apart() -> None:
    from web.coalescer import Coalescer

    record = new_record("t")
    coalescer = Coalescer()
    # Attempt 1 starts in another pool process before the worker reports attempt 0's retry; the
    # whole run reaches the store as one coalesced batch.
    events = [("task-received", 1, {"hostname": "w1", "retries": 0}), ("task-started", 2, {"hostname": "w1"}),
              ("task-received", 3, {"hostname": "w1", "retries": 1}), ("task-started", 4, {"hostname": "w1"}),
              ("task-retried", 5, {"exception": "ValueError('first')"}),
              ("task-retried", 6, {"exception": "ValueError('second')"}),
              ("task-received", 7, {"hostname": "w1", "retries": 2}), ("task-succeeded", 8, {"hostname": "w1"})]
    for kind, when, fields in events:
        coalescer.add(from_event({"type": kind, "uuid": "t", "timestamp": float(when), "name": "x", **fields}))
    while coalescer:
        for update in coalescer.take()[0].values():
            merge(record, update)
    assert [(a["retries"], (a["error"] or {}).get("message")) for a in record["attempts"]] == [
        (0, "first"), (1, "second"), (2, None)]
    assert record["state"] == "SUCCESS" and "attempt_notes" not in record


def test_each_attempts_error_is_a_bounded_preview() -> None:
    """A 5,000-character exception message is kept whole in the task's own error (up to its
    bound), but each attempt in the list carries a short preview of it."""
    long = "x" * 5000
    record = apply(records.from_event(event("task-started")),
                   records.from_event(event("task-retried", exception=f"ValueError('{long}')", timestamp=T0 + 1)))
    message = record["attempts"][0]["error"]["message"]
    assert len(message) <= records.ATTEMPT_MESSAGE and message.startswith("xxx") and message.endswith("xxx")
    cut = 5000 - (len(message) - len("… [0,000 characters cut] …"))
    assert f"… [{cut:,} characters cut] …" in message  # the preview says how much it left out
    assert len(record["error"]["message"]) == 5000


# A failure as Celery reports it: the frames of the task's code, then the exception's line.
FRAMES = ('Traceback (most recent call last):\n'
          '  File "/venv/celery/app/trace.py", line 453, in trace_task\n    R = retval = fun(*args, **kwargs)\n'
          '  File "/app/tasks/report.py", line 41, in build_report\n    rows = fetch(query)\n'
          '  File "/app/tasks/report.py", line 17, in fetch\n    raise QueryError(detail)\n'
          '          ^^^^^^^^^^^^^^^^^^^^^^^^\n')


def test_a_huge_exception_message_leaves_the_traceback_its_frames_and_says_what_was_cut() -> None:
    """A 30,000-character message (a query and its rows, say) used to fill the kept traceback, which
    kept its last MAX_TEXT characters: no frame was left and nothing said so. Now the frames stay,
    the message keeps its start and end, and a marker says how many characters were cut."""
    detail = "SELECT " + "a_column, " * 3000 + "-- the end of the query"
    traceback = FRAMES + f"tasks.report.QueryError: {detail}\n"
    for update in (from_event(event("task-failed", exception=f"QueryError({detail!r})", traceback=traceback)),
                   records.from_meta("t1", {"status": "FAILURE", "traceback": traceback,
                                            "result": {"exc_type": "QueryError", "exc_message": [detail]}})):
        error = update["error"]
        shown = error["traceback"]
        assert len(shown) <= records.MAX_TEXT < len(traceback)
        assert shown.startswith(FRAMES)  # every frame, down to the line that raised
        assert "\ntasks.report.QueryError: SELECT a_column, a_column" in shown
        assert shown.endswith("-- the end of the query\n")
        [said] = re.findall(r"… \[([\d,]+) characters cut\] …", shown)
        assert int(said.replace(",", "")) == len(traceback) - len(shown) + len(f"… [{said} characters cut] …")
        message = error["message"]
        assert len(message) <= records.MAX_TEXT < len(detail)
        assert message.startswith("SELECT a_column") and message.endswith("-- the end of the query")
        assert re.search(r"… \[[\d,]+ characters cut\] …", message)


def test_a_traceback_of_many_frames_keeps_where_it_started_and_where_it_was_raised() -> None:
    deep = "".join(f'  File "/app/tasks/walk.py", line 9, in walk\n    return walk(node.children[{i}])\n'
                   for i in range(1000))
    raised = '  File "/app/tasks/report.py", line 17'
    traceback = FRAMES.replace(raised, deep + raised) + "tasks.report.QueryError: too deep\n"
    error = from_event(event("task-failed", exception="QueryError('too deep')", traceback=traceback))["error"]
    shown = error["traceback"]
    assert len(traceback) > records.MAX_TEXT >= len(shown)
    assert shown.startswith('Traceback (most recent call last):\n  File "/venv/celery/app/trace.py"')
    assert shown.endswith('  File "/app/tasks/report.py", line 17, in fetch\n    raise QueryError(detail)\n'
                          '          ^^^^^^^^^^^^^^^^^^^^^^^^\ntasks.report.QueryError: too deep\n')
    marker = re.search(r"\n… \[([\d,]+) characters cut\] …\n", shown)  # a line of its own, between whole frames
    assert marker and shown[marker.end():].startswith(("  File ", "    return walk"))
    assert error["message"] == "too deep"


def test_a_long_message_cut_in_the_traceback_is_still_masked() -> None:
    """A sensitive value whose name is before the cut is masked in the part kept after it."""
    detail = "{'rows': '" + "r" * 30_000 + "', 'password': 'hunter2-" + "p" * 20 + "'}"
    traceback = FRAMES + f"tasks.report.QueryError: {detail}\n"
    error = from_event(event("task-failed", exception=f"QueryError({detail!r})", traceback=traceback))["error"]
    assert "hunter2" not in error["traceback"] and "hunter2" not in error["message"]
    assert error["traceback"].endswith("'password': ********}\n")


@pytest.mark.parametrize("launched", [True, False], ids=["launched here", "sent by other code"])
@pytest.mark.parametrize("late_retry", ["no", "received", "started"],
                         ids=["retry first", "next attempt received first", "next attempt started first"])
def test_every_attempt_keeps_its_worker_and_times_at_every_tick_boundary(launched: bool, late_retry: str) -> None:
    """A task retried twice with countdown=0 runs its three attempts within a few milliseconds, so
    any run of its events may share one coalesced batch. A launch adds its pending task object
    first (it holds an `attempts` list of its own): that list must not swallow the attempts the
    batch went through (seen as two attempts, the first without worker or start, in make test).

    The worker reports a retry from its main process, so the next attempt may be received, or even
    started in another pool process, before it: each retry still counts one attempt (seen in make
    test: both retries late made a fourth attempt and `retries` 3)."""
    import itertools

    from celery_dashboard import index
    from web.coalescer import Coalescer

    events: list[tuple[str, dict[str, Any]]] = [] if launched else [("task-sent", {"name": "x"})]
    def run(attempt: int) -> list[tuple[str, dict[str, Any]]]:
        return [("task-received", {"hostname": "w1", "retries": attempt, "name": "x"}),
                ("task-started", {"hostname": "w1"})]

    if late_retry == "started":  # the log of make test's failure: both retries after the next attempt
        events += run(0) + run(1) + [("task-retried", {"exception": "ValueError('0')"})]
        events += [("task-received", {"hostname": "w1", "retries": 2, "name": "x"}),
                   ("task-retried", {"exception": "ValueError('1')"}),
                   ("task-started", {"hostname": "w1"}), ("task-succeeded", {"hostname": "w1"})]
    for attempt in range(3) if late_retry != "started" else ():
        if attempt == 2:
            events += run(attempt) + [("task-succeeded", {"hostname": "w1"})]
        elif late_retry == "received" and attempt == 1:  # attempt 1's retry reported after attempt 2 was received
            events += run(attempt) + [("task-received", {"hostname": "w1", "retries": 2, "name": "x"}),
                                      ("task-retried", {"exception": "ValueError('1')"})]
            events += [("task-started", {"hostname": "w1"}), ("task-succeeded", {"hostname": "w1"})]
            break
        else:
            events += run(attempt) + [("task-retried", {"exception": f"ValueError('{attempt}')"})]
    updates = [from_event({"type": kind, "uuid": "t", "timestamp": T0 + n / 1000, **fields})
               for n, (kind, fields) in enumerate(events)]
    wrong = []
    for cuts in itertools.product((False, True), repeat=len(updates)):
        record, coalescer = new_record("t"), Coalescer()

        def flush(record: dict[str, Any] = record, coalescer: Coalescer = coalescer) -> None:
            for update in coalescer.take()[0].values():
                merge(record, {k: v for k, v in update.items() if k != "fetch"})

        if launched:
            coalescer.add(dict(index.pending_record("t", "x", None, T0 - 1, "alice"), source="event"))
        for update, cut in zip(updates, cuts, strict=True):
            coalescer.add(dict(update))
            if cut:
                flush()
        while coalescer:
            flush()
        seen = [(a["retries"], a["worker"], bool(a["started"]), bool(a["finished"]), (a["error"] or {}).get("message"))
                for a in record["attempts"]]
        if seen != [(0, "w1", True, True, "0"), (1, "w1", True, True, "1"), (2, "w1", True, True, None)] or (
                record["retries"], record["state"]) != (2, "SUCCESS"):
            wrong.append((cuts, record["retries"], seen))
    assert not wrong, f"{len(wrong)} of {2 ** len(updates)} tick boundaries lose an attempt, e.g. {wrong[0]}"


def test_a_results_sensitive_keys_are_masked_before_it_is_stored() -> None:
    """MASKED_ARGUMENTS applies to results too: the value of a dict key whose name holds one of its
    words reads ******** in the preview, at any depth; other values are kept."""
    result = {"user": "ann", "password": "hunter2", "items": [{"API-Key": "k-123", "n": 1}], "tokens": 3}
    update = records.from_meta("t1", {"status": "SUCCESS", "result": result})
    assert update["result"] == {"user": "ann", "password": "********", "items": [{"API-Key": "********", "n": 1}],
                                "tokens": "********"}
    assert "hunter2" not in str(update) and "k-123" not in str(update)
    big = records.from_meta("t1", {"status": "SUCCESS", "too_large": 5_000_000,
                                   "head": '{"rows": 9, "secret": "s3cr3t", "x": [1, 2'})
    assert "s3cr3t" not in big["result"] and '"secret": ********' in big["result"], big["result"]


SECRET_MESSAGE = {"api_token": "SUPERSECRET", "x": "y" * 5000}
TRACEBACK = ('Traceback (most recent call last):\n  File "/app/tasks/demo.py", line 88, in fail\n'
             "    raise ValueError(message)\n"
             f"ValueError: {SECRET_MESSAGE!r}\n")


def test_an_errors_message_traceback_and_attempts_are_masked_from_events_and_the_backend() -> None:
    """An exception that repeats the task's arguments (`ValueError({'api_token': ...})`) shows the
    sensitive value as ******** in its message, its traceback and each attempt's error, whether the
    error comes from the worker's events or from the result backend's record."""
    retried = from_event(event("task-retried", exception=f"ValueError({SECRET_MESSAGE!r})", traceback=TRACEBACK))
    failed = from_event(event("task-failed", exception=f"ValueError({SECRET_MESSAGE!r})", traceback=TRACEBACK))
    stored = records.from_meta("t1", {"status": "FAILURE", "traceback": TRACEBACK, "date_done": "2026-11-30T05:00:00",
                                      "result": {"exc_type": "ValueError", "exc_message": [SECRET_MESSAGE],
                                                 "exc_module": "builtins"}})
    for update in (retried, failed, stored):
        error = update["error"]
        assert "SUPERSECRET" not in str(error), error
        assert error["message"].startswith("{'api_token': ********, 'x': 'yyy"), error["message"][:60]
        assert "ValueError: {'api_token': ********, 'x': 'yyy" in error["traceback"]
        assert '  File "/app/tasks/demo.py", line 88, in fail\n    raise ValueError(message)\n' in error["traceback"]
    assert failed["error"]["message"] == stored["error"]["message"]
    record = apply(from_event(event("task-started")), retried, from_event(event("task-started", timestamp=T0 + 1)),
                   failed, stored)
    assert record["attempts"] and all(a["error"] for a in record["attempts"]), record["attempts"]
    assert "SUPERSECRET" not in str(record)


def test_a_progress_message_and_a_results_texts_are_masked() -> None:
    said = {"current": 1, "total": 2, "message": "logging in with password=hunter2, page 1"}
    update = records.from_event(event("task-progress", progress=said))
    assert update["progress"]["message"] == "logging in with password=********, page 1"
    text = records.from_meta("t1", {"status": "SUCCESS", "result": ["ok", "{'secret': 's3cr3t', 'n': 1}"]})
    assert text["result"] == ["ok", "{'secret': ********, 'n': 1}"]


def test_a_retry_reported_after_the_next_attempt_ended_still_gives_its_attempt_the_error() -> None:
    """countdown=0 on a pool: attempt 2 may run and end in another pool process before the worker
    reports attempt 1's task-retried (seen once in make test: an attempt without its error)."""
    record = new_record("t")
    events = [("task-received", 1, {"hostname": "w1", "retries": 0}), ("task-started", 2, {"hostname": "w1"}),
              ("task-retried", 3, {"exception": "ValueError('first')"}),
              ("task-received", 4, {"hostname": "w1", "retries": 1}), ("task-started", 5, {"hostname": "w1"}),
              ("task-received", 6, {"hostname": "w1", "retries": 2}), ("task-started", 7, {"hostname": "w1"}),
              ("task-succeeded", 8, {"hostname": "w1"}), ("task-retried", 9, {"exception": "ValueError('second')"})]
    for kind, when, fields in events:
        merge(record, from_event({"type": kind, "uuid": "t", "timestamp": float(when), "name": "x", **fields}))
    assert [(a["retries"], (a["error"] or {}).get("message")) for a in record["attempts"]] == [
        (0, "first"), (1, "second"), (2, None)]
    assert record["state"] == "SUCCESS"


@pytest.mark.parametrize("backend_first", [False, True], ids=["event first", "backend read first"])
@pytest.mark.parametrize("extended", [False, True], ids=["plain backend", "result_extended"])
def test_a_retry_read_from_the_backend_in_the_same_batch_as_its_event_keeps_the_attempts_error(
        backend_first: bool, extended: bool) -> None:
    """The reconciler reads a running task's backend entry while the worker reports its retry: the
    backend's RETRY (which carries no attempt note) and the task-retried event meet in one coalesced
    batch, in either order. Seen in make test and on a loaded machine (1 task in 40 to 160): the
    batch took the backend's source, the event's retry was lost with it, and the next retry's error
    went to the wrong attempt or none."""
    record = new_record("t")

    def batch(*updates: dict[str, Any]) -> None:
        coalescer = Coalescer()
        for update in updates:
            coalescer.add(update)
        while coalescer:
            for update in coalescer.take()[0].values():
                merge(record, update)

    def ev(kind: str, when: float, **fields: Any) -> dict[str, Any]:
        return from_event({"type": kind, "uuid": "t", "timestamp": T0 + when, "name": "x", "hostname": "w1", **fields})

    def retried(attempt: int, when: float) -> list[dict[str, Any]]:
        meta = {"status": "RETRY", "traceback": f"Traceback ...\nFlakyError: attempt {attempt + 1} failed",
                "result": {"exc_type": "FlakyError", "exc_message": [f"attempt {attempt + 1} failed"],
                           "exc_module": "tasks.demo"}, "date_done": None}
        if extended:
            meta.update(name="x", worker="w1", retries=attempt)
        read = records.from_meta("t", meta)
        told = ev("task-retried", when, exception=f"FlakyError('attempt {attempt + 1} failed')")
        return [read, told] if backend_first else [told, read]

    for attempt in range(3):
        batch(ev("task-received", attempt * 10 + 1, retries=attempt), ev("task-started", attempt * 10 + 2))
        if attempt < 2:
            batch(*retried(attempt, attempt * 10 + 3))
    batch(ev("task-succeeded", 23))
    assert [(a["retries"], (a["error"] or {}).get("message")) for a in record["attempts"]] == [
        (0, "attempt 1 failed"), (1, "attempt 2 failed"), (2, None)]
    assert record["state"] == "SUCCESS" and record["retries"] == 2


def test_a_retry_between_long_runs_of_progress_in_one_batch_keeps_its_error() -> None:
    """A listener that fell behind (a Redis outage, a slow web) gets a task's events in a burst:
    one coalesced batch may hold hundreds of progress reports on both sides of a retry. The notes
    the batch keeps are bounded (MAX_NOTES); the retry among them must not be pushed out."""
    record = new_record("t")
    coalescer = Coalescer()
    events = [("task-received", {"retries": 0}), ("task-started", {})]
    events += [("task-progress", {"retries": 0, "progress": records_meta(n, 200)}) for n in range(1, 101)]
    events += [("task-retried", {"exception": "ValueError('first')"}), ("task-received", {"retries": 1}),
               ("task-started", {})]
    events += [("task-progress", {"retries": 1, "progress": records_meta(n, 200)}) for n in range(1, 101)]
    events += [("task-retried", {"exception": "ValueError('second')"}), ("task-received", {"retries": 2}),
               ("task-started", {})]
    events += [("task-progress", {"retries": 2, "progress": records_meta(n, 200)}) for n in range(1, 201)]
    events += [("task-succeeded", {})]
    for when, (kind, fields) in enumerate(events):
        coalescer.add(from_event({"type": kind, "uuid": "t", "timestamp": T0 + when / 1000, "name": "x",
                                  "hostname": "w1", **fields}))
    while coalescer:
        for update in coalescer.take()[0].values():
            assert len(update.get("attempt_notes", ())) <= records.MAX_NOTES
            merge(record, update)
    assert [(a["retries"], a["worker"], (a["error"] or {}).get("message")) for a in record["attempts"]] == [
        (0, "w1", "first"), (1, "w1", "second"), (2, "w1", None)]
    assert all(a["started"] is not None for a in record["attempts"])


@pytest.mark.parametrize("ending", ["SUCCESS", "FAILURE"])
@pytest.mark.parametrize("one_batch", [False, True], ids=["events one by one", "events in one batch"])
def test_an_ending_read_from_the_backend_first_still_lists_the_attempt_the_events_tell(
        ending: str, one_batch: bool) -> None:
    """The reconciler (or the pusher's fetch) can store the result backend's ending before the
    listener, behind under load, merges the task's events: the Attempts table still lists who ran
    it and when (it showed a dash for the worker, start and end while the task's `started` was set)."""
    record = new_record("t")
    meta = ({"status": "SUCCESS", "result": 3, "date_done": "2023-11-14T22:13:25"} if ending == "SUCCESS" else
            {"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["boom"]},
             "traceback": "Traceback ...\\nValueError: boom", "date_done": "2023-11-14T22:13:25"})
    merge(record, records.from_meta("t", meta))
    assert record["state"] == ending and record["attempts"] == []
    late = [from_event(event("task-received", retries=0, name="x", timestamp=T0 + 1)),
            from_event(event("task-started", timestamp=T0 + 2)), progress(5, at=T0 + 3),
            from_event(event("task-succeeded", timestamp=T0 + 4) if ending == "SUCCESS" else
                       event("task-failed", exception="ValueError('boom')", timestamp=T0 + 4))]
    if one_batch:
        coalescer = Coalescer()
        for update in late:
            coalescer.add(update)
        late = list(coalescer.take()[0].values())
    for update in late:
        merge(record, update)
    [attempt] = record["attempts"]
    # The worker's ending times its attempt; the task keeps the time it was stored with.
    assert (attempt["worker"], attempt["started"], attempt["finished"]) == ("celery@w1", iso(T0 + 2), iso(T0 + 4))
    assert (attempt["error"] or {}).get("message") == (None if ending == "SUCCESS" else "boom")
    assert record["state"] == ending and record["started"] == iso(T0 + 2)


def test_late_news_that_names_no_worker_changes_no_attempt() -> None:
    record = apply(records.from_meta("t1", {"status": "SUCCESS", "result": 1}))
    assert not merge(record, {"id": "t1", "state": "STARTED"})
    assert not merge(record, dict(progress(3), worker=None))
    assert record["attempts"] == []


def test_a_retried_task_s_events_after_its_backend_ending_give_every_attempt_its_error() -> None:
    """result_extended: the backend's SUCCESS names the last attempt (retries 2), stored before the
    listener's batch of the whole run (numbered as the listener numbers it)."""
    record = new_record("t")
    merge(record, records.from_meta("t", {"status": "SUCCESS", "result": 1, "retries": 2, "worker": "celery@w1",
                                          "name": "x", "date_done": "2023-11-14T22:13:25"}))
    coalescer, numbering = Coalescer(), records.Numbering()

    def add(kind: str, when: float, **fields: Any) -> None:
        coalescer.add(from_event(numbering.number(event(kind, timestamp=T0 + when, **fields))))

    for attempt in range(3):
        add("task-received", attempt * 10, retries=attempt)
        add("task-started", attempt * 10 + 1)
        if attempt < 2:
            add("task-retried", attempt * 10 + 2, exception=f"ValueError('{attempt}')")
    add("task-succeeded", 22)
    while coalescer:
        for update in coalescer.take()[0].values():
            merge(record, update)
    assert [(a["retries"], (a["error"] or {}).get("message"), a["started"]) for a in record["attempts"]] == [
        (0, "0", iso(T0 + 1)), (1, "1", iso(T0 + 11)), (2, None, iso(T0 + 21))]
    assert all(a["finished"] for a in record["attempts"])
    assert record["state"] == "SUCCESS" and record["retries"] == 2
