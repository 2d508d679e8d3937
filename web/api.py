"""The REST API: the catalog, launching, listing, reading and cancelling tasks."""
from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, current_app, jsonify, request, url_for

from celery_dashboard import index, revocations
from celery_dashboard.catalog import CATALOG, Entry, summary, validate
from web import audit, control, launches, lifecycle, offload, records
from web.auth import current_user, require
from web.errors import ApiError, error_body, not_text
from web.extensions import limiter, services
from web.filters import Page, TaskFilter
from web.results import BackendReader, full_body
from web.users import User

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")

STATE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # Celery states are open-ended (update_state takes any name)
MAX_LIMIT = 500
RAW_PATH_KEYS = ("RAW_PATH_INFO", "RAW_URI")  # WSGI keys of the undecoded path: eventlet's, Werkzeug's
# A result entry up to this size (bytes in Redis) is served on the event loop (a few ms of CPU);
# a larger one through web.offload.
INLINE_RESULT_BYTES = 256_000
MAX_ID = 1000  # longer ids are not looked up (Celery accepts any string; Redis keys of this size are fine)
# Pools that cannot stop a running task (celery.concurrency: solo and threads do not implement
# terminate); a task there stops only at its next celery_dashboard progress report.
CANNOT_TERMINATE = ("solo", "threads")
# How an ended task's state reads in a sentence (Celery's state names otherwise).
ENDED_AS = {"SUCCESS": "it succeeded", "FAILURE": "it failed", "REVOKED": "it was cancelled",
            "REJECTED": "it was rejected", "IGNORED": "it was ignored", "LOST": "its worker was lost"}
OPENAPI = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
def openapi() -> Any:
    """The OpenAPI 3.1 description of this API (kept true by tests/unit/test_openapi.py)."""
    return current_app.response_class(OPENAPI.read_bytes(), mimetype="application/json")


@bp.get("/catalog")
def catalog() -> Any:
    return jsonify({"tasks": [entry.public() for entry in CATALOG.values()]})


