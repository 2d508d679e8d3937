"""web.queues and web.control without a network: message envelopes captured from real publishes, an in-memory
Redis for the queue scan, and canned control replies for the Control."""
from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
from celery import Celery
from kombu import Exchange, Queue
from kombu.common import Broadcast

from web import control as remote
from web import queues

# Captured from kombu 5.7 / Celery 5.7 publishes to a real redis-server (LRANGE of the lists).
# Protocol 2, JSON: `usr.add.apply_async((1, 2))`.
PLAIN = ('{"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIj'
         'ogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", '
         '"task": "usr.add", "id": "c0ffee00-0000-4000-8000-000000000001", "shadow": null, "eta": null, "expires": '
         'null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": '
         '"c0ffee00-0000-4000-8000-000000000001", "parent_id": null, "argsrepr": "(1, 2)", "kwargsrepr": "{}", '
         '"origin": "gen9009@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, '
         '"stamps": {}}, "properties": {"correlation_id": "c0ffee00-0000-4000-8000-000000000001", "reply_to": '
         '"fecc21e2-3840-3e20-9942-e59c8ac16c6e", "delivery_mode": 2, "delivery_info": {"exchange": "", '
         '"routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": '
         '"5b5b3c2e-75f9-4a3a-865b-77efc349efee"}}')
# Protocol 2, JSON, priority 7 (so in list "celery\x06\x166"), countdown, parent, third attempt.
CHILD = ('{"body": "W1szLCA0XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIj'
         'ogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", '
         '"task": "usr.add", "id": "c0ffee00-0000-4000-8000-000000000002", "shadow": null, "eta": '
         '"2026-11-29T20:12:55.057108+00:00", "expires": null, "group": null, "group_index": null, "retries": 2, '
         '"timelimit": [null, null], "root_id": "c0ffee00-0000-4000-8000-000000000002", "parent_id": '
         '"c0ffee00-0000-4000-8000-0000000000aa", "argsrepr": "(3, 4)", "kwargsrepr": "{}", "origin": "gen9009@vm", '
         '"ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": '
         '{"correlation_id": "c0ffee00-0000-4000-8000-000000000002", "reply_to": '
         '"fecc21e2-3840-3e20-9942-e59c8ac16c6e", "delivery_mode": 2, "delivery_info": {"exchange": "", '
         '"routing_key": "celery"}, "priority": 7, "body_encoding": "base64", "delivery_tag": '
         '"2924e119-e03d-4b89-94ca-cbf08cc78e03"}}')
# Protocol 2 from an app with task_serializer="pickle": the body is a pickle, the headers are JSON.
PICKLED = ('{"body": "gASVPwAAAAAAAACMBm9iamVjdJSFlH2UfZQojAljYWxsYmFja3OUTowIZXJyYmFja3OUTowFY2hhaW6UTowFY2hvcmSUTnWHl'
           'C4=", "content-encoding": "binary", "content-type": "application/x-python-serialize", "headers": {"lang": '
           '"py", "task": "pick.job", "id": "c0ffee00-0000-4000-8000-000000000003", "shadow": null, "eta": null, '
           '"expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": '
           '"c0ffee00-0000-4000-8000-000000000003", "parent_id": null, "argsrepr": "(\'object\',)", "kwargsrepr": '
           '"{}", "origin": "gen9009@vm", "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, '
           '"stamps": {}}, "properties": {"correlation_id": "c0ffee00-0000-4000-8000-000000000003", "reply_to": '
           '"97077f96-b215-3c77-94da-248fdfb7996c", "delivery_mode": 2, "delivery_info": {"exchange": "", '
           '"routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": '
           '"6b9d4e20-fae2-4dcc-80f0-25075dac093c"}}')
