"""The live feed against the real stack: what a python-socketio client sees of every demo task."""
from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.conftest import RUNNING, TERMINAL, TIMEOUT, Api, Feed, created_at
from tests.support import BIN, ROOT, Stack, wait_for


@pytest.fixture(scope="module")
def watcher(stack: Stack) -> Iterator[Feed]:
    """One client connected before this module launches anything, watching everything it does."""
    feed = Feed(stack.url)
    try:
        yield feed
    finally:
        feed.close()


def test_connect_receives_a_snapshot(watcher: Feed) -> None:
    tasks = watcher.snapshot()
    assert isinstance(tasks, list)
    stamps = [created_at(task) for task in tasks if task["created"]]
    assert stamps == sorted(stamps, reverse=True), "snapshot is not newest first"


def test_steps_is_seen_progressing_then_succeeding(api: Api, watcher: Feed) -> None:
    mark = len(watcher.recorded())
    launched = api.launch("steps", steps=5, delay=0.3)
    done = watcher.wait(launched["id"])

    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"steps": 5}
    assert done["progress"]["percent"] == 100
    history = watcher.history(launched["id"])
    percents = [task["progress"]["percent"] for task in history if task["state"] == "PROGRESS"]
    assert len(percents) >= 2, f"expected live progress updates, got {watcher.states(launched['id'])}"
    assert percents == sorted(percents) and percents[0] < percents[-1], percents
    for task in history:
        if task["state"] == "PROGRESS":
            assert {"current", "total", "percent", "message"} <= set(task["progress"]), task
    detail = api.task(launched["id"])
    assert (detail.pop("children"), detail.pop("children_total")) == ([], 0)  # the detail adds its children
    assert detail == done
    watcher.check_contract(since=mark)


def test_every_demo_task_ends_live(api: Api, watcher: Feed) -> None:
    mark = len(watcher.recorded())
    launched = {
        "primes": api.launch("primes", limit=200_000),
        "fail": api.launch("fail", steps=1, delay=0.1),
        "flaky": api.launch("flaky", failures=2, countdown=1),
        "long": api.launch("long", seconds=30),
        "fanout": api.launch("fanout", children=2, steps=2, delay=0.2),
    }
    ids = {name: task["id"] for name, task in launched.items()}

    watcher.wait(ids["long"], lambda t: t["state"] in RUNNING, what="Socket.IO: the long task running")
    response = api.post(f"/api/tasks/{ids['long']}/cancel")
    assert response.status_code == 202, response.text

    final = {name: watcher.wait(task_id, what=f"Socket.IO: {name} to end") for name, task_id in ids.items()}
    assert final["primes"]["state"] == "SUCCESS", final["primes"]
    assert final["primes"]["result"]["count"] == 17984
    assert final["fail"]["state"] == "FAILURE", final["fail"]
    assert final["fail"]["error"]["type"] == "ValueError"
    assert "raise ValueError" in final["fail"]["error"]["traceback"]
    assert final["flaky"]["state"] == "SUCCESS", final["flaky"]
    assert final["flaky"]["result"] == {"attempts": 3}
    assert final["long"]["state"] == "REVOKED", final["long"]
    assert final["fanout"]["state"] == "SUCCESS", final["fanout"]
    assert final["fanout"]["result"] == {"children": 2, "steps": 4}

    # The feed and the API agree on how each task ended.
    for name, task_id in ids.items():
        assert api.task(task_id)["state"] == final[name]["state"], name
    # The fan-out's children are pushed too, each naming its parent.
    children = wait_for(lambda: [t for t in latest_tasks(watcher) if t["parent"] == ids["fanout"]
                                 and t["state"] == "SUCCESS"], TIMEOUT, what="Socket.IO: fanout children")
    assert len(children) == 2, children
    watcher.check_contract(since=mark)
    # The retries are shown, not only the final success.
    assert "RETRY" in watcher.states(ids["flaky"]), f"RETRY never pushed: {watcher.states(ids['flaky'])}"


def latest_tasks(feed: Feed) -> list[dict[str, Any]]:
    """Each task's last received object."""
    latest: dict[str, dict[str, Any]] = {}
    for _, tasks in feed.recorded():
        for task in tasks:
            latest[task["id"]] = task
    return list(latest.values())


