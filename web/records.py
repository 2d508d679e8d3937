"""The task object the dashboard shows, built from Celery events and result-backend metadata.

An *update* is a partial task object. `merge` applies one to a record under the rules that keep
the dashboard right whatever order updates arrive in: every state has a place in `order` (the
attempt, then the phase within it, then the progress), an update never moves a task to an earlier
place, and a terminal state is final.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
# The phase of a state within one attempt. `retries` counts the attempts before this one: RETRY
# belongs to the attempt about to run (after its message is received, before it starts).
PHASE = {"PENDING": 0, "RECEIVED": 1, "RETRY": 1.5, "STARTED": 2, "PROGRESS": 3}
FIELDS = ("id", "name", "state", "progress", "result", "error", "created", "started",
          "finished", "worker", "parent", "retries", "updated", "owner")
# Kept from the first update that has them; later ones cannot move them. `owner` is the user who
# launched the task (None for tasks sent by other processes: only admins see those).
FIRST_WINS = ("name", "parent", "created", "started", "owner")
MAX_TEXT = 20_000


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="microseconds")


def epoch(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def new_record(task_id: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    record.update(id=task_id, state="PENDING")
    return record


def is_terminal(record: dict[str, Any]) -> bool:
    return record.get("state") in TERMINAL


def order(state: str | None, retries: int | None = 0, progress: dict[str, Any] | None = None) -> list:
    """Where a state stands in a task's life: later places compare greater, terminal is last."""
    if state in TERMINAL:
        return [1, 0, 0, 0]
    current = (progress or {}).get("current", 0) if state == "PROGRESS" else 0
    return [0, int(retries or 0), PHASE.get(state or "PENDING", 0), current if isinstance(current, (int, float)) else 0]


def record_order(record: dict[str, Any]) -> list:
    return order(record.get("state"), record.get("retries"), record.get("progress"))


