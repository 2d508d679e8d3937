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


def test_merge_returns_only_what_changed() -> None:
    s = store()
    assert len(s.merge({"t1": launched(1)})) == 1
    assert s.merge({"t1": launched(1)}) == []
    changed = s.merge({"t1": {"id": "t1", "state": "STARTED"}})
    assert changed[0]["state"] == "STARTED" and changed[0]["created"] == records.iso(1001.0)


def test_active_set_tracks_unfinished_tasks() -> None:
    s = store()
    s.merge({"t1": launched(1), "t2": launched(2)})
    s.merge({"t1": {"id": "t1", "state": "SUCCESS"}})
    assert s.active_ids() == ["t2"]


def test_history_is_trimmed_to_the_limit_oldest_first() -> None:
    s = store(limit=10)
    s.merge({f"t{i}": launched(i) for i in range(30)})
    s.trim()
    assert [r["id"] for r in s.recent(100)] == [f"t{i}" for i in range(29, 19, -1)]
    assert s.get("t0") is None