def test_a_task_sent_from_another_process_shows_up(api: Api, watcher: Feed, stack: Stack) -> None:
    mark = len(watcher.recorded())
    sent = subprocess.run(
        [str(BIN / "python"), "-c", "from tasks.demo import steps; print(steps.delay(steps=3, delay=0.2).id)"],
        env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    task_id = sent.stdout.strip().splitlines()[-1]

    pushed = watcher.wait(task_id, what="Socket.IO: the .delay() task to end")
    assert pushed["state"] == "SUCCESS", pushed
    assert pushed["name"] == "tasks.demo.steps"
    assert pushed["result"] == {"steps": 3}

    listed = wait_for(lambda: [t for t in api.tasks(limit=500) if t["id"] == task_id and t["state"] == "SUCCESS"],
                      TIMEOUT, what="the .delay() task in GET /api/tasks")[0]
    assert listed["result"] == {"steps": 3}
    assert listed["created"], listed
    watcher.check_contract(since=mark)


def test_a_later_client_gets_the_current_state_and_stays_live(
        api: Api, watcher: Feed, connect: Callable[[], Feed]) -> None:
    mark = len(watcher.recorded())
    # Ended tasks cannot change any more, so the later client must see them exactly as the watcher does.
    known = {task["id"]: task for task in latest_tasks(watcher) if task["state"] in TERMINAL}
    assert len(known) >= 5, f"the watcher saw only {len(known)} ended tasks"

    late = connect()
    snapshot = late.snapshot()
    by_id = {task["id"]: task for task in snapshot}
    missing = set(known) - set(by_id)
    assert not missing, f"snapshot lacks {len(missing)} tasks that already ran"
    for task_id, task in known.items():
        for key in ("state", "result", "error", "progress", "parent"):
            assert by_id[task_id][key] == task[key], (task_id, key, by_id[task_id][key], task[key])
    stamps = [created_at(task) for task in snapshot if task["created"]]
    assert stamps == sorted(stamps, reverse=True), "snapshot is not newest first"

    # Both clients stay live.
    launched = api.launch("steps", steps=2, delay=0.1)
    for feed in (watcher, late):
        done = feed.wait(launched["id"])
        assert done["state"] == "SUCCESS" and done["result"] == {"steps": 2}, done
    late.check_contract()
    watcher.check_contract(since=mark)


ODD_EVENTS = """
import uuid
from tasks.celery_app import celery_app
odd = {name!r}
with celery_app.connection_for_write() as conn:
    d = celery_app.events.Dispatcher(conn, enabled=True)
    # Fields of types Celery never sends, as any process with the broker's URL can send them.
    d.send("task-received", uuid=odd, retries="x", name=5, parent_id=[1], args="()", kwargs="{{}}")
    d.send("task-started", uuid=odd, retries=0)
    d.send("task-progress", uuid=odd, retries=True, progress={{"current": 1, "total": 2, "message": "half"}})
    d.send("task-received", uuid=odd + "-2", retries=10**12, name="x", timestamp="late")
    d.send("task-failed", uuid=odd, exception=["not", "text"], traceback={{"a": 1}})
    d.close()
"""


def test_odd_events_from_another_process_never_stop_anyone_s_live_updates(stack: Stack, api: Api,
                                                                         watcher: Feed) -> None:
    """A helper's review: a task-received whose `retries` was "x", then a task-started of the same
    task, made every later batch fail (its merge raised), so no client got any update again, and
    the record in Redis did the same after a restart. Now the odd fields are left out: the odd task
    is shown, and a task launched after it still ends live for every client."""
    odd = f"odd-{uuid.uuid4()}"
    stack.python(ODD_EVENTS.format(name=odd))
    launched = api.launch("steps", steps=2, delay=0.1)
    done = watcher.wait(launched["id"])
    assert done["state"] == "SUCCESS" and done["progress"]["message"] == "step 2 of 2"
    shown = wait_for(lambda: (t := api.task(odd)) and t["state"] == "FAILURE" and t, TIMEOUT, what="the odd task")
    assert shown["retries"] == 0 and shown["name"] is None
    assert shown["error"]["type"] == "Error"
