"""The audit log of actions on tasks (who, when, what, which filter, how many), and its admin view.

Kept in Redis as one list, newest first, capped at AUDIT_LIMIT entries (LPUSH then LTRIM), so
every web process writes to and reads the same log.
"""
from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from web import records
from web.auth import current_user, require
from web.errors import ApiError
from web.extensions import services

AUDIT_KEY = "dashboard:audit"
MAX_PAGE = 500

bp = Blueprint("audit", __name__, url_prefix="/api")


def write(action: str, *, filter: dict[str, Any] | None = None, count: int = 1, **details: Any) -> dict[str, Any]:
    """Add an entry for the current user: {"who", "when" (ISO 8601, UTC), "action", "filter" (the
    filter's query parameters, or None for one task), "count" (tasks asked for), **details}
    (e.g. task, name, new_task, done, skipped). Returns the entry."""
    entry = {"who": current_user().name, "when": records.iso(time.time()), "action": action,
             "filter": filter, "count": count, **details}
    pipe = services().store.client.pipeline(transaction=False)
    pipe.lpush(AUDIT_KEY, json.dumps(entry))
    pipe.ltrim(AUDIT_KEY, 0, int(current_app.config["AUDIT_LIMIT"]) - 1)
    pipe.execute()
    return entry


def _page_arg(name: str, default: int, high: int) -> int:
    raw = request.args.get(name) or str(default)
    if not raw.isdigit() or not (name == "offset" or int(raw) >= 1) or int(raw) > high:
        low = 0 if name == "offset" else 1
        raise ApiError(422, f"{name} must be an integer from {low} to {high}",
                       [{"field": name, "message": f"must be an integer from {low} to {high}"}])
    return int(raw)


@bp.get("/audit")
@require(lambda user: user.is_admin, "the audit log is for admins")
def entries() -> Any:
    """A page of the audit log, newest first: {"entries", "total", "limit", "offset"}."""
    limit = _page_arg("limit", 50, MAX_PAGE)
    offset = _page_arg("offset", 0, 100_000)
    client = services().store.client
    pipe = client.pipeline(transaction=False)
    pipe.lrange(AUDIT_KEY, offset, offset + limit - 1)
    pipe.llen(AUDIT_KEY)
    raw, total = pipe.execute()
    return jsonify({"entries": [json.loads(item) for item in raw], "total": int(total),
                    "limit": limit, "offset": offset})
