"""The task object the dashboard shows, built from Celery events and result-backend metadata.

An *update* is a partial task object. `merge` applies one to a record under the rules that keep
the dashboard right whatever order updates arrive in: every state has a place in `order` (the
attempt, then the phase within it, then the progress), an update never moves a task to an earlier
place, and a terminal state is final.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from celery_dashboard import arguments
from celery_dashboard.index import MAX_ATTEMPTS, pending_record
from celery_dashboard.reporting import SENT_KEY
from web import lifecycle, tracebacks
from web.results import json_safe, preview_masked

# The task object's fields, as its first writer defines them (celery_dashboard.index).
FIELDS = tuple(pending_record("", None, None, 0.0))
# Kept from the first update that has them; later ones cannot move them. `owner` is the user who
# launched the task (None for tasks sent by other processes: only admins see those).
FIRST_WINS = ("name", "parent", "created", "started", "owner", "args", "kwargs", "queue", "exchange",
              "routing_key", "received", "retry_of")
# What an accepted state brings with it (and only what the update holds: an update never erases
# a field it does not mention, so the backend's record never erases what events told).
CARRIED = ("progress", "result", "result_truncated", "error", "finished", "retries", "worker", "cooperative")
MAX_TEXT = 20_000
NOT_RESPONDING = "not responding"
REDELIVERY = "gone; the broker will deliver the task again"
# A received task its live worker dropped when its broker connection broke (web.reconciler._stranded):
# shown as "RECEIVED · worker dropped it ...".
UNHELD = "dropped it on reconnecting; the broker delivers it again after its visibility timeout"


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC; None for None, and for a value no date can hold (an event's
    timestamp of 1e20 raised OverflowError, and the event was lost)."""
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="microseconds")
    except (OverflowError, ValueError, OSError):
        return None