# Protocol 1 (task_protocol=1): empty headers, the task in a base64 JSON body.
V1 = ('{"body": "eyJ0YXNrIjogInYxLmpvYiIsICJpZCI6ICJjMGZmZWUwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDQiLCAiYXJncyI6IFtdLC'
      'Aia3dhcmdzIjogeyJhIjogMX0sICJncm91cCI6IG51bGwsICJncm91cF9pbmRleCI6IG51bGwsICJyZXRyaWVzIjogMCwgImV0YSI6IG51bG'
      'wsICJleHBpcmVzIjogbnVsbCwgInV0YyI6IHRydWUsICJjYWxsYmFja3MiOiBudWxsLCAiZXJyYmFja3MiOiBudWxsLCAidGltZWxpbWl0Ij'
      'ogW251bGwsIG51bGxdLCAidGFza3NldCI6IG51bGwsICJjaG9yZCI6IG51bGx9", "content-encoding": "utf-8", '
      '"content-type": "application/json", "headers": {}, "properties": {"correlation_id": '
      '"c0ffee00-0000-4000-8000-000000000004", "reply_to": "184ae27a-8c85-38d6-b2e8-fb4f431d2ae1", "delivery_mode": 2, '
      '"delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", '
      '"delivery_tag": "2643d7eb-b8c3-44c2-95c1-7da2e2f20dab"}}')
ID = "c0ffee00-0000-4000-8000-00000000000{}"


def with_headers(raw: str, **headers: Any) -> str:
    envelope = json.loads(raw)
    envelope["headers"].update(headers)
    return json.dumps(envelope)


# ---- decoding one message -------------------------------------------------------------------

def test_a_protocol_2_message_is_a_pending_task() -> None:
    assert queues.decode_message(PLAIN.encode(), "celery") == {
        "id": ID.format(1), "name": "usr.add", "state": "PENDING", "parent": None, "retries": 0,
        "created": None, "queue": "celery"}


def test_parent_and_retries_come_from_the_headers() -> None:
    task = queues.decode_message(CHILD, "celery")
    assert task is not None
    assert task["parent"] == "c0ffee00-0000-4000-8000-0000000000aa"
    assert task["retries"] == 2
    assert task["created"] is None  # the eta is when it may run, not when it was sent


def test_a_pickled_body_is_never_decoded_but_its_json_headers_name_the_task() -> None:
    task = queues.decode_message(PICKLED, "celery")
    assert task is not None and (task["id"], task["name"]) == (ID.format(3), "pick.job")


def test_a_protocol_1_message_is_read_from_its_body() -> None:
    task = queues.decode_message(V1, "celery")
    assert task is not None and (task["id"], task["name"], task["retries"]) == (ID.format(4), "v1.job", 0)


@pytest.mark.parametrize("raw", [
    b"\x80\x04\x95garbage",                         # a pickle, not kombu's envelope
    b"not json at all",
    b"[1, 2, 3]",
    b'"a string"',
    b"{}",
    b'{"headers": {"task": "x"}}',                  # no id
    b'{"headers": {"id": 7, "task": "x"}}',         # an id that is not a string
    json.dumps({"headers": {"id": "x" * 300, "task": "x"}}).encode(),
    b'{"headers": {}, "content-type": "application/json", "body": "%%%", "properties": {"body_encoding": "base64"}}',
    b'{"headers": {}, "content-type": "application/json", "body": "[1]"}',
    b'{"headers": "nope", "body": null}',
    b"\xff\xfe\x00",
])
def test_what_is_not_a_task_message_is_none_never_an_error(raw: bytes) -> None:
    assert queues.decode_message(raw, "celery") is None


def test_odd_header_values_fall_back_to_defaults() -> None:
    raw = with_headers(PLAIN, parent_id=ID.format(1), retries="3")
    task = queues.decode_message(raw, "q")
    assert task is not None and task["parent"] is None and task["retries"] == 0 and task["queue"] == "q"


@pytest.mark.parametrize(("value", "expected"), [
    (0, "1970-01-01T00:00:00.000000+00:00"),
    ("2026-01-02T03:04:05+01:00", "2026-01-02T02:04:05.000000+00:00"),
    ("2026-01-02T03:04:05", "2026-01-02T03:04:05.000000+00:00"),
    ("yesterday", None),
    (True, None),
    (1e20, None),
])
def test_a_created_header_becomes_iso_utc(value: Any, expected: str | None) -> None:
    task = queues.decode_message(with_headers(PLAIN, created=value), "celery")
    assert task is not None and task["created"] == expected


