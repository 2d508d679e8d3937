"""The Attempts table under the orders a loaded machine delivers: the result backend's ending or
RETRY read by the reconciler before, between or with the task's events; countdown=0 retries whose
next attempt runs before the retry is reported; another web process's copy of an event; a burst
after a listener fell behind. Events go through the listener's `Numbering`, as in the web process;
each test asserts what the table shows: (attempt, worker, started, ended, error), times in seconds
after T0."""
from __future__ import annotations

from typing import Any

import pytest

from web import records
from web.coalescer import Coalescer
from web.records import from_event, iso, merge, new_record

T0 = 1_700_000_000.0


NUMBERING = records.Numbering()


@pytest.fixture(autouse=True)
def _fresh_listener() -> None:
    NUMBERING.known.clear()


def ev(kind: str, when: float, numbering: records.Numbering = NUMBERING, **fields: Any) -> dict[str, Any]:
    """A Celery event as the listener turns it into an update (numbered by `numbering`)."""
    raw = {"type": kind, "uuid": "t", "timestamp": T0 + when, "name": "x", "hostname": "w1", **fields}
    update = from_event(numbering.number(raw))
    assert update is not None
    return update


def batch(record: dict[str, Any], *updates: dict[str, Any]) -> bool:
    """Updates added to one coalescer, then every batch it hands out merged (as the pusher does)."""
    coalescer, changed = Coalescer(), False
    for update in updates:
        coalescer.add(dict(update))
    while coalescer:
        for update in coalescer.take()[0].values():
            changed |= merge(record, {k: v for k, v in update.items() if k != "fetch"})
    return changed


def table(record: dict[str, Any]) -> list[tuple]:
    """(attempt, worker, started, ended, error) with times as seconds after T0."""
    rel = lambda v: v and round(records.epoch(v) - T0, 3)  # noqa: E731
    return [(a["retries"], a["worker"], rel(a["started"]), rel(a["finished"]), (a["error"] or {}).get("message"))
            for a in record["attempts"]]


# Celery's default backend entry: no result_extended
PLAIN_SUCCESS = {"status": "SUCCESS", "result": 1, "date_done": iso(T0 + 50)[:-6]}


# The result backend's ending first, without result_extended (Celery's default)
def test_backend_success_first_then_a_countdown0_retry_gives_the_error_to_the_attempt_that_failed() -> None:
    record = new_record("t")
    merge(record, records.read_entry("t", PLAIN_SUCCESS))  # the reconciler read it; the listener is behind
    for update in [ev("task-received", 1, retries=0), ev("task-started", 2), ev("task-received", 3, retries=1),
                   ev("task-started", 4), ev("task-retried", 5, exception="E('first')"), ev("task-succeeded", 6)]:
        batch(record, update)  # one event per tick
    assert table(record) == [(0, "w1", 2, 5, "first"), (1, "w1", 4, 6, None)]


def test_backend_success_first_then_an_in_order_retry_ends_each_attempt_at_its_own_time() -> None:
    record = new_record("t")
    merge(record, records.read_entry("t", PLAIN_SUCCESS))
    for update in [ev("task-received", 1, retries=0), ev("task-started", 2),
                   ev("task-retried", 3, exception="E('first')"),
                   ev("task-received", 4, retries=1), ev("task-started", 5), ev("task-succeeded", 6)]:
        batch(record, update)
    assert table(record) == [(0, "w1", 2, 3, "first"), (1, "w1", 5, 6, None)]


def test_backend_success_first_then_another_web_process_s_copy_of_the_retry_changes_nothing() -> None:
    record = new_record("t")
    merge(record, records.read_entry("t", PLAIN_SUCCESS))
    retried = ev("task-retried", 3, exception="E('first')")
    for update in [ev("task-received", 1, retries=0), ev("task-started", 2), retried,
                   ev("task-received", 4, retries=1), ev("task-started", 5), ev("task-succeeded", 6)]:
        batch(record, update)
    shown = table(record)
    # Web process B (its own listener, behind) merges the same task-retried into the stored object.
    changed = batch(record, retried)
    assert not changed and table(record) == shown, table(record)