def _json_object() -> dict[str, Any]:
    """The request's JSON object, the one door every JSON body of the API comes in by. ApiError 400
    when the body is not a JSON object (or nests deeper than the JSON reader goes); 422 naming the
    first field whose text is not valid Unicode (a lone surrogate), which no key, hash or log
    could hold."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # "[[[[..." deeper than Python's JSON reader recurses
        body = None
    if not isinstance(body, dict):
        if request.content_length and not request.is_json:  # JSON sent as text/plain or a form
            raise ApiError(400, f"the request body must be a JSON object sent with Content-Type: application/json "
                                f"(this one came as {request.mimetype or 'no Content-Type'})")
        raise ApiError(400, "the request body must be a JSON object")
    bad = not_text(body)
    if bad:
        raise ApiError(422, f"the value of {bad['field']} is {bad['message']}", [bad])
    return body


def visible(user: User, record: dict[str, Any]) -> bool:
    """Admins see every task; everyone else only the tasks they launched."""
    return user.is_admin or (record.get("owner") is not None and record.get("owner") == user.name)


def attach_scope(user: User) -> str:
    """Whose identical launches `user` may attach to, as `visible` allows: "admins" (anyone's), else
    "user:<name>" (their own). Part of a launch claim's key (web.launches.claim)."""
    return "admins" if user.is_admin else "user:" + user.name


def _user_key() -> str:
    return "user:" + current_user().name


@bp.post("/tasks")
@require(lambda user: user.can_launch, "launching needs the operator or admin role")
@limiter.limit(lambda: current_app.config["LAUNCH_LIMIT"], key_func=_user_key)  # none without sign-in
@limiter.limit(lambda: current_app.config["LAUNCH_LIMIT_PER_ADDRESS"])  # (web.extensions.limits_off)
@launches.idempotent
def launch() -> Any:
    body = _json_object()
    unknown = sorted(set(body) - {"task", "params", "duplicate"})
    if unknown:
        raise ApiError(422, "unknown fields", [{"field": f, "message": "not allowed"} for f in unknown])
    name = body.get("task")
    if name is None or name == "":
        raise ApiError(422, "task is required", [{"field": "task", "message": "must be a catalog name"}])
    if not isinstance(name, str):
        raise ApiError(422, "task must be a catalog name, as text", [{"field": "task", "message": "must be text"}])
    entry = CATALOG.get(name)
    if entry is None:
        raise ApiError(404, f"unknown task {name[:100]!r}", [{"field": "task", "message": "not in the catalog"}])
    params, errors = validate(entry, body.get("params"))
    if errors:
        for error in errors:
            error["field"] = f"params.{error['field']}" if error["field"] != "params" else "params"
        raise ApiError(422, summary(errors), errors)
    if not isinstance(body.get("duplicate", False), bool):
        raise ApiError(422, "duplicate must be true or false", [{"field": "duplicate", "message": "true or false"}])
    user = current_user()
    try:
        record = send(entry, params, user) if body.get("duplicate") else send_unless_identical(entry, params, user)
    except Identical as exc:
        return exc.answer()  # answered, not raised: launches.idempotent keeps a 409 for the key's repeats
    response = jsonify(record)
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_task", task_id=record["id"])
    return response


class Identical(ApiError):
    """409: an identical task is already queued or running (its object in `attach`)."""

    def __init__(self, running: dict[str, Any]) -> None:
        where = "queued" if lifecycle.phase(running.get("state")) < lifecycle.STARTED else "running"
        super().__init__(409, f"an identical task is already {where}")
        self.attach = running

    def answer(self) -> Any:
        """The 409 response: {"error", "attach": the task object}."""
        return jsonify(error_body(self.message) | {"attach": self.attach}), 409


def send_unless_identical(entry: Entry, params: dict[str, Any], user: User,
                          retry_of: str | None = None) -> dict[str, Any]:
    """`send`, unless the same catalog task with the same parameters is already queued or running
    where `user` may see it, or is being sent by an identical launch that came at the same moment
    (the claim decides which: web.launches.claim); then Identical (409, with it to attach to).
    Raises what `send` raises."""
    running = launches.identical(entry.name, params, lambda r: visible(user, r))
    if running is None:
        taken = launches.claim(entry.name, params, attach_scope(user))
        if not isinstance(taken, launches.Claim):
            running = taken
    if running is not None:
        raise Identical(running)
    try:
        record = send(entry, params, user, retry_of=retry_of, task_id=taken.task_id)
    except BaseException:
        taken.release()
        raise
    taken.sent()
    return record


def send(entry: Entry, params: dict[str, Any], user: User, retry_of: str | None = None,
         task_id: str | None = None) -> dict[str, Any]:
    """Send the catalog task `entry` with its validated `params` as `user`'s task; return its new
    task object (PENDING, also pushed to dashboards). `retry_of`: the id of the task it re-launches;
    `task_id`: the id to send it with (a launch claim's), a new UUID when None.
    Raises ApiError 429 (the user's MAX_ACTIVE_PER_USER unfinished tasks) or 503 (broker away)."""
    dash = services()
    cap = current_app.config["MAX_ACTIVE_PER_USER"]
    if current_app.config["AUTH_REQUIRED"] and dash.store.active_count(user.name, cap) >= cap:
        raise ApiError(429, f"you already have {cap} unfinished tasks; wait for some to end or cancel them")
    task_id = task_id or str(uuid.uuid4())
    # The owner travels in the message headers, so the index records it from the first write;
    # answer with that record without another round trip, and push it with the next batch.
    try:
        headers = {"owner": user.name, **({"retry_of": retry_of} if retry_of else {})}
        options = {"kwargs": params, "task_id": task_id, "headers": headers}
        asker = dash.reconciler.control
        if isinstance(asker, control.Control):  # its connection: launches hold none of their own
            asker.apply_async(entry.task, **options)
        else:
            entry.task.apply_async(**options)
    except Exception as exc:  # the broker is away, or the message could not be sent: never shown queued
        log.warning("launch of %s failed: %r", entry.name, exc)
        try:
            index.forget(index.client(), task_id)
        except Exception:  # noqa: BLE001 - Redis may be the reason the launch failed
            log.warning("could not remove the unsent task %s from the index", task_id)
        raise ApiError(503, "the task could not be sent to the broker; try again shortly") from exc
    record = index.pending_record(task_id, entry.task.name, None, time.time(), user.name)
    if retry_of:
        record["retry_of"] = retry_of
    dash.coalescer.add(dict(record, source="event"))
    launches.remember(entry.name, params, task_id)
    return record


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
    """A page of the tasks matching the query string's filter (web.filters: state, name, owner,
    queue, worker, since, until, q; sort, limit, offset): {tasks, total, counts, truncated, limit,
    offset}. Non-admins only ever get their own tasks."""
    flt, page = TaskFilter.from_args(request.args), Page.from_args(request.args)
    user = current_user()
    owner = None if user.is_admin else user.name
    found = services().store.query(flt, page.limit, page.offset, owner, page.sort,
                                   bound=current_app.config["QUERY_SCAN_LIMIT"])
    return jsonify({**found, "limit": page.limit, "offset": page.offset})


def find(task_id: str) -> dict[str, Any]:
    """The task's object from the index, else rebuilt from the result backend, else 404.

    Another user's task is 404 too: whether an id exists is itself not shown."""
    dash = services()
    record = dash.store.get(task_id) if len(task_id) <= MAX_ID else None
    if record is None and len(task_id) <= MAX_ID:
        update = records.from_meta(task_id, dash.read_results([task_id]).get(task_id))
        if update:
            record = records.new_record(task_id)
            records.merge(record, update)
    if record is None or not visible(current_user(), record):
        raise ApiError(404, "unknown task id")
    return record


def raw_id(task_id: str, suffix: str = "") -> str | None:
    """The task id as the client wrote it, from the undecoded path when the server gives it
    (eventlet's RAW_PATH_INFO, Werkzeug's RAW_URI): routing sees `job%2Fresult` as `job/result`,
    but `/api/tasks/job%2Fresult` is the task "job/result", not the result of "job". Returns None
    when the undecoded path does not end with `suffix` (the route matched a decoded `/`)."""
    raw = next((request.environ[key] for key in RAW_PATH_KEYS if request.environ.get(key)), "")
    raw = raw.split("?", 1)[0]
    prefix = request.script_root + "/api/tasks/"
    if not raw.startswith(prefix):
        return task_id
    rest = raw[len(prefix):]
    if suffix:
        if not rest.endswith(suffix):
            return None
        rest = rest[:-len(suffix)]
    return unquote(rest)


# Any id Celery accepts, `/` included: the converter takes the rest of the path (URL-encode it).
@bp.get("/tasks/<path:task_id>")
def get_task(task_id: str) -> Any:
    """The task object, with `children`: its first MAX_CHILDREN children in the order they were
    sent, each {id, name, state} (a group's tasks), and `children_total`."""
    record = find(raw_id(task_id) or task_id)
    children, total = services().store.children(record["id"])
    return jsonify({**record, "children": children, "children_total": total})


@bp.get("/tasks/<path:task_id>/result")
def get_result(task_id: str) -> Any:
    """The task's whole result from the result backend, up to RESULT_MAX_BYTES (413 beyond);
    task objects carry only a preview."""
    exact = raw_id(task_id, "/result")
    if exact is None:  # `/api/tasks/job%2Fresult`: the task "job/result" itself
        return get_task(task_id + "/result")
    task_id = exact
    record = find(task_id)
    reader = services().read_results
    cap = current_app.config["RESULT_MAX_BYTES"]
    if not isinstance(reader, BackendReader):
        raise ApiError(404, "no result backend to read from")
    size = reader.size(task_id)
    if size > cap:
        raise ApiError(413, f"the result is {size:,} bytes, more than RESULT_MAX_BYTES ({cap:,})")
    if size <= INLINE_RESULT_BYTES:
        body = _result_body(task_id, reader.raw(task_id), reader, record["state"], cap)
    else:
        with offload.turn():  # read on the event loop, one at a time; decoded, masked and written off it
            raw = reader.raw(task_id)
            body = offload.run(current_app.config["ASYNC_MODE"], _result_body, task_id, raw, reader, record["state"],
                               cap)
    return current_app.response_class(body, mimetype="application/json")


def _result_body(task_id: str, raw: bytes | None, reader: BackendReader, state: str | None, cap: int) -> bytes:
    """The result endpoint's body (web.results.full_body); no request or app context needed (it
    may run in another thread). Raises ApiError 404 when the entry is gone, 413 when it grew past
    `cap` bytes since its size was read, 422 when it cannot be decoded."""
    if raw is None:
        raise ApiError(404, "the result backend holds no result for this task")
    if len(raw) > cap:
        raise ApiError(413, f"the result is {len(raw):,} bytes, more than RESULT_MAX_BYTES ({cap:,})")
    meta = reader.decode(raw)
    if "undecodable" in meta:
        raise ApiError(422, f"the result cannot be decoded: {meta['undecodable']}")
    return full_body(task_id, meta, state, len(raw))


def _stoppable(record: dict[str, Any], ask: bool = True) -> str | None:
    """Why a running task cannot be stopped, or None when it can: a queued task always can (the
    revocation is kept in Redis for every worker to check), a running one on prefork, gevent and
    eventlet by terminating it, on solo and threads only when it reports progress through
    celery_dashboard (it stops at its next report). `ask`: ask the workers for an unknown pool."""
    if lifecycle.phase(record.get("state")) < lifecycle.STARTED or record.get("cooperative"):
        return None
    reconciler = services().reconciler
    pool = reconciler.pool(record.get("worker"))
    if pool is None and ask:  # not asked yet (a worker just seen): ask now, once
        reconciler.ask_pools()
        pool = reconciler.pool(record.get("worker"))
    if pool in CANNOT_TERMINATE:
        return (f"the task runs on a {pool} pool worker, which cannot stop a running task, and it has not "
                "reported progress through celery_dashboard (yet), so it cannot stop itself; it runs to its end "
                "unless it reports progress: try again after its first report")
    if pool is None:
        return ("the worker running the task did not say which pool it uses (a busy solo worker cannot "
                "answer), so the task may not stop; it does not report progress through celery_dashboard")
    return None


@bp.post("/tasks/<path:task_id>/cancel")
@require(lambda user: user.can_launch, "cancelling needs the operator or admin role")
def cancel(task_id: str) -> Any:
    """Cancel a task: 202 when it will end REVOKED, 409 with the reason when it cannot."""
    exact = raw_id(task_id, "/cancel")
    if exact is None:  # `/api/tasks/job%2Fcancel`: the task "job/cancel" itself, which takes no POST
        raise ApiError(405, "method not allowed")
    record = find(exact)
    stop(record)
    audit.write("cancel", task=record["id"], name=record.get("name"))
    response = jsonify(record)
    response.status_code = 202
    return response


def stop(record: dict[str, Any], ask: bool = True) -> None:
    """Cancel the task of `record` (one the user may see): it will end REVOKED. Raises ApiError
    409 with the reason when it already ended or cannot be stopped. `ask=False`: an unknown pool
    is not asked for again (a bulk cancel asks once, not once per task of a busy solo worker)."""
    task_id = record["id"]
    if records.is_terminal(record):
        raise ApiError(409, f"the task has already ended: {ENDED_AS.get(record['state'], record['state'])}")
    reason = _stoppable(record, ask)
    if reason:
        raise ApiError(409, reason)
    dash = services()
    # Kept in Redis (for REVOCATION_TTL seconds), where every worker that imports celery_dashboard
    # checks it before a task starts and at each progress report: it holds with no worker online
    # and across restarts.
    revocations.revoke(revocations.client_for(dash.celery_app), task_id)
    # And Celery's own broadcast: SIGTERM ends a running task's pool process (prefork), or its
    # greenlet (gevent, eventlet); a queued one is discarded when a worker meets it.
    # (terminate is harmless for a task that has not started: it may start meanwhile).
    # Sent on the dashboard's own control connection (web.control): Celery's app.control would
    # take broker connections from the launches' bounded pool (the connection budget).
    # Not asked to terminate where the pool cannot (solo, threads: Celery logs a NotImplementedError
    # traceback); the revocation in Redis stops the task at its next progress report there.
    terminate = dash.reconciler.pool(record.get("worker")) not in CANNOT_TERMINATE
    asker = dash.reconciler.control
    if asker is not None:
        asker.revoke(task_id, terminate=terminate, signal="SIGTERM")
    else:
        dash.celery_app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")
    # A task its worker no longer holds (a restart lost it) would stay running for good: the
    # reconciler asks the workers soon and ends it REVOKED when none holds it (Reconciler.cancelled).
    if record.get("worker") and lifecycle.phase(record.get("state")) >= lifecycle.RECEIVED:
        dash.reconciler.cancelled(task_id)
    # A task still waiting in the broker is taken out of its queue: no worker can run it then,
    # whatever its code (a worker without celery_dashboard knows only the broadcast, in memory).
    if dash.queues is not None and lifecycle.phase(record.get("state")) < lifecycle.STARTED \
            and dash.queues.remove(task_id):
        dash.celery_app.backend.mark_as_revoked(task_id, reason="revoked")
        now = records.iso(time.time())
        dash.coalescer.add({"id": task_id, "state": "REVOKED", "source": "backend", "finished": now,
                            "updated": now, "error": {"type": "TaskRevokedError", "message": "cancelled (revoked)",
                                                      "traceback": None}})
