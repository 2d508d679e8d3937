"""The REST API: the catalog, launching, listing, reading and cancelling tasks."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for

from celery_dashboard import index
from celery_dashboard.catalog import CATALOG, validate
from web import records
from web.auth import current_user, require
from web.errors import ApiError
from web.extensions import limiter, services
from web.users import User

bp = Blueprint("api", __name__, url_prefix="/api")

STATES = sorted(set(records.PHASE) | records.TERMINAL)
MAX_LIMIT = 500
OPENAPI = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
def openapi() -> Any:
    """The OpenAPI 3.1 description of this API (kept true by tests/unit/test_openapi.py)."""
    return current_app.response_class(OPENAPI.read_bytes(), mimetype="application/json")


@bp.get("/catalog")
def catalog() -> Any:
    return jsonify({"tasks": [entry.public() for entry in CATALOG.values()]})


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def visible(user: User, record: dict[str, Any]) -> bool:
    """Admins see every task; everyone else only the tasks they launched."""
    return user.is_admin or (record.get("owner") is not None and record.get("owner") == user.name)


def _user_key() -> str:
    return "user:" + current_user().name


def _limits_off() -> bool:
    return not current_app.config["AUTH_REQUIRED"]  # the local admin of a loopback run


@bp.post("/tasks")
@require(lambda user: user.can_launch, "launching needs the operator or admin role")
@limiter.limit(lambda: current_app.config["LAUNCH_LIMIT"], key_func=_user_key, exempt_when=_limits_off)
@limiter.limit(lambda: current_app.config["LAUNCH_LIMIT_PER_ADDRESS"], exempt_when=_limits_off)
def launch() -> Any:
    body = _json_object()
    unknown = sorted(set(body) - {"task", "params"})
    if unknown:
        raise ApiError(422, "unknown fields", [{"field": f, "message": "not allowed"} for f in unknown])
    name = body.get("task")
    if not isinstance(name, str) or not name:
        raise ApiError(422, "task is required", [{"field": "task", "message": "must be a catalog name"}])
    entry = CATALOG.get(name)
    if entry is None:
        raise ApiError(404, f"unknown task {name[:100]!r}", [{"field": "task", "message": "not in the catalog"}])
    params, errors = validate(entry, body.get("params"))
    if errors:
        for error in errors:
            error["field"] = f"params.{error['field']}" if error["field"] != "params" else "params"
        raise ApiError(422, "invalid parameters", errors)

    user, dash = current_user(), services()
    cap = current_app.config["MAX_ACTIVE_PER_USER"]
    if current_app.config["AUTH_REQUIRED"] and dash.store.active_count(user.name) >= cap:
        raise ApiError(429, f"you already have {cap} unfinished tasks; wait for some to end or cancel them")
    task_id = str(uuid.uuid4())
    # The owner travels in the message headers, so the index records it from the first write;
    # answer with that record without another round trip, and push it with the next batch.
    entry.task.apply_async(kwargs=params, task_id=task_id, headers={"owner": user.name})
    record = index.pending_record(task_id, entry.task.name, None, time.time(), user.name)
    dash.relay.add(record)
    response = jsonify(record)
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_task", task_id=task_id)
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(422, f"{name} must be an integer from {low} to {high}",
                       [{"field": name, "message": f"must be an integer from {low} to {high}"}])
    return value


@bp.get("/tasks")
def list_tasks() -> Any:
    limit = _int_arg("limit", 50, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 100_000)
    state = request.args.get("state") or None
    if state is not None and state.upper() not in STATES:
        raise ApiError(422, "unknown state", [{"field": "state", "message": f"one of {', '.join(STATES)}"}])
    user = current_user()
    owner = None if user.is_admin else user.name
    return jsonify({"tasks": services().store.recent(limit, state.upper() if state else None, offset, owner)})


def find(task_id: str) -> dict[str, Any]:
    """The task's object from the index, else rebuilt from the result backend, else 404.

    Another user's task is 404 too: whether an id exists is itself not shown."""
    dash = services()
    record = dash.store.get(task_id) if len(task_id) <= 200 else None
    if record is None and len(task_id) <= 200:
        update = records.from_meta(task_id, dash.relay.read_results([task_id]).get(task_id))
        if update:
            record = records.new_record(task_id)
            records.merge(record, update)
    if record is None or not visible(current_user(), record):
        raise ApiError(404, "unknown task id")
    return record


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Any:
    return jsonify(find(task_id))


@bp.post("/tasks/<task_id>/cancel")
@require(lambda user: user.can_launch, "cancelling needs the operator or admin role")
def cancel(task_id: str) -> Any:
    record = find(task_id)
    if records.is_terminal(record):
        raise ApiError(409, f"task already ended {record['state']}")
    # SIGTERM ends a running task's pool process; a queued one is dropped when a worker meets it.
    services().celery_app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    response = jsonify(record)
    response.status_code = 202
    return response
