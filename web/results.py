"""Reading task results from a Celery Redis result backend safely: bounded, any type, any serializer.

A result backend entry may hold anything a task returned: kombu's JSON carries `datetime`,
`Decimal`, `UUID` and bytes as types, another app on the same Redis may store pickle, and a task
may return 50 MB. The dashboard shows a bounded, JSON-safe *preview* in task objects and serves
the full value from its own endpoint, up to a cap. Nothing here raises for one bad entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import orjson

from celery_dashboard import arguments, settings
from web.tracebacks import cut_message

log = logging.getLogger(__name__)

STATUS = re.compile(rb'"status": *"([A-Za-z0-9_.-]{1,64})"')
DATE_DONE = re.compile(rb'"date_done": *"([0-9T:.+-]{10,40})"')
TAIL_BYTES = 1024  # read from the end of an entry too large to read: Celery writes date_done near its end
PREVIEW_BYTES = 4096  # the size of a result or error preview in a task object (JSON text)
MAX_EXACT = 2**53  # the largest integer a JavaScript number holds exactly
JSON_DEPTH = 20  # levels of nesting made safe; a deeper container becomes its repr text


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON types: datetimes, Decimals, UUIDs, bytes, sets and any other object
    become their text (what Celery's and Flower's result views show); nesting beyond 20 levels
    becomes text too."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):  # beyond 2**53 a browser's JSON.parse rounds it: send the digits
        return value if -MAX_EXACT <= value <= MAX_EXACT else str(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if depth > JSON_DEPTH:
        return repr(value)[:PREVIEW_BYTES]
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [json_safe(v, depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def safe_masked(value: Any, depth: int = 0) -> Any:
    """`json_safe(arguments.mask_keys(value))` in one walk: a result as a browser may see it, with
    sensitive keys' values masked and every string masked as text, plain JSON types only. Exact
    types are tried first and a key's verdict is kept for the walk: an 8 MB result of 120,000 small
    rows took 2.1 s in the two walks (1.4 s masking, 0.6 s making safe) on this machine. Every text
    is masked, also the text an object, bytes or a set's strings become (each walk alone left one
    of these unmasked). `depth`: the level `value` sits at in a larger value."""
    words = settings.MASKED_ARGUMENTS
    mentions = arguments.mentions(words).search
    mask, mask_text, sensitive = arguments.MASK, arguments.mask_text, arguments.sensitive
    verdicts: dict[Any, bool] = {}

    def walk(value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return value if mentions(value) is None else mask_text(value)
        if kind is int:
            return value if -MAX_EXACT <= value <= MAX_EXACT else str(value)
        if kind is float:
            return value if value - value == 0 else str(value)  # NaN and infinities become text
        if value is None or kind is bool:
            return value
        if kind is dict or isinstance(value, Mapping):
            if depth > JSON_DEPTH:
                return repr(arguments.mask_keys(value, depth))[:PREVIEW_BYTES]
            out = {}
            for key, item in value.items():
                masked = verdicts.get(key) if type(key) is str else None
                if masked is None:
                    masked = sensitive(key, words)
                    if type(key) is str and len(verdicts) < MAX_VERDICTS:
                        verdicts[key] = masked
                out[str(key)] = mask if masked else walk(item, depth + 1)
            return out
        if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
            if depth > JSON_DEPTH:
                return repr(arguments.mask_keys(value, depth))[:PREVIEW_BYTES]
            if isinstance(value, (set, frozenset)):
                value = sorted(value, key=repr)
            return [walk(item, depth + 1) for item in value]
        safe = json_safe(value, depth)  # an object's text (its str or isoformat), bytes as text: masked as text
        return mask_text(safe) if isinstance(safe, str) else safe

    return walk(value, depth)


MAX_VERDICTS = 10_000  # distinct keys whose verdict safe_masked keeps during one walk


def full_body(task_id: str, meta: dict[str, Any], state: str | None, size: int) -> bytes:
    """The result endpoint's JSON body: {"id", "state" (the entry's status, else `state`), "size"
    (the entry's bytes in Redis), "result" (`safe_masked`)}, UTF-8. CPU-bound (about 1 s for 8 MB
    of small rows): web.offload runs it off the server's event loop."""
    body = {"id": task_id, "state": meta.get("status") or state, "size": size,
            "result": safe_masked(meta.get("result"))}
    try:
        return orjson.dumps(body)  # 0.02 s where the json module took 0.22 s on the rows above
    except (TypeError, orjson.JSONEncodeError):  # a str subclass orjson refuses: the json module's text
        return json.dumps(body, allow_nan=False).encode()


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of `value` (no NaN or Infinity, which browsers cannot parse); a value JSON
    cannot carry is replaced by `json_safe`'s text of it."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except (TypeError, ValueError):
        return json.dumps(json_safe(value), allow_nan=False, **kwargs)


class _Full(Exception):
    """The preview's text reached its limit (`preview_masked`)."""