def test_an_unknown_verdict_then_the_real_events_give_each_attempt_its_own_end() -> None:
    record = new_record("t")
    verdict = records.unknown("t")
    verdict["finished"] = verdict["updated"] = iso(T0 + 40)  # inferred during a Redis outage
    merge(record, verdict)
    for update in [ev("task-received", 1, retries=0), ev("task-started", 2),
                   ev("task-retried", 3, exception="E('first')"),
                   ev("task-received", 4, retries=1), ev("task-started", 5), ev("task-succeeded", 6)]:
        batch(record, update)
    assert record["state"] == "SUCCESS" and table(record) == [(0, "w1", 2, 3, "first"), (1, "w1", 5, 6, None)]


# With result_extended (this project's config): the backend's ending names the last attempt
EXT_SUCCESS = dict(PLAIN_SUCCESS, retries=1, worker="w1", name="x")  # result_extended (this project's config)


def test_extended_success_first_then_a_batch_opening_with_the_early_task_started_keeps_each_start() -> None:
    """celery_dashboard sends task-started from the pool process at once; the worker's task-received
    is buffered, so a batch of a task's events often opens with a task-started."""
    record = new_record("t")
    merge(record, records.read_entry("t", EXT_SUCCESS))
    batch(record, ev("task-started", 1.5, via="celery_dashboard", retries=0), ev("task-received", 1, retries=0),
          ev("task-started", 2), ev("task-retried", 3, exception="E('first')"),
          ev("task-started", 4.5, via="celery_dashboard", retries=1),
          ev("task-received", 4, retries=1), ev("task-started", 5), ev("task-succeeded", 6))
    assert table(record) == [(0, "w1", 1.5, 3, "first"), (1, "w1", 4.5, 50, None)]


def test_extended_success_read_between_an_attempts_events_keeps_each_start_on_its_attempt() -> None:
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), records.read_entry("t", EXT_SUCCESS), ev("task-started", 2),
          ev("task-retried", 3, exception="E('first')"), ev("task-received", 4, retries=1), ev("task-started", 5),
          ev("task-succeeded", 6))
    # One batch: the worker's ending, merged after the backend's, gives the attempt its own time.
    assert table(record) == [(0, "w1", 2, 3, "first"), (1, "w1", 5, 6, None)]


def test_countdown0_the_next_attempt_s_task_started_after_the_ending_is_its_own() -> None:
    for meta, ended in ((PLAIN_SUCCESS, 6), (EXT_SUCCESS, 50)):
        NUMBERING.known.clear()
        record = new_record("t")
        batch(record, ev("task-received", 1, retries=0), ev("task-started", 2), ev("task-received", 3, retries=1),
              records.read_entry("t", meta))
        batch(record, ev("task-started", 4), ev("task-retried", 5, exception="E('first')"), ev("task-succeeded", 6))
        # The entry without result_extended names no attempt: the worker's ending times the last one.
        assert table(record) == [(0, "w1", 2, 5, "first"), (1, "w1", 4, ended, None)]


# Another web process's copy of an event
def test_a_copy_of_a_task_started_after_a_countdown0_run_adds_no_attempt() -> None:
    """countdown=0, attempt 2 starts before the worker reports attempt 1's retry, the listener feeds
    it all before one take (everything after the first retry waits in `deferred`, where the guessed
    RETRY and then SUCCESS merge: `retries` 3 is stored). Then another web process's copy of a
    task-started arrives."""
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2), ev("task-retried", 3, exception="E('0')"),
          ev("task-received", 4, retries=1), ev("task-started", 5), ev("task-received", 6, retries=2),
          ev("task-started", 7), ev("task-retried", 8, exception="E('1')"), ev("task-succeeded", 9))
    assert table(record) == [(0, "w1", 2, 3, "0"), (1, "w1", 5, 8, "1"), (2, "w1", 7, 9, None)]
    assert record["retries"] == 2
    # Web process B's listener, behind, numbers the same task-started as it saw it: attempt 1.
    other = records.Numbering()
    other.number({"type": "task-received", "uuid": "t", "retries": 1})
    assert not merge(record, ev("task-started", 5, numbering=other)) and len(record["attempts"]) == 3
    # A copy nobody could number (its task-received missed) changes nothing either.
    assert not merge(record, ev("task-started", 5, numbering=records.Numbering()))
    assert len(record["attempts"]) == 3