# ---- the queue scan ---------------------------------------------------------------------------

def test_priority_lists_are_named_as_kombu_names_them() -> None:
    from kombu.transport.redis import Channel

    assert queues.priority_keys("celery") == ["celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]
    channel = Channel.__new__(Channel)  # kombu's own naming, without a connection
    channel.priority_steps, channel.sep = list(queues.STEPS), queues.SEP
    assert queues.priority_keys("celery") == [channel._q_for_pri("celery", step) for step in queues.STEPS]
    assert queues.priority_keys("q", sep=":", steps=[0, 5], prefix="app:") == ["app:q", "app:q:5"]


@pytest.mark.parametrize(("lengths", "limit", "expected"), [
    ([3, 0, 2], 10, [3, 0, 2]),
    ([100, 100], 10, [5, 5]),
    ([1, 100, 100], 10, [1, 5, 4]),
    ([100, 2, 0, 100], 9, [4, 2, 0, 3]),
    ([5, 5], 0, [0, 0]),
    ([], 5, []),
])
def test_the_limit_is_shared_between_the_lists(lengths: list[int], limit: int, expected: list[int]) -> None:
    counts = queues._share(lengths, limit)
    assert counts == expected
    assert sum(counts) == min(limit, sum(lengths))


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_queued_reads_every_list_newest_first_and_skips_what_is_not_a_task(client: fakeredis.FakeRedis) -> None:
    client.lpush("celery", PLAIN, b"\x80\x04garbage", PICKLED)   # LPUSH order: PICKLED is the newest
    client.lpush("celery\x06\x166", CHILD)
    client.lpush("other", V1)
    found = queues.queued(client, ["celery", "other"])
    assert [(t["id"], t["queue"]) for t in found] == [
        (ID.format(3), "celery"), (ID.format(1), "celery"), (ID.format(2), "celery"), (ID.format(4), "other")]
    assert (found.waiting, found.read, found.skipped) == (5, 5, 1)


def test_queued_is_bounded_in_total_and_says_what_it_cut(client: fakeredis.FakeRedis) -> None:
    client.lpush("celery", *[with_headers(PLAIN, id=f"a{i}") for i in range(50)])
    client.lpush("celery\x06\x163", *[with_headers(PLAIN, id=f"b{i}") for i in range(50)])
    found = queues.queued(client, ["celery"], limit=10)
    assert len(found) == 10 and found.read == 10 and found.waiting == 100
    assert [t["id"] for t in found] == [f"a{i}" for i in range(49, 44, -1)] + [f"b{i}" for i in range(49, 44, -1)]
    assert queues.queued(client, ["celery"], limit=0) == []


def test_a_task_id_seen_twice_appears_once_with_its_latest_attempt(client: fakeredis.FakeRedis) -> None:
    client.lpush("celery", with_headers(PLAIN, retries=1), PLAIN)
    client.lpush("celery\x06\x163", with_headers(PLAIN, retries=3))
    found = queues.queued(client, ["celery", "celery"])
    assert [(t["id"], t["retries"]) for t in found] == [(ID.format(1), 3)]


def test_no_queues_no_round_trip() -> None:
    class Refuses:
        def pipeline(self, **_: Any) -> None:
            raise AssertionError("no Redis call expected")

    assert queues.queued(Refuses(), []) == []  # type: ignore[arg-type]


def test_queue_names_come_from_each_apps_configuration() -> None:
    plain = Celery("plain", set_as_current=False)
    custom = Celery("custom", set_as_current=False)
    custom.conf.task_default_queue = "default"
    custom.conf.task_queues = [Queue("default"), Queue("video", Exchange("media"), routing_key="video"),
                               Broadcast("everyone"), Queue("celery")]
    assert queues.queue_names([plain, custom]) == ["celery", "default", "video"]
    assert queues.queue_names([]) == []


def test_queue_names_are_bounded() -> None:
    app = Celery("many", set_as_current=False)
    app.conf.task_queues = [Queue(f"q{i}") for i in range(queues.MAX_QUEUES + 20)]
    assert len(queues.queue_names([app])) == queues.MAX_QUEUES


# ---- the control client, with canned replies ------------------------------------------------

# The shapes Celery's workers answer with (celery.worker.control: ping, active, reserved,
# scheduled, stats), one {hostname: answer} dict per worker.
REQUEST = {"id": "t1", "name": "usr.sleep", "args": [5], "kwargs": {}, "hostname": "w1@h", "time_start": 1.0,
           "acknowledged": True, "delivery_info": {"routing_key": "celery"}, "worker_pid": 42}


class Canned:
    """Stands in for celery.app.remote.Control.broadcast: answers by command, records calls."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, command: str, **kwargs: Any) -> Any:
        self.calls.append((command, kwargs))
        answer = self.answers[command]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def control() -> remote.Control:
    return remote.Control(Celery("usr", broker="redis://127.0.0.1:1/0", set_as_current=False))


def test_ping_returns_who_answered_among_those_asked(control: remote.Control) -> None:
    control._control.broadcast = canned = Canned({"ping": [{"w1@h": {"ok": "pong"}}, {"stranger@h": {"ok": "pong"}}]})
    assert control.ping(["w1@h", "w2@h", "w1@h"], timeout=0.5) == {"w1@h"}
    command, kwargs = canned.calls[0]
    assert (command, kwargs["destination"], kwargs["limit"], kwargs["timeout"]) == ("ping", ["w1@h", "w2@h"], 2, 0.5)
    assert control.last_error is None


def test_ping_of_nobody_sends_nothing(control: remote.Control) -> None:
    control._control.broadcast = canned = Canned({})
    assert control.ping([]) == set()
    assert canned.calls == []


def test_active_merges_running_reserved_and_scheduled(control: remote.Control) -> None:
    control._control.broadcast = canned = Canned({
        "active": [{"w1@h": [REQUEST]}, {"w2@h": []}],
        "reserved": [{"w1@h": [dict(REQUEST, id="t2")]}],
        "scheduled": [{"w2@h": [{"eta": "2026-01-01T00:00:00", "priority": 6, "request": dict(REQUEST, id="t3")}]}],
    })
    assert control.active(timeout=0.3) == {"w1@h": {"t1", "t2"}, "w2@h": {"t3"}}
    # the later questions go only to the workers that answered, and end when they all have
    assert [(c, k["destination"], k["limit"]) for c, k in canned.calls[1:]] == [
        ("reserved", ["w1@h", "w2@h"], 2), ("scheduled", ["w1@h", "w2@h"], 2)]


def test_active_with_no_worker_is_empty_and_asks_once(control: remote.Control) -> None:
    control._control.broadcast = canned = Canned({"active": None})
    assert control.active() == {}
    assert len(canned.calls) == 1


def test_pools_by_short_name(control: remote.Control) -> None:
    stats = {"pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 4}}
    control._control.broadcast = Canned({"stats": [
        {"w1@h": stats},
        {"w2@h": {"pool": {"implementation": "celery.concurrency.solo:TaskPool"}}},
        {"w3@h": {"pool": {"implementation": "mypools.fancy:Pool"}}},
        {"w4@h": {"pool": "?"}},
        {"w5@h": {"pool": {"implementation": "celery.concurrency.thread:TaskPool"}}},
    ]})
    assert control.pools() == {"w1@h": "prefork", "w2@h": "solo", "w3@h": "mypools.fancy:Pool", "w5@h": "threads"}


def test_a_failure_is_an_unknown_answer_and_said(control: remote.Control, caplog: pytest.LogCaptureFixture) -> None:
    failing = ConnectionError("broker gone")
    control._control.broadcast = Canned({c: failing for c in ("ping", "active", "stats", "enable_events")})
    assert control.ping(["w1@h"]) == set()
    assert control.last_error and "broker gone" in control.last_error
    assert control.active() is None
    assert control.pools() == {}
    assert control.enable_events() is None
    assert "control enable_events failed" in caplog.text


def test_active_is_unknown_when_a_later_question_fails(control: remote.Control) -> None:
    control._control.broadcast = Canned({"active": [{"w1@h": [REQUEST]}], "reserved": OSError("cut")})
    assert control.active() is None


def test_timeouts_are_capped(control: remote.Control) -> None:
    control._control.broadcast = canned = Canned({"stats": []})
    control.pools(timeout=3600)
    assert canned.calls[0][1]["timeout"] == remote.MAX_TIMEOUT


def test_one_reply_queue_whatever_thread_asks(control: remote.Control) -> None:
    import threading

    oids: list[str] = []
    thread = threading.Thread(target=lambda: oids.append(control._control.mailbox(None).oid))
    thread.start()
    thread.join()
    assert oids == [control._control.mailbox.oid] and oids[0]
    assert remote.Control(control.app)._control.mailbox.oid != oids[0]


def test_messages_taken_but_not_acknowledged_are_still_to_run() -> None:
    import json as _json

    import fakeredis

    from web.queues import UNACKED_KEY, unacked

    client = fakeredis.FakeRedis()
    envelope = {"body": "", "content-type": "application/json", "content-encoding": "utf-8",
                "headers": {"id": "t1", "task": "mytasks.add", "retries": 0}, "properties": {}}
    client.hset(UNACKED_KEY, "tag1", _json.dumps([envelope, "", "celery"]))
    client.hset(UNACKED_KEY, "tag2", "not json")
    assert [(t["id"], t["name"], t["queue"]) for t in unacked(client)] == [("t1", "mytasks.add", "celery")]


def test_the_broker_s_tasks_are_not_said_whole_when_the_unacked_read_was_cut_short() -> None:
    """Review finding: with more unacknowledged messages than the read takes (QUEUE_SCAN_LIMIT),
    the ones not read were judged UNKNOWN (an ending) though their messages wait in the broker.
    `taken_whole` now says whether the read took them all (web.reconciler gives no verdict on a
    received task while it did not)."""
    import json as _json

    import fakeredis

    from web.queues import UNACKED_KEY, Queues

    client = fakeredis.FakeRedis()
    queues = Queues("redis://unused", ["celery"], limit=3)
    queues._client = client
    for n in range(5):
        envelope = {"body": "", "content-type": "application/json", "content-encoding": "utf-8",
                    "headers": {"id": f"t{n}", "task": "mytasks.add", "retries": 0}, "properties": {}}
        client.hset(UNACKED_KEY, f"tag{n}", _json.dumps([envelope, "", "celery"]))
    tasks, complete = queues()
    assert all(t["taken"] for t in tasks) and queues.taken_whole is False
    assert complete is True  # (the waiting lists were: they are empty)
    client.hdel(UNACKED_KEY, "tag0", "tag1")
    tasks, _ = queues()  # exactly `limit` of them: all read
    assert len(tasks) == 3 and queues.taken_whole is True


def test_event_receivers_and_remote_control_queues_are_not_task_queues() -> None:
    """Flower's (or any event receiver's) `celeryev.<uuid>` queue and pidbox reply queues are
    bound on the broker too, but hold no tasks: they are never listed (nor flagged unconsumed)."""
    sep = "\x06\x16"
    client = fakeredis.FakeRedis()
    client.sadd("_kombu.binding.celeryev", f"#{sep}{sep}celeryev.4f1c2d9e")
    client.sadd("_kombu.binding.reply.celery.pidbox", f"abc{sep}{sep}abc.reply.celery.pidbox")
    client.sadd("_kombu.binding.celery.pidbox", f"{sep}{sep}worker@host.celery.pidbox")
    client.sadd("_kombu.binding.reports", f"reports{sep}{sep}reports")
    found = queues.Queues("redis://unused", ["celery"])
    found._client = client
    assert found.names() == ["celery", "reports"]


def test_a_send_that_succeeds_never_hides_a_failed_question(control: remote.Control) -> None:
    """Questions and sends run on connections of their own, at the same time: a revoke that
    reached the broker must not make the reconciler read a failed ping as "nobody answered"."""
    control._control.broadcast = Canned({"ping": ConnectionError("broker gone"), "revoke": [], "enable_events": []})
    assert control.ping(["w1@h"]) == set()
    assert control.revoke("t1") is True
    control.enable_events()
    assert control.last_error and "broker gone" in control.last_error
    assert control.send_error is None
