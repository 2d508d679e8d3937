"""Acting on tasks that ended: retry with the same arguments, and the arguments for a re-run.

Only catalog tasks launched from the dashboard can be sent again: their full parameters are kept
in the index (celery_dashboard.index.PARAMS_KEY). A task sent with `.delay()` by other code has
only a masked preview of its arguments, so the dashboard cannot send it again faithfully.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, url_for

from celery_dashboard import arguments
from celery_dashboard.catalog import CATALOG, Entry, summary, validate
from web import api, audit, launches
from web.auth import current_user, require
from web.errors import ApiError
from web.extensions import limiter, services
from web.users import User

bp = Blueprint("actions", __name__, url_prefix="/api")

# The states a task can be retried from: it failed, or it was cancelled.
RETRYABLE = ("FAILURE", "REVOKED")
NOT_FROM_CATALOG = ("this task was not launched from the dashboard (it was sent with .delay() or apply_async by "
                    "other code), so the dashboard does not know its full arguments: send it again from there")


def limited(view: Any) -> Any:
    """The launch rate limits (LAUNCH_LIMIT per user, LAUNCH_LIMIT_PER_ADDRESS per address) on `view`;
    none without sign-in (web.extensions.limits_off)."""
    view = limiter.limit(lambda: current_app.config["LAUNCH_LIMIT_PER_ADDRESS"])(view)
    return limiter.limit(lambda: current_app.config["LAUNCH_LIMIT"], key_func=api._user_key)(view)


def entry_of(record: dict[str, Any]) -> Entry | None:
    """The catalog entry whose Celery task `record` is, or None."""
    return next((entry for entry in CATALOG.values() if entry.task.name == record.get("name")), None)


def launched_params(task_id: str) -> dict[str, Any] | None:
    """The full parameters of a dashboard launch (unmasked: never sent to a browser as they are)."""
    return services().store.params(task_id)


def relaunchable(record: dict[str, Any]) -> tuple[Entry, dict[str, Any]]:
    """The catalog entry and full parameters of a dashboard launch; ApiError 409 for other tasks."""
    entry, params = entry_of(record), launched_params(record["id"])
    if entry is None or params is None:
        raise ApiError(409, NOT_FROM_CATALOG)
    return entry, params


def retry_refusal(record: dict[str, Any]) -> str | None:
    """Why `record`'s task cannot be retried, or None when it can."""
    if record.get("state") not in RETRYABLE:
        return f"only a failed or cancelled task can be retried; this one is {record.get('state')}"
    if entry_of(record) is None or launched_params(record["id"]) is None:
        return NOT_FROM_CATALOG
    return None


def send_again(record: dict[str, Any], user: User) -> dict[str, Any]:
    """Launch `record`'s catalog task again with the same parameters, checked again against the
    catalog's schema, as `user`'s task with `retry_of` set, unless an identical task is queued or
    running (api.Identical, 409 with it to attach to, as a launch). ApiError 409/429/503."""
    reason = retry_refusal(record)
    if reason:
        raise ApiError(409, reason)
    entry, params = relaunchable(record)
    checked, errors = validate(entry, params)
    if errors:  # the catalog's schema changed since the launch
        raise ApiError(409, "its arguments no longer fit the task's parameters: " + summary(errors))
    return api.send_unless_identical(entry, checked, user, retry_of=record["id"])


@bp.post("/tasks/<path:task_id>/retry")
@require(lambda user: user.can_launch, "retrying needs the operator or admin role")
@limited
@launches.idempotent
def retry(task_id: str) -> Any:
    """Launch a failed or cancelled catalog task again with the same arguments: 202 with the new task
    (`retry_of` = this one), owned by whoever retries; 409 with the reason for any other task."""
    exact = api.raw_id(task_id, "/retry")
    if exact is None:  # `/api/tasks/job%2Fretry`: the task "job/retry" itself, which takes no POST
        raise ApiError(405, "method not allowed")
    record = api.find(exact)
    try:
        new = send_again(record, current_user())
    except api.Identical as exc:
        return exc.answer()  # answered, not raised: launches.idempotent keeps a 409 for the key's repeats
    audit.write("retry", task=record["id"], name=record.get("name"), new_task=new["id"])
    response = jsonify(new)
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_task", task_id=new["id"])
    return response


@bp.get("/tasks/<path:task_id>/params")
def params(task_id: str) -> Any:
    """A dashboard launch's arguments, for a re-run with edited arguments: {"task": catalog name,
    "params": {...}, "masked": [names]}; values of sensitive names (MASKED_ARGUMENTS) are left
    out and listed in `masked`. 409 for a task not launched from the dashboard."""
    exact = api.raw_id(task_id, "/params")
    if exact is None:  # `/api/tasks/job%2Fparams`: the task "job/params" itself
        return api.get_task(task_id + "/params")
    entry, values = relaunchable(api.find(exact))
    masked = [name for name in values if arguments.sensitive(name)]
    return jsonify({"task": entry.name, "params": {k: v for k, v in values.items() if k not in masked},
                    "masked": masked})