def preview_masked(value: Any, limit: int = PREVIEW_BYTES) -> tuple[Any, bool]:
    """A bounded, masked, JSON-safe preview of `value` and whether it was cut: `safe_masked(value)`
    when its JSON text (json.dumps, ensure_ascii=False) fits in `limit` characters, else the first
    `limit` characters of that text (a string). The text is written only until it passes `limit`:
    a result of 12,000 small rows (0.8 MB) cost the web 0.1-0.3 s in whole walks, on the event
    loop, for its 4 kB preview, and twenty such tasks ending together stopped everyone's live
    updates for 6.8 s. Same answer, same masking
    (tests/unit/test_results.py checks it against the whole walks)."""
    parts: list[str] = []
    size = 0
    sensitive, words, mask = arguments.sensitive, settings.MASKED_ARGUMENTS, json.dumps(arguments.MASK)

    def put(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def write(item: Any, depth: int) -> None:
        if depth <= JSON_DEPTH and (type(item) is dict or isinstance(item, Mapping)):
            put("{")
            for number, (key, inner) in enumerate(item.items()):
                put((", " if number else "") + json.dumps(str(key), ensure_ascii=False) + ": ")
                if sensitive(key, words):
                    put(mask)
                else:
                    write(inner, depth + 1)
            put("}")
        elif depth <= JSON_DEPTH and isinstance(item, (list, tuple, set, frozenset)):
            put("[")
            for number, inner in enumerate(sorted(item, key=repr) if isinstance(item, (set, frozenset)) else item):
                if number:
                    put(", ")
                write(inner, depth + 1)
            put("]")
        elif isinstance(item, str) and len(item) > 2 * limit:  # masked as far as the preview can show
            text = json.dumps(safe_masked(item[:2 * limit], depth), ensure_ascii=False)
            put(text if len(text) > limit else json.dumps(safe_masked(item, depth), ensure_ascii=False))
        else:
            put(json.dumps(safe_masked(item, depth), ensure_ascii=False))

    try:
        write(value, 0)
    except _Full:
        return "".join(parts)[:limit], True
    return safe_masked(value), False


class BackendReader:
    """Reads result-backend entries of many tasks in a few round trips (Celery's Redis backend:
    key `celery-task-meta-<id>`, `backend.get_key_for_task`), decoded with the backend's own
    serializer settings. An entry larger than `max_bytes` is not read: it comes back as
    `{"too_large": size in bytes, "status": the state read from its first bytes}`. An entry that
    cannot be decoded (pickle where only JSON is accepted, corrupt bytes) comes back as
    `{"undecodable": reason}`."""

    def __init__(self, backend: Any, max_bytes: int = 1_000_000) -> None:
        self.backend = backend
        self.max_bytes = max_bytes

    def __call__(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """task id -> decoded meta (Celery's shape: status, result, traceback, date_done, ...),
        for the ids that have an entry. Raises redis errors (the caller retries)."""
        return {task_id: meta for task_id, (_, meta) in self.changed(task_ids, {}).items()}

    def changed(self, task_ids: list[str], seen: Mapping[str, bytes]) -> dict[str, tuple[bytes | None, dict[str, Any]]]:
        """As `__call__`, each entry with its mark: 8 bytes of BLAKE2b of the entry as stored (None
        for an entry too large to read, whose summary is given). An entry whose mark is
        `seen[task id]` is left out, not decoded: the reconciler reads each unsettled task's entry at
        every poll, and decoding twenty entries of 0.8 MB again and again (20 ms each) was most of
        the web's time while they ended. Raises redis errors (the caller retries)."""
        if not task_ids:
            return {}
        client = self.backend.client
        keys = [self.backend.get_key_for_task(task_id) for task_id in task_ids]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.strlen(key)
        sizes = pipe.execute()
        small = [(task_id, key) for task_id, key, size in zip(task_ids, keys, sizes, strict=True)
                 if size and size <= self.max_bytes]
        found: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
        for task_id, key, size in zip(task_ids, keys, sizes, strict=True):
            if size > self.max_bytes:  # Celery writes "status" then "result" first: the head says both
                head = client.getrange(key, 0, PREVIEW_BYTES) or b""
                match = STATUS.search(head)
                start = head.find(b'"result": ')
                summary = {"too_large": size, "status": match.group(1).decode() if match else None,
                           "head": head[start + 10:].decode(errors="replace") if start >= 0 else ""}
                done = DATE_DONE.search(client.getrange(key, -TAIL_BYTES, -1) or b"")
                if done:  # when it ended (web.reconciler.recover reads it)
                    summary["date_done"] = done.group(1).decode()
                found[task_id] = (None, summary)
        values = client.mget([key for _, key in small]) if small else []
        for (task_id, _), raw in zip(small, values, strict=True):
            if raw is not None:
                mark = hashlib.blake2b(raw, digest_size=8).digest()
                if seen.get(task_id) != mark:
                    found[task_id] = (mark, self.decode(raw))
        return found

    def scan(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN step over the backend's task entries (MATCH its key prefix, `count` a call):
        (the next cursor, 0 when done; the task ids of the keys read). Raises redis errors."""
        key = self.backend.get_key_for_task("x")  # Celery refuses an empty id: the prefix is all but its end
        prefix = (key if isinstance(key, bytes) else str(key).encode())[:-1]
        pattern = b"".join(b"\\" + bytes([c]) if c in b"\\*?[]" else bytes([c]) for c in prefix) + b"*"
        cursor, keys = self.backend.client.scan(cursor=cursor, match=pattern, count=count)
        ids = []
        for key in keys:
            key = key if isinstance(key, bytes) else str(key).encode()
            if key.startswith(prefix):
                ids.append(key[len(prefix):].decode(errors="replace"))
        return int(cursor), ids

    def decode(self, raw: bytes) -> dict[str, Any]:
        try:
            meta = self.backend.decode(raw)
        except Exception as exc:  # noqa: BLE001 - any serializer, any bytes: one entry never stops the rest
            return {"undecodable": cut_message(f"{type(exc).__name__}: {exc}", 300, mask=False)}
        return meta if isinstance(meta, dict) else {"undecodable": "not a result entry"}

    def size(self, task_id: str) -> int:
        """The bytes of the task's entry in Redis (STRLEN), 0 when it has none. Raises redis errors."""
        return int(self.backend.client.strlen(self.backend.get_key_for_task(task_id)) or 0)

    def raw(self, task_id: str) -> bytes | None:
        """The task's entry as stored (GET), None when it has none. Raises redis errors."""
        return self.backend.client.get(self.backend.get_key_for_task(task_id))