def resolve_retry(record: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Give a task-retried update the attempt it announces: the event does not say which.

    Normally the failed attempt is the record's, and the retry announces the next one. But the
    worker may receive the next attempt's message before it reports the retry: then the record
    already counts the next attempt.
    """
    if update.get("state") != "RETRY" or "retries" in update:
        return update
    retries = record.get("retries") or 0
    waiting = retries > 0 and PHASE.get(record.get("state") or "PENDING", 0) < PHASE["RETRY"]
    return dict(update, retries=retries if waiting else retries + 1, stale_check=True)


def accepts(record: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether `update`'s state may replace `record`'s: never backwards, terminal is final."""
    new = update.get("state")
    if new is None or record.get("state") in TERMINAL:
        return False
    if new in TERMINAL:
        return True
    if update.get("stale_check") and (update.get("updated") or "") < (record.get("updated") or ""):
        return False  # a late duplicate of an older retry
    retries = update.get("retries", record.get("retries"))
    return order(new, retries, update.get("progress")) >= record_order(record)


def merge(record: dict[str, Any], update: dict[str, Any]) -> bool:
    """Apply `update` to `record` in place; return True if anything a user sees changed."""
    update = resolve_retry(record, update)
    changed = False
    for key in FIRST_WINS:
        if record.get(key) is None and update.get(key) is not None:
            record[key] = update[key]
            changed = True
    if update.get("worker") and not record.get("worker"):
        record["worker"] = update["worker"]
        changed = True
    if accepts(record, update):
        state = update["state"]
        if state != record.get("state"):
            changed = True
        record["state"] = state
        for key in ("progress", "worker", "result", "error", "finished", "retries"):
            if key in update and update[key] != record.get(key):
                record[key] = update[key]
                changed = True
        if state == "SUCCESS" and record.get("progress"):
            progress = dict(record["progress"], current=record["progress"]["total"], percent=100.0)
            changed |= progress != record["progress"]
            record["progress"] = progress
    if changed and update.get("updated") and (record.get("updated") or "") < update["updated"]:
        record["updated"] = update["updated"]
    return changed


def _error(kind: str | None, message: Any, traceback: str | None) -> dict[str, Any]:
    if isinstance(message, (list, tuple)):
        message = " ".join(str(part) for part in message)
    return {
        "type": kind or "Error",
        "message": str(message or "")[:MAX_TEXT],
        "traceback": (traceback or "")[-MAX_TEXT:] or None,
    }


def _exception_parts(text: str | None) -> tuple[str, str]:
    """Split an event's `ValueError('boom')` repr into its type and message."""
    text = text or ""
    kind, _, rest = text.partition("(")
    if rest.endswith(")") and kind.isidentifier():
        message = rest[:-1]
        if len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
            message = message[1:-1]
        return kind, message
    return "Error", text


def from_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """Turn one Celery task event into an update, or None for events the dashboard ignores.

    Results and tracebacks in events are truncated reprs: terminal updates carry `fetch` so the
    caller reads the real ones from the result backend.
    """
    kind, task_id = event.get("type", ""), event.get("uuid")
    if not task_id or not kind.startswith("task-"):
        return None
    when = iso(event.get("timestamp"))
    update: dict[str, Any] = {"id": task_id, "updated": when}
    parent = event.get("parent_id")
    parent = parent if parent != task_id else None  # a retry is sent by the task itself
    if kind == "task-sent":
        update.update(state="PENDING", name=event.get("name"), created=when, parent=parent)
    elif kind == "task-received":
        update.update(state="RECEIVED", name=event.get("name"), created=when,
                      parent=parent, worker=event.get("hostname"), retries=event.get("retries") or 0)
    elif kind == "task-started":
        update.update(state="STARTED", started=when, worker=event.get("hostname"))
    elif kind == "task-progress":
        progress = event.get("progress")
        if not isinstance(progress, dict):
            return None
        update.update(state="PROGRESS", progress=progress, worker=event.get("hostname"))
        if isinstance(event.get("retries"), int):
            update["retries"] = event["retries"]
        if event.get("sent"):
            update["updated"] = iso(event["sent"])
    elif kind == "task-succeeded":
        update.update(state="SUCCESS", finished=when, error=None, fetch=True)
    elif kind == "task-failed":
        error_type, message = _exception_parts(event.get("exception"))
        update.update(state="FAILURE", finished=when, fetch=True,
                      error=_error(error_type, message, event.get("traceback")))
    elif kind == "task-retried":
        error_type, message = _exception_parts(event.get("exception"))
        update.update(state="RETRY", error=_error(error_type, message, event.get("traceback")))
    elif kind == "task-revoked":
        how = "terminated" if event.get("terminated") else "revoked"
        update.update(state="REVOKED", finished=when,
                      error=_error("TaskRevokedError", f"cancelled ({how})", None))
    else:
        return None
    return update


def lost(task_id: str, worker: str | None) -> dict[str, Any]:
    """The update that ends a task whose worker died under it (its message was already acked)."""
    now = iso(time.time())
    return {"id": task_id, "state": "FAILURE", "finished": now, "updated": now, "result": None,
            "error": _error("WorkerLostError", f"worker {worker} stopped responding while running this task", None)}


def from_meta(task_id: str, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Turn a result-backend entry into an update (the truth behind the events), or None."""
    if not meta:
        return None
    state, result = meta.get("status"), meta.get("result")
    update: dict[str, Any] = {"id": task_id, "state": state, "name": meta.get("name"),
                              "worker": meta.get("worker")}
    if isinstance(meta.get("retries"), int):
        update["retries"] = meta["retries"]  # for a stored RETRY, already the next attempt
    done = meta.get("date_done")
    if done:
        finished = datetime.fromisoformat(done)
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        update["finished"] = finished.isoformat(timespec="microseconds")
        update["updated"] = update["finished"]
    if state == "SUCCESS":
        update.update(result=result, error=None)
    elif state in ("FAILURE", "RETRY") and isinstance(result, dict):
        update["error"] = _error(result.get("exc_type"), result.get("exc_message"), meta.get("traceback"))
    elif state == "REVOKED":
        update["error"] = _error("TaskRevokedError", "cancelled", None)
    elif state == "PROGRESS" and isinstance(result, dict):
        update["progress"] = result
    elif state not in PHASE and state not in TERMINAL:
        return None
    if state not in TERMINAL:
        update.pop("finished", None)
    return update
