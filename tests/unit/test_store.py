from __future__ import annotations

import fakeredis

from celery_dashboard import index
from web import records
from web.filters import TaskFilter
from web.store import TaskStore


def store(limit: int = 100) -> TaskStore:
    return TaskStore(fakeredis.FakeRedis(), limit)


def launched(i: int, state: str = "PENDING") -> dict:
    return {"id": f"t{i}", "state": state, "name": "n", "created": records.iso(1000.0 + i)}


def test_recent_is_newest_first_and_limited() -> None:
    s = store()
    s.merge({f"t{i}": launched(i) for i in range(5)})
    assert [r["id"] for r in s.recent(3)] == ["t4", "t3", "t2"]


def test_recent_filters_by_state_across_pages() -> None:
    s = store(1000)
    s.merge({f"t{i}": launched(i, "SUCCESS" if i % 50 == 0 else "PENDING") for i in range(300)})
    done = s.recent(10, state="SUCCESS")
    assert [r["id"] for r in done] == ["t250", "t200", "t150", "t100", "t50", "t0"]


def test_merge_returns_the_tasks_as_stored_now() -> None:
    s = store()
    assert s.merge({"t1": launched(1)})[0]["state"] == "PENDING"
    changed = s.merge({"t1": {"id": "t1", "state": "STARTED"}})
    assert changed[0]["state"] == "STARTED" and changed[0]["created"] == records.iso(1001.0)
    # A late update cannot move it back; merge answers with what is stored.
    assert s.merge({"t1": launched(1)})[0]["state"] == "STARTED"


def test_a_slower_writer_never_overwrites_a_later_state() -> None:
    server = fakeredis.FakeServer()
    fast, slow = TaskStore(fakeredis.FakeRedis(server=server)), TaskStore(fakeredis.FakeRedis(server=server))
    fast.merge({"t1": launched(1)})
    seen_by_slow = slow.get("t1")  # the slow process read before the fast one wrote SUCCESS
    fast.merge({"t1": {"id": "t1", "state": "SUCCESS", "result": 42}})
    records.merge(seen_by_slow, {"id": "t1", "state": "PROGRESS", "progress": {"current": 9, "total": 10}})
    assert slow.save_many([seen_by_slow]) == ["t1"]
    assert slow.get("t1")["state"] == "SUCCESS" and slow.get("t1")["result"] == 42


def test_registration_at_publish_does_not_clobber_a_known_task() -> None:
    s = store()
    assert index.register(s.client, "t9", "tasks.demo.steps", parent="p1")
    assert s.get("t9")["state"] == "PENDING" and s.get("t9")["parent"] == "p1"
    assert s.active_ids() == ["t9"]
    s.merge({"t9": {"id": "t9", "state": "SUCCESS"}})
    assert not index.register(s.client, "t9", "tasks.demo.steps")
    assert s.get("t9")["state"] == "SUCCESS"


def test_active_set_tracks_unfinished_tasks() -> None:
    s = store()
    s.merge({"t1": launched(1), "t2": launched(2)})
    s.merge({"t1": {"id": "t1", "state": "SUCCESS"}})
    assert s.active_ids() == ["t2"]


def test_history_is_trimmed_to_the_limit_oldest_first() -> None:
    s = store(limit=10)
    s.merge({f"t{i}": launched(i) for i in range(30)})
    assert s.trim(now=1030.0) == 20
    assert [r["id"] for r in s.recent(100)] == [f"t{i}" for i in range(29, 19, -1)]
    assert s.get("t0") is None and s.count() == 10


def test_history_older_than_the_window_is_dropped() -> None:
    s = TaskStore(fakeredis.FakeRedis(), history_limit=100, history_seconds=10)
    s.merge({f"t{i}": launched(i) for i in range(30)})
    s.trim(now=1030.0)  # keeps what was created after 1020
    assert [r["id"] for r in s.recent(100)] == [f"t{i}" for i in range(29, 20, -1)]
    assert sorted(s.active_ids()) == sorted(f"t{i}" for i in range(21, 30))


