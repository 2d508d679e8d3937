from __future__ import annotations

import fakeredis

from web import records
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
    from celery_dashboard import index

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