def epoch(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def new_record(task_id: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    record.update(id=task_id, state="PENDING", version=0, retries=0, attempts=[])
    return record


def repaired(record: dict[str, Any]) -> dict[str, Any]:
    """A stored task object with the fields `merge` counts on of the types it counts on: `retries`
    an attempt number (else 0), `attempts` a list of attempts (else []), `progress` an object or
    None. An object stored before the web checked its events' types (`sane_event`) may hold
    anything there. `record` itself, changed in place."""
    if not is_count(record.get("retries")):
        record["retries"] = 0
    attempts = record.get("attempts")
    if not isinstance(attempts, list) or not all(isinstance(a, dict) and is_count(a.get("retries"))
                                                 for a in attempts):
        record["attempts"] = [a for a in attempts if isinstance(a, dict) and is_count(a.get("retries"))] \
            if isinstance(attempts, list) else []
    if record.get("progress") is not None and not isinstance(record["progress"], dict):
        record["progress"] = None
    return record


def is_terminal(record: dict[str, Any]) -> bool:
    return lifecycle.is_terminal(record.get("state"))


def merge(record: dict[str, Any], update: dict[str, Any], *, partial: bool = False) -> bool:
    """Apply `update` to `record` in place; return True if anything a user sees changed.

    `partial`: `record` is itself an update the coalescer is merging, not a stored task object:
    what each update says about attempts is then kept as notes for the stored object (see
    `_collect_attempts`). A partial may hold an `attempts` list of its own (a launch's pending
    record, a task object put back after a failed emit): it is never the one that counts."""
    # A partial's own first update is told as its fields are now, before this merge changes them.
    own = _notes(record) if partial and NOTES not in record else None
    update = _resolve_retry(record, update, partial)
    before = dict(record)
    for key in FIRST_WINS:
        if record.get(key) is None and update.get(key) is not None:
            record[key] = update[key]
    if update.get("worker") and not record.get("worker"):
        record["worker"] = update["worker"]
    if "worker_status" in update and not lifecycle.is_terminal(record.get("state")):
        record["worker_status"] = update["worker_status"]
    accepted = lifecycle.accepts(record, update)
    # The same ending told again (the backend confirming a worker's event, or the other way round
    # in another web process's merge) keeps the time it was first stored with, its attempt's too:
    # the two sources' times differ by a millisecond (Celery stores the result, then sends the
    # event), and a second version for that alone would be pushed to every client.
    again = lifecycle.is_terminal(record.get("state")) and update.get("state") == record.get("state")
    # An ended task's late news is old, except a retry's: it tells an earlier attempt's error (with
    # countdown=0 the next attempt may end before the worker reports the retry that started it).
    if (accepted and not again) or not lifecycle.is_terminal(record.get("state")) or update.get("state") == "RETRY":
        _collect_attempts(record, update, partial, own)
    else:
        # Late news of an ended task still tells who ran its attempts, when, and how each ended.
        _collect_attempts(record, update, partial, own, late=True)
    if accepted:
        record["state"] = update["state"]
        for key in CARRIED:
            if key in update and not (again and key == "finished" and record.get("finished")):
                record[key] = update[key]
        if partial:  # the attempt a partial's RETRY announces is a guess the stored object settles
            record[GUESSED] = bool(update.get(GUESSED))
        if lifecycle.is_terminal(update["state"]):
            record["confidence"] = lifecycle.confidence(update)
            record["worker_status"] = None
        elif update.get("source") == "event":
            record["worker_status"] = None  # the worker just spoke
        if update["state"] == "SUCCESS" and record.get("progress"):
            progress = record["progress"]
            # The last report's message is kept only if it was about the end: at its total, and
            # not an earlier attempt's (a later one succeeded).
            done = (progress.get("current") == progress.get("total")
                    and not _older_attempt(progress, _attempt_now(record, update, partial)))
            record["progress"] = dict(progress, current=progress.get("total"), percent=100.0,
                                      message=progress.get("message", "") if done else "")
        if update.get("updated") and (record.get("updated") or "") < update["updated"]:
            record["updated"] = update["updated"]
    elif _late_final_report(record, update):
        record["progress"] = dict(update["progress"], percent=100.0)
    elif _late_report_of_the_ending(record, update, partial):
        progress = update["progress"]
        at_total = progress["current"] == progress["total"]
        record["progress"] = dict(progress, current=progress["total"], percent=100.0,
                                  message=progress.get("message", "") if at_total else "")
    elif partial and _unnumbered_final_report(record, update):
        # The batch's SUCCESS names no attempt: the stored task object decides by its own.
        record[LATE_REPORT] = {"progress": update["progress"], "retries": update["retries"]}
    if partial and update.get(LATE_REPORT) and (record.get(LATE_REPORT) is None
                                                or record[LATE_REPORT]["retries"] <= update[LATE_REPORT]["retries"]):
        record[LATE_REPORT] = update[LATE_REPORT]  # a batch put back into a newer one keeps it
    if not partial and update.get(LATE_REPORT):
        _give_late_report(record, update)
    _clamp_clocks(record)
    # A newer report that says nothing new (the same state twice: celery_dashboard's early
    # task-started, then the worker's own) is not a change a user could see: not pushed again.
    changed = any(record.get(key) != before.get(key) for key in record if key != "updated")
    if changed and not accepted and update.get("updated") and (record.get("updated") or "") < update["updated"]:
        record["updated"] = update["updated"]
    return changed


def _attempt_of(progress: Any) -> int | None:
    """The attempt (Celery's `retries`) a progress object was reported in, where it is known: a
    task-progress event names it, and so does a stored PROGRESS read with result_extended."""
    if isinstance(progress, dict) and isinstance(progress.get("retries"), int):
        return progress["retries"]
    return None


def _attempt_now(record: dict[str, Any], update: dict[str, Any], partial: bool) -> int | None:
    """The attempt `record` is at after accepting `update`: the update's own where it names one; for a
    stored task object, also the latest of its attempts (its `retries` may lag behind them)."""
    known = [update["retries"]] if isinstance(update.get("retries"), int) else []
    if not partial:
        known += [int(record.get("retries") or 0), *(a["retries"] for a in record.get("attempts") or ())]
    return max(known) if known else None


def _older_attempt(progress: Any, attempt: int | None) -> bool:
    own = _attempt_of(progress)
    return own is not None and attempt is not None and own < attempt


def _late_report_of_the_ending(record: dict[str, Any], update: dict[str, Any], partial: bool) -> bool:
    """Whether `update` is a progress report of the attempt that succeeded, arriving after its
    SUCCESS was merged while the task shows no bar of that attempt (none, or an earlier attempt's,
    whose message the SUCCESS dropped): the bar is then full, and its message only a report at the
    total's (`merge`, as for a SUCCESS that came after its reports). Both must name their attempt."""
    progress = update.get("progress")
    own = _attempt_of(progress)
    return (record.get("state") == "SUCCESS" and update.get("state") == "PROGRESS" and own is not None
            and own == record.get("retries") and (partial or own == _attempt_now(record, {}, partial))
            and (record.get("progress") is None or _older_attempt(record.get("progress"), own))
            # (a value past 2**53 comes as text, json_safe: no bar from it)
            and _finite(progress.get("current")) and _finite(progress.get("total"))
            and progress["total"] > 0 and progress["current"] <= progress["total"])


def _late_final_report(record: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether `update` is the last progress report (current == total) of the attempt that
    succeeded, arriving after its SUCCESS was stored. The result backend's SUCCESS can be stored
    first (the reconciler or another web process read it while this listener was behind), and
    SUCCESS keeps only a message about the end (`merge`), so without this the report the worker
    always sends last (celery_dashboard.reporting) would be lost. The same holds for the worker's
    own SUCCESS when a coalescer batch merged that report into it first: that SUCCESS counts for
    less than the backend's and is not accepted, but its message is the report's (only from a batch
    whose events name no other attempt: which attempt its progress came from is not kept). Its bar
    is full either way. Only for a report that names the attempt the record holds, and only over an
    empty message."""
    progress, held = update.get("progress"), record.get("progress") or {}
    return (record.get("state") == "SUCCESS"
            # the report itself, or a coalescer's partial that merged it and then the worker's
            # SUCCESS (which kept its message only because it was at the total), over a SUCCESS
            # that counts for more (the backend's)
            and (update.get("state") == "PROGRESS"
                 or (update.get("state") == "SUCCESS" and isinstance(progress, dict) and bool(progress.get("message"))
                     # and only a batch that heard of no other attempt: its progress may be another's
                     and all(note.get("retries") in (None, update.get("retries")) for note in update.get(NOTES) or ())))
            and isinstance(progress, dict) and bool(progress.get("total"))
            and progress.get("current") == progress.get("total")
            # both name their attempt (a backend's SUCCESS read without result_extended does not)
            and isinstance(update.get("retries"), int) and update.get("retries") == record.get("retries")
            # a message about the end already held is never replaced: which came later is unknown
            and not held.get("message"))


# A partial's final progress report that its SUCCESS could not place (see _unnumbered_final_report):
# {"progress", "retries"}, for the stored task object. Never on a stored object.
LATE_REPORT = "late_final_report"


def _unnumbered_final_report(record: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether `update` is a final progress report (current == total, its attempt named) arriving
    in a batch (`record`, a partial) whose SUCCESS names no attempt: a result-backend read without
    result_extended (Celery's default), which the reconciler made while the listener was behind.
    The batch cannot tell whether the report is the succeeding attempt's; the stored task object,
    which knows its attempt, can (merge). A later attempt's report replaces an earlier one's."""
    progress, held = update.get("progress"), record.get(LATE_REPORT)
    return (record.get("state") == "SUCCESS" and not isinstance(record.get("retries"), int)
            and update.get("state") == "PROGRESS" and isinstance(update.get("retries"), int)
            and isinstance(progress, dict) and bool(progress.get("total"))
            and progress.get("current") == progress.get("total")
            and (held is None or held["retries"] <= update["retries"]))


def _give_late_report(record: dict[str, Any], update: dict[str, Any]) -> None:
    """Give the stored task object `record` the final report its batch `update` kept aside
    (LATE_REPORT), when the report is of the latest attempt the task knows of, after the batch's
    notes were applied (its `retries` may lag behind them), that attempt did not fail, and the
    batch heard of no other attempt."""
    late = {"state": "PROGRESS", **update[LATE_REPORT]}
    attempts = record.get("attempts") or []
    latest = max([int(record.get("retries") or 0), *(attempt["retries"] for attempt in attempts)])
    if (late["retries"] == latest
            and not any(attempt["retries"] == latest and attempt.get("error") for attempt in attempts)
            and all(note.get("retries") in (None, latest) and note.get("kind") != "retry"
                    for note in update.get(NOTES) or ())
            and _late_final_report(dict(record, retries=latest), late)):
        record["progress"] = dict(late["progress"], percent=100.0)


# Marks a partial update whose RETRY was given its attempt by `lifecycle.resolve_retry`'s guess.
GUESSED = "retries_guessed"


def _resolve_retry(record: dict[str, Any], update: dict[str, Any], partial: bool) -> dict[str, Any]:
    """Give a worker's RETRY the attempt it announces (Celery's task-retried event does not say).

    A stored task object counts: each retry fails one attempt, in order, so after its notes are
    applied the attempts with an error are the retries so far, and the RETRY announces the next
    attempt by that number. This holds however late the worker reports the retry (it sends
    task-retried from its main process, celery.worker.request.Request.on_retry, so the next attempt
    may already be received or started in another pool process). A partial update holds too little
    history to count: it takes `lifecycle.resolve_retry`'s guess for its own merging, and marks it
    so that the stored object counts again."""
    if update.get("state") != "RETRY":
        return update
    if update.get("source") == "backend":
        # The backend's stored RETRY names its attempt (result_extended) or keeps the record's. A
        # batch where it took over the worker's task-retried still tells that retry (its note):
        # that batch counts, as the event alone would.
        if not any(note["kind"] == "retry" for note in update.get(NOTES) or ()):
            return update
    elif "retries" in update and not update.get(GUESSED):
        return update
    if partial:
        unnumbered = {key: value for key, value in update.items() if key != "retries"}
        return dict(lifecycle.resolve_retry(record, unnumbered), **{GUESSED: True})
    trial = {"attempts": record.get("attempts"), "retries": record.get("retries")}
    _apply_notes(trial, update.get(NOTES) or _notes(update))
    failed = sum(1 for attempt in trial.get("attempts") or () if attempt["error"])
    return dict(update, retries=failed, stale_check=True)


# Marks the reconciler's read of a result-backend entry that names no attempt (no result_extended,
# Celery's default). It may be read at any time, before the events of the attempts it ends (a
# retry's error then went to the attempt that succeeded): its state counts, the events build the
# attempts. Not a field of the task object (merge copies only FIRST_WINS and CARRIED).
UNNAMED_READ = "unnamed_read"

# Notes about attempts carried by a partial update (the coalescer's merge of several events) until
# it is applied to a stored task object; at most this many are kept.
NOTES = "attempt_notes"
MAX_NOTES = 4 * MAX_ATTEMPTS


def _notes(update: dict[str, Any]) -> list[dict[str, Any]]:
    """What one update says about a run: ("run": received, started or running, with its worker),
    ("retry": an attempt failed and will run again, with its error; the event's only: the backend's
    stored RETRY repeats it), ("end": the task ended). `retries` is None where the update does not
    name the attempt (it is then the latest one)."""
    state = update.get("state")
    if state is None or state == "PENDING":
        return []
    retries = update.get("retries") if isinstance(update.get("retries"), int) else None
    if retries is None and update.get(UNNAMED_READ):
        return []
    when = update.get("updated")
    if state == "RETRY":
        if update.get("source") == "backend":
            return []
        return [{"kind": "retry", "when": when, "error": _short_error(update.get("error"))}]
    if lifecycle.is_terminal(state):
        return [{"kind": "end", "retries": retries, "when": update.get("finished") or when,
                 "error": _short_error(update.get("error")), "worker": update.get("worker"),
                 "started": update.get("started")}]
    started = update.get("started") or (when if lifecycle.phase(state) >= lifecycle.STARTED else None)
    return [{"kind": "run", "retries": retries, "worker": update.get("worker"), "started": started}]


def _collect_attempts(record: dict[str, Any], update: dict[str, Any], partial: bool,
                      own: list[dict[str, Any]] | None = None, late: bool = False) -> None:
    """Keep what `update` says about attempts: applied to record["attempts"] when `record` is a
    task object, else (a partial update the coalescer merges) kept as notes in order, so that the
    attempts a batch went through are not lost in its merged state. `own`: the partial's notes
    of its own first update, read before this merge changed its fields. `late`: `record` has
    ended and `update` is not its ending (see `_apply_notes`); a run that names no worker says
    nothing then, and is dropped."""
    notes = update.get(NOTES) or _notes(update)
    if late:
        notes = [n for n in notes if n["kind"] != "run" or n["worker"]]
        if not notes:
            return
    if not partial:
        _apply_notes(record, notes, late)
        if late and record["attempts"]:  # an ended task's count of attempts never goes back either
            record["retries"] = max(int(record.get("retries") or 0), record["attempts"][-1]["retries"])
        return
    if NOTES not in record:
        record[NOTES] = own if own is not None else _notes(record)  # the partial's own first update
    held = list(record[NOTES])
    for note in notes:
        last = held[-1] if held else None
        if (note["kind"] == "run" and last is not None and last["kind"] == "run"
                and last["retries"] == note["retries"]):
            # The same attempt told again (its progress reports): one note says it all, so that a
            # long run of reports cannot push a retry out of the bounded list.
            held[-1] = dict(last, worker=note["worker"] or last["worker"], started=last["started"] or note["started"])
        else:
            held.append(note)
    record[NOTES] = held[-MAX_NOTES:]


def _apply_notes(record: dict[str, Any], notes: list[dict[str, Any]], late: bool = False) -> None:
    """Apply attempt notes in order. Retries happen one after another, so a retry's error belongs
    to the oldest attempt that has neither error nor end: a worker sends task-retried from its main
    process, and the next attempt may already have started in another pool process. A note that
    names no attempt is about the latest one (the listener numbers the events it can: `Numbering`).

    `late`: the task has ended, and these notes came after its ending (the reconciler may store the
    result backend's ending before the listener, behind, merges the events): an ending then only
    fills in an attempt's missing end, so the same ending told again keeps its first time."""
    if not notes:
        return
    attempts = [dict(a) for a in record.get("attempts") or ()]
    current = max([int(record.get("retries") or 0), *(a["retries"] for a in attempts)])
    by_number = {a["retries"]: a for a in attempts}

    def attempt(number: int) -> dict[str, Any]:
        if number not in by_number:
            by_number[number] = {"retries": number, "worker": None, "started": None, "finished": None, "error": None}
        return by_number[number]

    for note in notes:
        if note["kind"] == "retry":
            if any(a["finished"] == note["when"] and a["error"] == note["error"] for a in by_number.values()):
                continue  # the same retry, told again
            # A verdict (LOST, UNKNOWN) ended the latest attempt only as a guess: a retry told
            # later is how that attempt really ended.
            guessed = max(by_number) if by_number and record.get("state") in lifecycle.INFERRED else None
            open_ = sorted(n for n, a in by_number.items() if n == guessed or (not a["error"] and not a["finished"]))
            target = attempt(open_[0] if open_ else current)
            ended_by_guess = target["retries"] == guessed
            target["finished"] = note["when"] if ended_by_guess else target["finished"] or note["when"]
            target["error"] = note["error"]
            current = max(current, target["retries"] + 1)
            continue
        number = note["retries"] if note["retries"] is not None else current
        current = max(current, number)
        if note["kind"] == "end" and number not in by_number and not (note["worker"] or note["started"]):
            continue  # ended before any worker ran it (a cancel while queued): no attempt
        target = attempt(number)
        target["worker"] = note["worker"] or target["worker"]
        target["started"] = target["started"] or note["started"]
        if note["kind"] == "end" and not (late and (target["finished"] or target["error"])):
            target["finished"], target["error"] = note["when"] or target["finished"], note["error"]
    record["attempts"] = [by_number[n] for n in sorted(by_number)][-MAX_ATTEMPTS:]


ATTEMPT_MESSAGE = 300  # characters of each attempt's error message kept (the task's own error has it all)


def _short_error(error: Any) -> dict[str, Any] | None:
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    if isinstance(message, str):  # masked already (`_error`)
        message = tracebacks.cut_message(message, ATTEMPT_MESSAGE, mask=False)
    return {"type": error.get("type"), "message": message}


def _clamp_clocks(record: dict[str, Any]) -> None:
    """Durations need one clock: times are converted to the web's clock (listener.Clocks), but a
    record rebuilt from the backend alone keeps the worker's. Clamp, and flag that clocks disagree."""
    created, started, finished = record.get("created"), record.get("started"), record.get("finished")
    if created and started and started < created:
        record["started"], record["clock_skew"] = created, True
        started = created
    if finished and (started or created) and finished < (started or created):
        record["finished"], record["clock_skew"] = started or created, True


def _error(kind: Any, message: Any, traceback: str | None) -> dict[str, Any]:
    """An error as Celery and Flower show it: type, message, traceback. An exception whose text
    comes only from `__str__` has empty `args` (Celery stores `exc_message` from `args`): the
    last line of its traceback, `module.Type: text`, still has the text."""
    if kind == "UnpickleableExceptionWrapper" and isinstance(message, (list, tuple)) and len(message) == 4:
        # celery.utils.serialization: (module, class name, args, repr) of an exception it could not pickle
        _, kind, args, text = message
        message = args if args else text
    if isinstance(message, (list, tuple)):
        message = " ".join(str(json_safe(part)) for part in message)
    message = str(message or "")
    if not message and traceback:
        last = traceback.rstrip().rpartition("\n")[2]
        head, sep, text = last.partition(": ")
        if sep and head.rpartition(".")[2] == (kind or "").rpartition(".")[2]:
            message = text
    # Masked as arguments are (MASKED_ARGUMENTS) before anything is stored: an exception's text
    # often repeats the arguments (`ValueError({'api_token': ...})`), and so does its traceback.
    # Each is cut to MAX_TEXT saying how much was cut, a traceback keeping its frames however long
    # its message (web.tracebacks). Masking costs about 0.3 µs a character and reads at most
    # MAX_TEXT + 2 * CONTEXT characters of each, so a failure costs at most ~25 ms of the
    # listener's time however long it is (measured: a 1 MB message full of masked values, 22 ms;
    # 20 ms with the end-only cut before).
    return {
        "type": kind or "Error",
        "message": tracebacks.cut_message(message, MAX_TEXT),
        "traceback": tracebacks.cut_traceback(traceback or "", MAX_TEXT) or None,
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


def progress_of(meta: Any) -> dict[str, Any] | None:
    """The progress object from a task's meta: `celery_dashboard.progress` sends the whole shape;
    the tutorials' `update_state(state="PROGRESS", meta={"current": 3, "total": 10})` only
    current and total. None when there is no numeric current and total."""
    if not isinstance(meta, dict):
        return None
    current, total = meta.get("current"), meta.get("total")
    if not _finite(current) or not _finite(total):
        return None  # NaN or Infinity is not JSON: one such report must not break every client
    percent = round(100.0 * current / total, 1) if total else 0.0
    message = meta.get("message", meta.get("status", ""))
    message = arguments.mask_text(str(message if message is not None else "")[:500])  # it may repeat arguments
    return {"current": json_safe(current), "total": json_safe(total), "percent": max(0.0, min(100.0, percent)),
            "message": message}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Numbering:
    """Which attempt (Celery's `retries`) each task's events are about, for the events that do not
    say. task-received carries it (Celery's Request); Celery's own task-started, task-succeeded and
    task-failed do not. A worker sends a task's received, started and ending in that order, all
    from its main process, so each is about the attempt last received. Only task-received counts:
    celery_dashboard's task-started and task-progress name their attempt themselves, but come from
    the pool process, out of order with the main process's buffered events. Not task-retried: the
    worker reports it after the pool has run the attempt, and with countdown=0 the next attempt may
    be received first (`_apply_notes` gives a retry its attempt), nor task-revoked (it may name a
    queued task).

    Bounded: the `limit` tasks heard of last (about 100 bytes each); a task forgotten, or whose
    task-received was missed (a listener that connected later), gets no number."""

    FROM = frozenset({"task-received"})
    TO = frozenset({"task-started", "task-succeeded", "task-failed"})
    ENDS = frozenset({"task-succeeded", "task-failed", "task-revoked", "task-rejected"})

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self.known: OrderedDict[str, int] = OrderedDict()

    def number(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event`, with `retries` added where it names none and the task's attempt is known (a
        copy then; else `event` itself)."""
        kind, task_id, retries = event.get("type"), event.get("uuid"), event.get("retries")
        if not isinstance(task_id, str):
            return event
        known = self.known
        if kind in self.FROM and is_count(retries):
            known[task_id] = retries
            known.move_to_end(task_id)
            if len(known) > self.limit:
                known.popitem(last=False)
        elif kind in self.TO and retries is None and task_id in known:
            event = dict(event, retries=known[task_id])
        if kind in self.ENDS:
            known.pop(task_id, None)
        return event


MAX_RETRIES = 1_000_000  # a `retries` above this is not an attempt count (Celery's default max_retries is 3)
# Event fields the dashboard reads as text: any other type (a process that is not Celery sent it) is dropped.
TEXT_FIELDS = ("name", "hostname", "parent_id", "exception", "traceback", "queue", "exchange", "routing_key")


def is_count(value: Any) -> bool:
    """Whether `value` can be an attempt number (Celery's `retries`): an int from 0 to MAX_RETRIES, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES


def sane_event(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with every field the dashboard reads of a type it can use: a `retries` that is not an
    attempt number, a `timestamp` that is not a finite number and a text field (TEXT_FIELDS) that
    is not a string are left out, as if the event had not said them. Celery always sends them so;
    any process with access to the broker can send anything, and one task's field of the wrong type
    once stopped every task's live updates (a `retries` of "x" raised in every merge of that task's
    batch). A copy when anything was left out, else `event` itself."""
    bad = [key for key in TEXT_FIELDS if event.get(key) is not None and not isinstance(event[key], str)]
    if "retries" in event and event["retries"] is not None and not is_count(event["retries"]):
        bad.append("retries")
    if event.get("timestamp") is not None and not _finite(event["timestamp"]):
        bad.append("timestamp")
    if not bad:
        return event
    return {key: value for key, value in event.items() if key not in bad}


def from_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """Turn one Celery task event into an update, or None for events the dashboard ignores.

    `timestamp` must already be on the web's clock (listener.Clocks). Results and tracebacks in
    events are truncated reprs: ending updates carry `fetch` so the caller reads the real ones from
    the result backend. Fields of a type Celery never sends are left out (`sane_event`).
    """
    event = sane_event(event)
    kind, task_id = event.get("type", ""), event.get("uuid")
    if not task_id or not isinstance(task_id, str) or not kind.startswith("task-"):
        return None
    when = iso(event.get("timestamp"))
    update: dict[str, Any] = {"id": task_id, "updated": when, "source": "event"}
    parent = event.get("parent_id")
    parent = parent if parent != task_id else None  # a retry is sent by the task itself
    if kind == "task-sent":
        update.update(state="PENDING", name=event.get("name"), created=when, parent=parent,
                      args=arguments.mask_repr(event.get("args")), kwargs=arguments.mask_repr(event.get("kwargs")))
        for key in ("queue", "exchange", "routing_key"):
            if isinstance(event.get(key), str):
                update[key] = event[key]
    elif kind == "task-received":
        update.update(state="RECEIVED", name=event.get("name"), created=when, received=when,
                      parent=parent, worker=event.get("hostname"), retries=event.get("retries") or 0,
                      args=arguments.mask_repr(event.get("args")), kwargs=arguments.mask_repr(event.get("kwargs")))
    elif kind == "task-started":
        update.update(state="STARTED", started=when, worker=event.get("hostname"))
        if isinstance(event.get("retries"), int):
            update["retries"] = event["retries"]
    elif kind == "task-progress":
        progress = progress_of(event.get("progress"))
        if progress is None:
            return None
        # Only celery_dashboard's progress API sends this event, and it also stops a revoked task
        # at its next report: such a task can be cancelled on any pool.
        update.update(state="PROGRESS", progress=progress, worker=event.get("hostname"), cooperative=True)
        if isinstance(event.get("retries"), int):
            update["retries"] = progress["retries"] = event["retries"]
    elif kind == "task-succeeded":
        update.update(state="SUCCESS", finished=when, error=None, fetch=True)
        if isinstance(event.get("retries"), int):  # numbered by the listener (Numbering)
            update["retries"] = event["retries"]
    elif kind == "task-failed":
        error_type, message = _exception_parts(event.get("exception"))
        update.update(state="FAILURE", finished=when, fetch=True,
                      error=_error(error_type, message, event.get("traceback")))
        if isinstance(event.get("retries"), int):  # numbered by the listener (Numbering)
            update["retries"] = event["retries"]
    elif kind == "task-retried":
        error_type, message = _exception_parts(event.get("exception"))
        update.update(state="RETRY", error=_error(error_type, message, event.get("traceback")))
    elif kind == "task-revoked":
        how = "expired" if event.get("expired") else "terminated" if event.get("terminated") else "revoked"
        update.update(state="REVOKED", finished=when, fetch=True,
                      error=_error("TaskRevokedError", f"cancelled ({how})" if how != "expired" else "expired", None))
    elif kind == "task-rejected":
        requeued = " and requeued" if event.get("requeue") else ""
        update.update(state="REJECTED", finished=when, fetch=True,
                      error=_error("Reject", f"rejected by the worker{requeued}", None))
    elif kind == "task-ignored":  # sent by celery_dashboard's task_postrun hook: Celery sends nothing
        update.update(state="IGNORED", finished=when, error=None)
    else:
        return None
    return update


def lost(task_id: str, worker: str | None, why: str, doing: str = "while running this task") -> dict[str, Any]:
    """The inferred ending of a task whose worker restarted or stopped under it (its message was
    already acknowledged, so nothing will run it again); a real outcome still overrides it.
    `doing`: what the task was doing then, as the message ends ("while running this task")."""
    now = iso(time.time())
    return {"id": task_id, "state": lifecycle.LOST, "finished": now, "updated": now,
            "error": _error("WorkerLostError", f"worker {worker} {why} {doing}", None)}


def unknown(task_id: str, why: str = "no worker, queue or result backend knows how this task ended") -> dict[str, Any]:
    """The inferred ending of a task nobody reports on: no outcome in the result backend (it may
    ignore results), or one the web cannot read (`why` says), not in any queue, not on any worker
    that answered."""
    now = iso(time.time())
    return {"id": task_id, "state": lifecycle.UNKNOWN, "finished": now, "updated": now,
            "error": _error("Unknown", why, None)}


def read_entry(task_id: str, meta: dict[str, Any] | None, shift: float = 0.0) -> dict[str, Any] | None:
    """`from_meta`, as the reconciler reads a task's entry on its own (not the ending an event
    told, which the pusher confirms): an entry that names no attempt is marked UNNAMED_READ."""
    update = from_meta(task_id, meta, shift)
    if update is not None and "retries" not in update:
        update[UNNAMED_READ] = True
    return update


def backend_epoch(value: Any, shift: float = 0.0) -> float:
    """A result-backend entry's `date_done` (ISO 8601, naive is UTC) as epoch seconds on the web's
    clock (`shift`: the writing worker's offset), or 0.0 when it has none or cannot be read."""
    return epoch(_backend_time(value, shift))


def _backend_time(value: Any, shift: float = 0.0) -> str | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return iso(when.timestamp() - shift)


def from_meta(task_id: str, meta: dict[str, Any] | None, shift: float = 0.0) -> dict[str, Any] | None:
    """Turn a result-backend entry (Celery's meta: status, result, traceback, date_done and, with
    `result_extended`, name, worker, retries) into an update, or None when it has no state.

    `shift` is the writing worker's clock offset (seconds ahead of the web's). A report stored by
    celery_dashboard's progress() says when it was sent (reporting.SENT_KEY): its update is timed
    like the report's event, so a read older than an event already merged is not taken. Fields the
    entry does not hold are left out, so the update never erases what events told. Results become a
    bounded JSON-safe preview; an entry too large or impossible to decode says so."""
    if not meta:
        return None
    state = meta.get("status")
    if "undecodable" in meta:
        return None
    if not isinstance(state, str) or not state:
        return None
    update: dict[str, Any] = {"id": task_id, "state": state, "source": "backend"}
    for key in ("name", "worker"):
        if isinstance(meta.get(key), str) and meta[key]:
            update[key] = meta[key]
    if is_count(meta.get("retries")):
        # A stored RETRY holds the request of the attempt that failed (celery.app.trace's
        # handle_retry: mark_as_retry(request=req)); a RETRY here names the attempt it announces.
        update["retries"] = meta["retries"] + (1 if state == "RETRY" else 0)
    result = meta.get("result")
    if lifecycle.is_terminal(state):
        finished = _backend_time(meta.get("date_done"), shift)
        if finished:
            update["finished"] = update["updated"] = finished
    if "too_large" in meta:
        if state == "SUCCESS":  # the first bytes of its JSON text, then how large it is
            update.update(result=f"{arguments.mask_text(str(meta.get('head', '')))}… "
                                 f"({meta['too_large']:,} bytes in all)",
                          result_truncated=True, error=None)
        return update
    if state == "SUCCESS":
        # Sensitive keys and texts are masked as in arguments (MASKED_ARGUMENTS) before anything is stored;
        # an object becomes its text, which is masked as text.
        update["result"], update["result_truncated"] = preview_masked(result)
        update["error"] = None
    elif state in ("FAILURE", "RETRY") and isinstance(result, dict):
        update["error"] = _error(result.get("exc_type"), result.get("exc_message"), meta.get("traceback"))
    elif state == "REVOKED":
        reason = result.get("exc_message") if isinstance(result, dict) else None
        expired = reason in (["expired"], ("expired",), "expired")  # Celery's Request._announce_revoked
        update["error"] = _error("TaskRevokedError", "expired" if expired else "cancelled", None)
    elif not lifecycle.is_terminal(state) and lifecycle.phase(state) >= lifecycle.STARTED:
        progress = progress_of(result)
        if progress is not None:
            update["progress"] = progress
            if "retries" in update:  # result_extended: the attempt that stored it
                progress["retries"] = update["retries"]
        # celery_dashboard's reports say when they were sent (the event's time too): a read that
        # got the report before the one an event already told is older, not new information.
        if isinstance(result, dict) and _finite(result.get(SENT_KEY)):
            update["updated"] = iso(result[SENT_KEY] - shift)
    return update
