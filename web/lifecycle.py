"""A task's life, the one place it is written: its phases, how sure we are of an ending, and which
update may replace which.

Everything else derives from here: `records.merge` applies `accepts`; the store's Lua script only
compares a per-task `version` number (compare-and-set), and the browser compares that number too.

- The *attempt* (`retries`) and the *phase* within it (queued, received, retrying, started,
  running, ended) never move back. Within one phase a newer report replaces an older one, so
  progress may go down or change its total: the task sets it, not us.
- A state is any name Celery or the task gives (`update_state(state="DOWNLOADING")`): states
  this module does not know are a task's own running states.
- An ending has a *confidence*: an inferred verdict (LOST, UNKNOWN) is replaced by any real
  outcome; a worker's event by the result backend's record (Celery's own truth: on an eventlet
  worker a terminated task emits `task-succeeded` before `task-revoked`, while the backend says
  REVOKED); and between two records of the same confidence, the later one. The same ending told
  by both keeps the `finished` time it was first stored with (records.merge).
"""
from __future__ import annotations

from typing import Any

# Celery's ready states (celery.states.READY_STATES) plus the ends Celery does not store:
# IGNORED (the task raised Ignore; celery.app.trace sends no event and stores nothing) and
# REJECTED (the `task-rejected` event of a task that raised Reject).
CELERY_ENDS = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED"})
# Verdicts the dashboard infers when nobody reports: the worker running the task restarted or
# stopped (LOST, Celery's WorkerLostError), or nothing anywhere knows how it ended (UNKNOWN).
LOST = "LOST"
UNKNOWN = "UNKNOWN"
INFERRED = frozenset({LOST, UNKNOWN})
TERMINAL = CELERY_ENDS | INFERRED

# Phases within one attempt. RETRY belongs to the attempt about to run: after its message is
# received, before it starts. STARTED is below every running state a task reports, so the
# backend's stored STARTED never covers a later PROGRESS or custom state.
QUEUED, RECEIVED, RETRYING, STARTED, RUNNING, ENDED = 0, 1, 1.5, 2, 2.5, 3
PHASE = {"PENDING": QUEUED, "RECEIVED": RECEIVED, "RETRY": RETRYING, "STARTED": STARTED}

# How sure an ending is.
INFERENCE, EVENT, BACKEND = 0, 1, 2

KNOWN_STATES = sorted({"PENDING", "RECEIVED", "RETRY", "STARTED", "PROGRESS"} | TERMINAL)


def phase(state: str | None) -> float:
    """The phase of `state`: a known one from PHASE, any ending ENDED, any other name RUNNING."""
    if state in TERMINAL:
        return ENDED
    return PHASE.get(state or "PENDING", RUNNING)


def is_terminal(state: str | None) -> bool:
    return state in TERMINAL


def is_settled(record: dict[str, Any]) -> bool:
    """Ended with a real outcome: nothing but a later backend record can change it."""
    return record.get("state") in CELERY_ENDS


def confidence(update: dict[str, Any]) -> int:
    """How sure an ending is: the update's `source` ("backend" or "event"), inferred otherwise."""
    if update.get("state") in INFERRED:
        return INFERENCE
    return BACKEND if update.get("source") == "backend" else EVENT


def resolve_retry(record: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Give a task-retried update the attempt it announces: the event does not say which.

    A guess from the record's phase alone, for an update that holds too little history to count
    (the coalescer's partial updates). Normally the failed attempt is the record's, and the retry
    announces the next one. But the worker may receive the next attempt's message before it
    reports the retry: then the record already counts the next attempt. A stored task object
    counts its failed attempts instead (`records._resolve_retry`), which holds however late the
    retry is reported.
    """
    if update.get("state") != "RETRY" or "retries" in update or update.get("source") == "backend":
        return update  # the backend's stored RETRY names no attempt without result_extended: keep the record's
    retries = record.get("retries") or 0
    # Waiting: the record counts the next attempt already (received, or a retry told before this
    # one: the backend's stored RETRY and the worker's task-retried tell the same retry, and the
    # attempt it announces must run before it can fail again).
    waiting = retries > 0 and (phase(record.get("state")) < RETRYING or record.get("state") == "RETRY")
    return dict(update, retries=retries if waiting else retries + 1, stale_check=True)


def _later(update: dict[str, Any], record: dict[str, Any]) -> bool:
    """Within one phase: not older. Times are on the web process's clock (see listener.Clocks);
    an untimed update (the backend's record of a running task stored by the task's own
    `update_state`; celery_dashboard's reports say when they were sent, records.from_meta) is new
    information."""
    new, old = update.get("updated"), record.get("updated")
    return not new or not old or new >= old


def accepts(record: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether `update`'s state may replace `record`'s (both task objects or partial ones)."""
    new, old = update.get("state"), record.get("state")
    if new is None:
        return False
    if old in TERMINAL:
        if new not in TERMINAL:
            return False
        mine, theirs = confidence(update), record.get("confidence", EVENT)
        if mine != theirs:
            return mine > theirs
        return mine != INFERENCE and _later(update, record)
    if new in TERMINAL:
        return True
    if update.get("stale_check") and not _later(update, record):
        return False  # a late duplicate of an older retry
    attempt, current = int(update.get("retries", record.get("retries")) or 0), int(record.get("retries") or 0)
    if attempt != current:
        return attempt > current
    if phase(new) != phase(old):
        return phase(new) > phase(old)
    return _later(update, record)
