"""A result as the result endpoint serves it (web.results.safe_masked, full_body), the one-at-a-time
turn for heavy work (web.offload) and the 503 a busy connection pool gives."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_dashboard import arguments
from web import offload
from web.errors import ApiError
from web.results import full_body, json_safe, preview_masked, safe_masked


class Odd:
    def __str__(self) -> str:
        return "Odd(token=abc123)"


def nested(levels: int) -> Any:
    value: Any = {"password": "deep", "note": "password=deep"}
    for _ in range(levels):
        value = [value]
    return value


VALUES = [
    [{"id": i, "name": f"row {i}", "api_key": "k", "score": i / 3, "tags": ("a", "b")} for i in range(50)],
    {"nan": float("nan"), "inf": float("-inf"), "big": 2**60, "small": -(2**60), "exact": 2**53, "ok": True},
    {1: "one", None: "none", (1, 2): "pair", "Secret-Key": "hidden", "log": "login with password: hunter2"},
    {"when": datetime(2024, 5, 17, 12, 30, tzinfo=UTC), "amount": Decimal("12.50"), "id": uuid.UUID(int=7)},
    nested(30),
    nested(60),
    "token=abc the whole result as text",
    None,
    3.5,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_one_walk_gives_what_masking_then_making_safe_gave(value: Any) -> None:
    assert json.dumps(safe_masked(value)) == json.dumps(json_safe(arguments.mask_keys(value)))


@pytest.mark.parametrize("value", [b"password=hunter2", Odd(), {"secret: s3"}, frozenset({"token=t0k"}),
                                   bytearray(b"api_key: k-1")])
def test_texts_made_from_objects_bytes_and_sets_are_masked_too(value: Any) -> None:
    text = json.dumps(safe_masked({"value": value}))
    assert not any(secret in text for secret in ("hunter2", "abc123", "s3", "t0k", "k-1")), text
    assert arguments.MASK in text


def test_the_body_is_strict_json_with_the_entrys_state_and_size() -> None:
    meta = {"status": "SUCCESS", "result": {"nan": float("nan"), "password": "p", "n": [1, 2]}}
    body = json.loads(full_body("job-1", meta, "STARTED", 123))
    assert body == {"id": "job-1", "state": "SUCCESS", "size": 123,
                    "result": {"nan": "nan", "password": arguments.MASK, "n": [1, 2]}}
    assert json.loads(full_body("job-2", {"result": None}, "SUCCESS", 9))["state"] == "SUCCESS"


def test_heavy_work_takes_turns_and_a_request_kept_waiting_gets_503_with_retry_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "WAIT_S", 0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with offload.turn():
            holding.set()
            release.wait(5)

    first = threading.Thread(target=hold)
    first.start()
    holding.wait(5)
    with pytest.raises(ApiError) as refused:
        with offload.turn():
            pass
    assert refused.value.status == 503 and refused.value.retry_after and "busy" in refused.value.message
    release.set()
    first.join()
    with offload.turn():  # the turn is free again
        assert offload.run("threading", sum, [1, 2, 3]) == 6


def test_a_connection_pool_kept_busy_is_said_as_such_not_as_redis_down(app: Any) -> None:
    def busy() -> Any:
        raise redis.ConnectionError("No connection available.")  # redis-py's BlockingConnectionPool timeout

    def down() -> Any:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    app.add_url_rule("/busy", view_func=busy)
    app.add_url_rule("/down", view_func=down)
    client = app.test_client()
    response = client.get("/busy")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "Redis is slow to answer or the web is busy" in response.get_json()["error"]
    assert "REDIS_CONNECTIONS" in response.get_json()["error"]
    assert client.get("/down").get_json()["error"] == "Redis is unavailable; try again shortly"


def whole_preview(value: Any, limit: int) -> tuple[Any, bool]:
    """What the preview was before it stopped at its limit: the whole value made safe and masked,
    then written whole, then cut."""
    safe = safe_masked(value)
    text = json.dumps(safe, ensure_ascii=False)
    return (safe, False) if len(text) <= limit else (text[:limit], True)


KEYS = st.sampled_from(["id", "name", "password", "Api-Key", "note", "tökén", "x" * 50])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["password=hunter2", "token: abc, rest", "é\n\"q\""]),
                    st.binary(max_size=10), st.decimals(allow_nan=False, allow_infinity=False))
VALUES_TREE = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=12), st.tuples(inner, inner), st.frozensets(st.text(max_size=8), max_size=4),
    st.dictionaries(st.one_of(KEYS, st.integers(0, 9)), inner, max_size=8)), max_leaves=120)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=VALUES_TREE, limit=st.sampled_from([1, 16, 64, 300, 4096]))
def test_the_bounded_preview_is_the_whole_preview(value: Any, limit: int) -> None:
    assert preview_masked(value, limit) == whole_preview(value, limit)


@pytest.mark.parametrize("value", [
    [{"id": i, "name": f"row {i}", "token": f"t-{i}"} for i in range(12_000)],
    "password=" + "s" * 20_000 + " end",
    {"log": "x" * 9_000, "secret": "s"},
    nested(40),
    [[i] * 50 for i in range(400)],
], ids=["rows", "long-secret", "long-text", "deep", "lists"])
def test_large_previews_are_the_whole_preview(value: Any) -> None:
    assert preview_masked(value) == whole_preview(value, 4096)


class CountingBackend:
    """Celery's Redis backend as BackendReader uses it, on fakeredis, counting its decodes."""

    def __init__(self) -> None:
        import fakeredis

        self.client = fakeredis.FakeRedis()
        self.decoded = 0

    def get_key_for_task(self, task_id: str) -> bytes:
        return f"celery-task-meta-{task_id}".encode()

    def decode(self, raw: bytes) -> Any:
        self.decoded += 1
        return json.loads(raw)


def test_an_entry_read_again_unchanged_is_left_out_without_being_decoded() -> None:
    from web.results import BackendReader

    backend = CountingBackend()
    reader = BackendReader(backend, max_bytes=1000)
    backend.client.set(b"celery-task-meta-a", json.dumps({"status": "PROGRESS", "result": {"current": 1}}))
    backend.client.set(b"celery-task-meta-big", json.dumps({"status": "SUCCESS", "result": "x" * 2000}))
    first = reader.changed(["a", "big", "none"], {})
    assert set(first) == {"a", "big"} and first["a"][1]["result"] == {"current": 1} and backend.decoded == 1
    assert first["big"][0] is None and first["big"][1]["too_large"] > 1000  # summarised, never decoded
    seen = {"a": first["a"][0]}
    assert "a" not in reader.changed(["a"], seen) and backend.decoded == 1
    backend.client.set(b"celery-task-meta-a", json.dumps({"status": "PROGRESS", "result": {"current": 2}}))
    again = reader.changed(["a"], seen)
    assert again["a"][1]["result"] == {"current": 2} and again["a"][0] != seen["a"] and backend.decoded == 2
    assert reader(["a"]) == {"a": again["a"][1]}  # read as before, whatever was seen