def test_nothing_stored_is_json_a_browser_cannot_parse() -> None:
    import json

    store = TaskStore(fakeredis.FakeRedis())
    store.merge({"a": {"id": "a", "state": "SUCCESS", "result": float("nan"), "source": "backend"}})
    raw = store.client.hget("dashboard:tasks", "a")
    json.loads(raw, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def found(store: TaskStore, owner: str | None = None, limit: int = 50, offset: int = 0, sort: str = "newest",
          bound: int | None = None, **args: str) -> dict:
    return store.query(TaskFilter.from_args(args), limit, offset, owner, sort, bound)


def a_history(s: TaskStore) -> None:
    """12 tasks: t0..t11, created a second apart, of two owners, states and queues in turn."""
    s.merge({f"t{i}": {"id": f"t{i}", "name": "tasks.demo.steps" if i % 2 else "tasks.demo.fail",
                       "state": ("SUCCESS", "FAILURE", "STARTED")[i % 3], "owner": "alice" if i < 8 else "bob",
                       "queue": "celery" if i % 4 else "reports", "worker": f"w{i % 2}@host",
                       "created": records.iso(1000.0 + i), "kwargs": f"{{'customer': 'c{i}'}}"}
             for i in range(12)})


def test_query_answers_a_page_the_total_and_counts_per_state() -> None:
    s = store()
    a_history(s)
    everything = found(s, limit=5)
    assert [t["id"] for t in everything["tasks"]] == ["t11", "t10", "t9", "t8", "t7"]
    assert everything["total"] == 12 and everything["counts"] == {"SUCCESS": 4, "FAILURE": 4, "STARTED": 4}
    assert not everything["truncated"]
    assert [t["id"] for t in found(s, limit=5, offset=10)["tasks"]] == ["t1", "t0"]
    assert [t["id"] for t in found(s, limit=3, sort="oldest")["tasks"]] == ["t0", "t1", "t2"]


def test_query_filters_on_every_field() -> None:
    s = store()
    a_history(s)
    assert [t["id"] for t in found(s, state="FAILURE,STARTED", owner="bob")["tasks"]] == ["t11", "t10", "t8"]
    assert found(s, state="FAILURE")["counts"] == {"FAILURE": 4}
    assert [t["id"] for t in found(s, name="FAIL", queue="reports")["tasks"]] == ["t8", "t4", "t0"]
    assert [t["id"] for t in found(s, worker="w1", since="1005", until="1008")["tasks"]] == ["t7", "t5"]
    assert [t["id"] for t in found(s, q="c1")["tasks"]] == ["t11", "t10", "t1"]
    assert [t["id"] for t in found(s, q="T3")["tasks"]] == ["t3"]


def test_a_user_only_ever_finds_their_own_tasks() -> None:
    s = store()
    a_history(s)
    assert found(s, owner="bob")["total"] == 4
    assert s.query(TaskFilter(owner="alice"), 50, 0, "bob")["total"] == 0
    assert s.query(TaskFilter(owner="bob"), 50, 0, "bob")["total"] == 4


def test_a_scan_stopped_at_its_bound_says_truncated() -> None:
    s = store()
    a_history(s)
    cut = found(s, bound=5)
    assert cut["truncated"] and cut["total"] == 5
    assert not found(s, bound=12)["truncated"]


def test_matching_ids_are_capped_and_counted() -> None:
    s = store()
    a_history(s)
    assert s.matching_ids(TaskFilter.from_args({"state": "SUCCESS"}), None, 2) == (["t9", "t6"], 4)


def test_children_are_listed_with_their_states_in_order_and_trimmed_with_the_index() -> None:
    s = store(3)
    index.register(s.client, "p", "tasks.demo.fanout", now=1000.0)
    for i in range(3):
        index.register(s.client, f"c{i}", "tasks.demo.steps", parent="p", now=1001.0 + i)
    s.merge({"c1": {"id": "c1", "state": "SUCCESS"}})
    s.merge({"c9": {"id": "c9", "state": "STARTED", "parent": "p", "created": records.iso(1009.0)}})  # from events
    children, total = s.children("p")
    assert [(c["id"], c["state"]) for c in children] == [("c0", "PENDING"), ("c1", "SUCCESS"), ("c2", "PENDING"),
                                                         ("c9", "STARTED")]
    assert total == 4 and s.children("p", limit=2) == (children[:2], 4)
    s.trim(now=2000.0)  # keeps the newest 3: c1, c2, c9
    assert s.get("p") is None and not s.client.exists(index.children_key("p"))


def test_launch_params_are_kept_for_retries_and_trimmed_with_the_index() -> None:
    s = store(1)
    index.register(s.client, "t1", "tasks.demo.steps", owner="alice", now=1000.0, params={"password": "x"})
    assert s.params("t1") == {"password": "x"} and s.params("nope") is None
    index.register(s.client, "t2", "tasks.demo.steps", now=1001.0)
    s.trim(now=1002.0)
    assert s.params("t1") is None


def test_unfinished_tasks_newest_first_only_the_owners_and_bounded() -> None:
    s = store()
    a_history(s)
    tasks, more = s.unfinished(None, 2)
    assert [t["id"] for t in tasks] == ["t11", "t8"] and more
    tasks, more = s.unfinished("alice", 10)
    assert [t["id"] for t in tasks] == ["t5", "t2"] and not more


def test_until_a_shown_time_includes_the_task_created_then() -> None:
    """The API shows `created` to the microsecond; the index's score keeps time.time()'s full
    precision. Asking `until` the time shown for a task still finds that task."""
    s = store()
    index.register(s.client, "t1", "tasks.demo.steps", now=1764470104.5436254)  # shown rounded down
    index.register(s.client, "t2", "tasks.demo.steps", now=1764470105.5436257)  # shown rounded up
    assert s.get("t1")["created"].endswith(".543625+00:00") and s.get("t2")["created"].endswith(".543626+00:00")
    for task_id in ("t1", "t2"):
        shown = s.get(task_id)["created"]
        assert task_id in [t["id"] for t in found(s, until=shown)["tasks"]]
        assert task_id in [t["id"] for t in found(s, since=shown)["tasks"]]
        assert [t["id"] for t in found(s, since=shown, until=shown)["tasks"]] == [task_id]


def test_a_task_sent_by_a_launched_task_belongs_to_its_launcher(monkeypatch: object) -> None:
    """A group's children (sent by the worker, without the dashboard's owner header) belong to
    whoever launched the parent: they are listed for that user and can be opened by them. Tasks
    sent by code nobody launched from the dashboard stay nobody's (admins only)."""
    from celery.signals import after_task_publish, before_task_publish

    s = store()
    monkeypatch.setattr(index, "_client", s.client)  # type: ignore[attr-defined]
    before_task_publish.send(sender="tasks.demo.fanout", headers={"id": "p", "owner": "op"},
                             body=((), {"children": 2}, {}))
    for child in ("c1", "c2"):
        after_task_publish.send(sender="tasks.demo.steps", headers={"id": child, "parent_id": "p"},
                                body=((), {}, {}))
    after_task_publish.send(sender="tasks.demo.steps", headers={"id": "other"}, body=((), {}, {}))
    assert s.get("c1")["owner"] == "op" and s.get("c2")["owner"] == "op"
    assert s.get("other")["owner"] is None
    assert {t["id"] for t in found(s, owner="op")["tasks"]} == {"p", "c1", "c2"}
    assert s.params("c1") is None  # only the launch's own params are kept


class Redis62(fakeredis.FakeRedis):
    """Redis 6.2 as it answers a command it does not have (ZINTERCARD came in 7.0)."""

    def zintercard(self, *args: object, **kwargs: object) -> int:
        import redis

        raise redis.ResponseError("unknown command 'ZINTERCARD', with args beginning with: '2' ")


def test_the_unfinished_count_works_on_a_redis_older_than_7() -> None:
    client = Redis62()
    client.zadd(index.owner_key("ada"), {f"t{i}": 1000.0 + i for i in range(10)})
    client.sadd(index.ACTIVE_KEY, "t8", "t9", "t3", "someone-else")
    s = TaskStore(client, 100)
    assert s.active_count("ada", 20) == 3
    assert s.active_count("ada", 2) == 2
    assert s.active_count("nobody", 20) == 0


def test_an_unfinished_count_error_other_than_a_missing_command_is_raised() -> None:
    import pytest
    import redis

    client = fakeredis.FakeRedis()
    client.set(index.owner_key("ada"), "not a sorted set")
    with pytest.raises(redis.ResponseError):
        TaskStore(client, 100).active_count("ada", 20)


def test_a_stored_object_orjson_refuses_is_still_read() -> None:
    """Task objects are decoded with orjson, which refuses integers past 64 bits; the json module
    writes them (a task's `retries` or a user's own field could be one): such an object still reads."""
    client = fakeredis.FakeRedis()
    client.hset(index.DATA_KEY, "big", '{"id": "big", "state": "SUCCESS", "retries": 18446744073709551616}')
    s = TaskStore(client, 100)
    assert s.get("big")["retries"] == 2 ** 64