# A listener that fell behind
def test_twenty_attempts_in_one_batch_each_keep_their_error() -> None:
    def prog(when: float, n: int) -> dict[str, Any]:
        return ev("task-progress", when, retries=n, progress={"current": 1, "total": 2})
    record, events = new_record("t"), []
    for n in range(20):
        t = n * 10
        events += [ev("task-received", t + 1, retries=n), ev("task-started", t + 2), prog(t + 3, n)]
        events += [ev("task-retried", t + 4, exception=f"E('{n}')")] if n < 19 else [ev("task-succeeded", t + 4)]
    batch(record, *events)  # a listener behind feeds it at once
    assert [(a[0], a[4]) for a in table(record)] == [(n, str(n) if n < 19 else None) for n in range(20)]


# The retry's own state
@pytest.mark.parametrize("extended", [False, True], ids=["plain backend", "result_extended"])
@pytest.mark.parametrize("backend_first", [False, True], ids=["event first", "backend read first"])
def test_a_retry_told_by_the_event_and_the_backend_in_one_batch_shows_retrying(extended: bool,
                                                                             backend_first: bool) -> None:
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2))
    meta = {"status": "RETRY", "traceback": "x", "date_done": None,
            "result": {"exc_type": "E", "exc_message": ["first"]}}
    if extended:
        meta.update(retries=0, worker="w1", name="x")  # the request of the attempt that failed
    read, told = records.read_entry("t", meta), ev("task-retried", 3, exception="E('first')")
    batch(record, *((read, told) if backend_first else (told, read)))
    assert (record["state"], record["retries"]) == ("RETRY", 1)
    assert table(record) == [(0, "w1", 2, 3, "first")]


def test_the_listener_numbers_only_what_it_can_know_and_forgets_the_oldest() -> None:
    numbering = records.Numbering(limit=2)
    assert numbering.number({"type": "task-started", "uuid": "a"}).get("retries") is None  # never received
    numbering.number({"type": "task-received", "uuid": "a", "retries": 1})
    started = {"type": "task-started", "uuid": "a"}
    assert numbering.number(started)["retries"] == 1 and "retries" not in started  # a copy is numbered
    # task-retried may come after the next attempt's task-received; task-revoked may name a queued task.
    assert "retries" not in numbering.number({"type": "task-retried", "uuid": "a"})
    assert "retries" not in numbering.number({"type": "task-revoked", "uuid": "a"})
    assert numbering.number({"type": "task-succeeded", "uuid": "a"}).get("retries") is None  # forgotten at its end
    for task_id in ("b", "c", "d"):
        numbering.number({"type": "task-received", "uuid": task_id, "retries": 0})
    assert list(numbering.known) == ["c", "d"]
    # celery_dashboard's own reports name their attempt, from the pool process: they number nothing else.
    numbering.number({"type": "task-progress", "uuid": "c", "retries": 2})
    numbering.number({"type": "task-started", "uuid": "c", "retries": 2})
    assert numbering.number({"type": "task-failed", "uuid": "c"})["retries"] == 0


@pytest.mark.parametrize("ending", ["SUCCESS", "FAILURE", "REVOKED"])
def test_an_entry_naming_no_attempt_read_before_a_countdown0_retry_is_reported_ends_no_attempt(ending: str) -> None:
    """Celery's default backend, countdown=0: the reconciler stores the task's ending while the
    listener has not yet merged the retry. The ending must not close attempt 0 (the retry's error
    then went to the attempt that succeeded, failed for good or was cancelled)."""
    result = {"SUCCESS": 1, "FAILURE": {"exc_type": "E", "exc_message": ["final"]},
              "REVOKED": {"exc_type": "TaskRevokedError", "exc_message": ["terminated"]}}[ending]
    meta = {"status": ending, "result": result, "date_done": iso(T0 + 50)[:-6]}
    kind = {"SUCCESS": "task-succeeded", "FAILURE": "task-failed", "REVOKED": "task-revoked"}[ending]
    fields = {"exception": "E('final')"} if ending == "FAILURE" else {"terminated": True} if ending == "REVOKED" else {}
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2))
    batch(record, records.read_entry("t", meta))
    for update in (ev("task-received", 3, retries=1), ev("task-started", 4),
                   ev("task-retried", 5, exception="E('first')"), ev(kind, 6, **fields)):
        batch(record, update)
    last_error = {"SUCCESS": None, "FAILURE": "final", "REVOKED": "cancelled (terminated)"}[ending]
    assert table(record) == [(0, "w1", 2, 5, "first"), (1, "w1", 4, 6, last_error)]
    assert record["state"] == ending and record["retries"] == 1


