"""Bulk actions: cancel or retry every task matching a filter, previewed, then confirmed.

A preview finds the exact tasks the action applies to (at most BULK_MAX, newest first) and pins
that list in Redis under a random token for BULK_TOKEN_SECONDS; the confirmation acts on those
ids only (once: the token is taken with GETDEL), so tasks that start, end or appear in between
never change what was confirmed. A task that meanwhile stopped qualifying is skipped and counted.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
from collections import Counter
from typing import Any

from flask import Blueprint, current_app, jsonify

from celery_dashboard.index import PARAMS_KEY
from web import actions, api, audit, records
from web.auth import current_user, require
from web.errors import ApiError, error_body
from web.extensions import services
from web.filters import TaskFilter
from web.users import User

bp = Blueprint("bulk", __name__, url_prefix="/api")

TOKEN_PREFIX = "dashboard:bulk:"
ACTIONS = ("cancel", "retry")
# Distinct reasons for skipped tasks given back (each with its count).
MAX_REASONS = 5
CHUNK = 1000


def _request(body: dict[str, Any], fields: set[str]) -> tuple[str, TaskFilter]:
    """The action and the filter of a bulk request body; ApiError 422 naming the field."""
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ApiError(422, "unknown fields", [{"field": f, "message": "not allowed"} for f in unknown])
    action = body.get("action")
    if action not in ACTIONS:
        raise ApiError(422, "action must be cancel or retry", [{"field": "action", "message": "cancel or retry"}])
    given = body.get("filter", {})
    if not isinstance(given, dict):
        raise ApiError(422, "filter must be an object of query parameters",
                       [{"field": "filter", "message": "an object of query parameters, as in GET /api/tasks"}])
    return action, TaskFilter.from_args(given, strict=True)


def _unfinished(flt: TaskFilter, user: User) -> list[dict[str, Any]]:
    """Every unfinished task matching `flt` that `user` may see, newest first (from the index's set
    of unfinished tasks: exact, whatever the history's size)."""
    store = services().store
    ids = store.active_ids()
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), CHUNK):
        for record in store.get_many(ids[start:start + CHUNK]).values():
            if not records.is_terminal(record) and api.visible(user, record) and flt.matches(record):
                found.append(record)
    return sorted(found, key=lambda r: r.get("created") or "", reverse=True)


def _retryable(flt: TaskFilter, user: User) -> tuple[list[dict[str, Any]], bool]:
    """Every failed or cancelled dashboard launch matching `flt` that `user` may see, newest first,
    and whether the scan stopped at its bound (QUERY_SCAN_LIMIT index entries) with more unread."""
    states = frozenset(actions.RETRYABLE) & flt.states if flt.states else frozenset(actions.RETRYABLE)
    if not states:
        return [], False
    store = services().store
    matched: list[str] = []
    truncated = store.scan(dataclasses.replace(flt, states=states), None if user.is_admin else user.name,
                           "newest", lambda hit: matched.append(hit.id))
    found: list[dict[str, Any]] = []
    for start in range(0, len(matched), CHUNK):
        chunk = matched[start:start + CHUNK]
        by_id = store.get_many(chunk)
        launched = store.client.hmget(PARAMS_KEY, chunk)
        found += [by_id[i] for i, params in zip(chunk, launched, strict=True)
                  if params is not None and i in by_id and api.visible(user, by_id[i])
                  and actions.entry_of(by_id[i]) is not None]
    return found, truncated


def eligible(action: str, flt: TaskFilter, user: User) -> tuple[list[dict[str, Any]], bool]:
    """The tasks `action` applies to among those matching `flt` that `user` may see, newest first,
    and whether the search stopped at its bound (then there may be more)."""
    return (_unfinished(flt, user), False) if action == "cancel" else _retryable(flt, user)


@bp.post("/bulk/preview")
@require(lambda user: user.can_launch, "bulk actions need the operator or admin role")
def preview() -> Any:
    """{"action", "filter"} -> {"count": tasks the confirmation will act on, "capped": more match
    than BULK_MAX, "cap", "total": all that match, "truncated": the search stopped at its bound
    (total is a lower bound), "token": for POST /api/bulk}."""
    action, flt = _request(api._json_object(), {"action", "filter"})
    user, cap = current_user(), int(current_app.config["BULK_MAX"])
    services().store.check_states(flt, None if user.is_admin else user.name,
                                  bound=int(current_app.config["QUERY_SCAN_LIMIT"]))  # "success": 422, not 0 tasks
    found, truncated = eligible(action, flt, user)
    ids = [record["id"] for record in found[:cap]]
    token = secrets.token_urlsafe(24)
    pinned = {"user": user.name, "action": action, "filter": flt.as_dict(), "ids": ids}
    services().store.client.set(TOKEN_PREFIX + token, json.dumps(pinned),
                                ex=int(current_app.config["BULK_TOKEN_SECONDS"]))
    return jsonify({"action": action, "count": len(ids), "capped": len(found) > cap or truncated, "cap": cap,
                    "total": len(found), "truncated": truncated, "token": token})


def _act(action: str, record: dict[str, Any], user: User) -> None:
    """Cancel or retry one task; ApiError with the reason when it no longer qualifies."""
    if action == "cancel":
        api.stop(record, ask=False)  # the workers' pools were asked once, before the first
    else:
        actions.send_again(record, user)


@bp.post("/bulk")
@require(lambda user: user.can_launch, "bulk actions need the operator or admin role")
@actions.limited
def act() -> Any:
    """{"action", "filter", "token"} -> {"action", "count", "done", "skipped", "reasons"}: acts on
    exactly the tasks the preview counted (those that meanwhile stopped qualifying are skipped)."""
    body = api._json_object()
    action, flt = _request(body, {"action", "filter", "token"})
    token = body.get("token")
    if not isinstance(token, str) or not token or len(token) > 100:
        raise ApiError(422, "token is required: the one from POST /api/bulk/preview",
                       [{"field": "token", "message": "the preview's token"}])
    user = current_user()
    raw = services().store.client.getdel(TOKEN_PREFIX + token)
    pinned = json.loads(raw) if raw else None
    if pinned is None or pinned.get("user") != user.name:
        raise ApiError(409, "this preview expired or was already used; preview the action again")
    if pinned.get("action") != action or pinned.get("filter") != flt.as_dict():
        raise ApiError(409, "the action or filter is not the one previewed; preview the action again")
    ids: list[str] = pinned["ids"]
    current = services().store.get_many(ids)
    if action == "cancel":
        services().reconciler.ask_pools()  # once: which running tasks can be stopped
    done, reasons = 0, Counter[str]()
    for task_id in ids:
        record = current.get(task_id)
        try:
            if record is None or not api.visible(user, record):
                raise ApiError(404, "the task is no longer known")
            _act(action, record, user)
            done += 1
        except ApiError as exc:
            reasons[exc.message] += 1
            if exc.status == 503:  # the broker is away: the rest would fail alike
                reasons[exc.message] += len(ids) - done - sum(reasons.values())
                break
    skipped = len(ids) - done
    audit.write(f"bulk-{action}", filter=flt.as_dict(), count=len(ids), done=done, skipped=skipped)
    said = [{"reason": error_body(reason)["error"], "count": count}  # a sentence, as every error says it
            for reason, count in reasons.most_common(MAX_REASONS)]
    return jsonify({"action": action, "count": len(ids), "done": done, "skipped": skipped, "reasons": said})
