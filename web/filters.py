"""What a user looks for in the task list: a filter and a page, parsed and checked from query
parameters (or a bulk action's JSON filter), and the test one task object passes or not."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import states as celery_states

from web import lifecycle, records
from web.errors import ApiError

STATE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # Celery states are open-ended (update_state takes any name)
# The states a filter always accepts: Celery's and the dashboard's own (PROGRESS, LOST, UNKNOWN,
# IGNORED, REJECTED). Any other name must be a state some task holds (its own, from update_state).
KNOWN_STATES = frozenset(celery_states.ALL_STATES) | frozenset(lifecycle.KNOWN_STATES)
MAX_STATES = 20
MAX_TEXT = 200   # longest name, owner, queue, worker or q accepted (characters)
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_OFFSET = 100_000
SORTS = ("newest", "oldest")
TEXT_FIELDS = ("name", "owner", "queue", "worker", "q")
FIELDS = ("state", *TEXT_FIELDS, "since", "until")
PAGING = ("sort", "limit", "offset")


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(422, f"{name} {message}", [{"field": name, "message": message}])


def _text(args: Mapping[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise _invalid(name, f"must be at most {MAX_TEXT} characters")
    return value or None


def parse_time(value: str) -> float:
    """Epoch seconds from ISO 8601 (UTC when no offset is given) or epoch seconds; ValueError."""
    try:
        seconds = float(value)
    except ValueError:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if seconds != seconds or abs(seconds) > 1e11:  # NaN, or not a time this dashboard has seen
        raise ValueError(value)
    return seconds


def _time(args: Mapping[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _invalid(name, "must be an ISO 8601 time or epoch seconds")
    try:
        return parse_time(value.strip())
    except (ValueError, OverflowError, OSError):
        raise _invalid(name, "must be an ISO 8601 time or epoch seconds") from None


def _states(args: Mapping[str, Any]) -> frozenset[str]:
    value = args.get("state")
    if value is None or value == "":
        return frozenset()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise _invalid("state", "must be Celery state names, comma separated")
    names = [name.strip() for name in value.split(",") if name.strip()]
    if len(names) > MAX_STATES or not all(STATE.fullmatch(name) for name in names):
        raise _invalid("state", f"must be at most {MAX_STATES} Celery state names (such as SUCCESS), comma separated")
    return frozenset(names)


def _hint(name: str) -> str | None:
    """The known state `name` was likely meant as: the same letters in another case, or a near spelling."""
    same = [known for known in sorted(KNOWN_STATES) if known.lower() == name.lower()]
    return (same or difflib.get_close_matches(name.upper(), sorted(KNOWN_STATES), n=1, cutoff=0.8) or [None])[0]


def unknown_states(names: Iterable[str], several: bool = False) -> ApiError:
    """The 422 naming `state` for state names that neither Celery nor the dashboard knows and no
    task holds, with a hint for a slip of case or spelling ("did you mean SUCCESS?"). `several`:
    the filter names more states than these, so the field's message lists the bad ones."""
    names = sorted(names)
    hints = sorted({hint for hint in map(_hint, names) if hint})
    mean = f"; did you mean {' or '.join(hints)}?" if hints else ""
    listed = ", ".join(f"\u201c{name}\u201d" for name in names)
    field = "is not a state Celery, the dashboard or any task uses" + (f" ({listed})" if several else "") + mean
    return ApiError(422, f"unknown state {listed}: not a state Celery, the dashboard or any task uses{mean}",
                    [{"field": "state", "message": field}])


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a user looks for; every field set must match (an empty filter matches all).

    states: any of these states. name: the task name contains it (case-insensitive; the whole
    name matches too). owner, queue: exactly. worker: the hostname contains it (case-insensitive).
    since, until: epoch seconds, on `created`, both included. q: an id prefix, or text in the
    argument previews (case-insensitive; masked values are not searchable)."""

    states: frozenset[str] = field(default_factory=frozenset)
    name: str | None = None
    owner: str | None = None
    queue: str | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None
    q: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any], strict: bool = False) -> TaskFilter:
        """The filter in `args` (query parameters, or a JSON object's fields as strings). Paging
        parameters (sort, limit, offset) and, unless `strict`, unknown names are ignored; a
        strict filter (a bulk action's) refuses unknown names, so a misspelt field never widens
        it. Raises ApiError 422 naming the field for a bad value."""
        if strict:
            unknown = sorted(set(args) - set(FIELDS) - set(PAGING))
            if unknown:
                raise ApiError(422, "unknown filter fields", [{"field": f, "message": "not a filter"} for f in unknown])
        found = {name: _text(args, name) for name in TEXT_FIELDS}
        since, until = _time(args, "since"), _time(args, "until")
        if since is not None and until is not None and since > until:
            raise _invalid("until", "must not be before since")
        return cls(states=_states(args), since=since, until=until, **found)

    @property
    def empty(self) -> bool:
        return not self.as_dict()

    @property
    def custom_states(self) -> frozenset[str]:
        """The state names asked for that are not Celery's or the dashboard's (KNOWN_STATES)."""
        return self.states - KNOWN_STATES

    @property
    def states_only(self) -> bool:
        """Whether the filter asks for states and nothing else."""
        return bool(self.states) and set(self.as_dict()) == {"state"}

    def as_dict(self) -> dict[str, str]:
        """The fields set, as strings `from_args` reads back (for URLs and the audit log)."""
        out: dict[str, str] = {}
        if self.states:
            out["state"] = ",".join(sorted(self.states))
        for name in TEXT_FIELDS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = records.iso(value) or ""
        return out

    def needles(self) -> list[bytes]:
        """Lower-case bytes a task object's JSON text must hold to match (a quick test before
        decoding it): the name, queue, worker and q texts that JSON writes as they are (ASCII,
        no quote, backslash or control character)."""
        found = []
        for value in (self.name, self.queue, self.worker, self.q):
            if value is not None and value.isascii() and value.isprintable() and not set(value) & {'"', "\\"}:
                found.append(value.lower().encode())
        return found

    def matches(self, record: dict[str, Any], times: bool = True) -> bool:
        """Whether the task object `record` passes (`times=False`: since and until were already
        applied, as the store does through the index's creation scores)."""
        if self.states and record.get("state") not in self.states:
            return False
        if self.name is not None and self.name.lower() not in (record.get("name") or "").lower():
            return False
        if self.owner is not None and record.get("owner") != self.owner:
            return False
        if self.queue is not None and record.get("queue") != self.queue:
            return False
        if self.worker is not None and self.worker.lower() not in (record.get("worker") or "").lower():
            return False
        if times and (self.since is not None or self.until is not None):
            created = records.epoch(record.get("created"))
            if (self.since is not None and created < self.since) or (self.until is not None and created > self.until):
                return False
        if self.q is not None:
            text = self.q.lower()
            if not str(record.get("id") or "").lower().startswith(text) and \
                    text not in (record.get("args") or "").lower() and text not in (record.get("kwargs") or "").lower():
                return False
        return True


def _integer(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = low - 1
    if isinstance(raw, bool) or not low <= value <= high:
        raise _invalid(name, f"must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class Page:
    """Which page of the matching tasks: `limit` tasks after `offset`, newest or oldest first."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str = "newest"

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Page:
        """Raises ApiError 422 naming the field for a bad value."""
        sort = args.get("sort") or "newest"
        if sort not in SORTS:
            raise _invalid("sort", "must be newest or oldest")
        return cls(_integer(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                   _integer(args, "offset", 0, 0, MAX_OFFSET), sort)