@pytest.mark.parametrize("verdict", ["LOST", "UNKNOWN"])
def test_a_verdict_on_a_running_attempt_gives_way_to_the_retry_the_worker_tells_later(verdict: str) -> None:
    """A LOST or UNKNOWN verdict ends the running attempt as a guess; the worker's held-back events
    (a Redis outage, a worker that was only slow) then tell how it really ended."""
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2))
    guess = records.lost("t", "w1", "stopped") if verdict == "LOST" else records.unknown("t")
    guess["finished"] = guess["updated"] = iso(T0 + 40)
    batch(record, guess)
    assert table(record)[0][3] == 40
    batch(record, ev("task-retried", 3, exception="E('first')"), ev("task-received", 4, retries=1),
          ev("task-started", 5), ev("task-succeeded", 6))
    assert (record["state"], record["retries"]) == ("SUCCESS", 1)
    assert table(record) == [(0, "w1", 2, 3, "first"), (1, "w1", 5, 6, None)]


def test_a_batch_s_own_first_attempt_keeps_its_own_start() -> None:
    """A batch that opens with attempt 2's task-received, then a late task-started of attempt 1
    (celery_dashboard's, from the pool process): attempt 2 must not take attempt 1's start time."""
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2), ev("task-retried", 3, exception="E('0')"),
          ev("task-received", 4, retries=1))
    batch(record, ev("task-retried", 6, exception="E('1')"))
    batch(record, ev("task-received", 7, retries=2), ev("task-started", 5, via="celery_dashboard", retries=1),
          ev("task-started", 8), ev("task-succeeded", 9))
    assert table(record) == [(0, "w1", 2, 3, "0"), (1, "w1", 5, 6, "1"), (2, "w1", 8, 9, None)]


def test_a_stored_retry_read_alone_shows_the_task_retrying() -> None:
    """result_extended: the backend's RETRY holds the failed attempt's request (retries 0 for the
    first retry); read while the worker's task-retried was lost, the row still shows RETRY."""
    record = new_record("t")
    batch(record, ev("task-received", 1, retries=0), ev("task-started", 2),
          ev("task-progress", 2.5, retries=0, progress={"current": 1, "total": 2}))
    meta = {"status": "RETRY", "traceback": "x", "date_done": None, "retries": 0, "worker": "w1", "name": "x",
            "result": {"exc_type": "E", "exc_message": ["first"]}}
    batch(record, records.read_entry("t", meta))
    assert (record["state"], record["retries"]) == ("RETRY", 1)


def test_twenty_attempts_nobody_numbered_in_one_batch_each_keep_their_error() -> None:
    """A listener that just reconnected numbers nothing (its Numbering is new): Celery's task-started
    then names no attempt, and each attempt leaves four notes in the batch."""
    nobody = records.Numbering(limit=0)
    record, events = new_record("t"), []
    for n in range(20):
        t = n * 10
        events += [ev("task-received", t + 1, nobody, retries=n),
                   ev("task-started", t + 1.5, nobody, via="celery_dashboard", retries=n),
                   ev("task-started", t + 2, nobody), ev("task-progress", t + 3, nobody, retries=n,
                                                           progress={"current": 1, "total": 2})]
        events += ([ev("task-retried", t + 4, nobody, exception=f"E('{n}')")] if n < 19
                   else [ev("task-succeeded", t + 4, nobody)])
    batch(record, *events)
    assert [(a[0], a[2], a[4]) for a in table(record)] == [(n, n * 10 + 1.5, str(n) if n < 19 else None)
                                                          for n in range(20)]
