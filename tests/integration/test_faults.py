"""Faults, really inflicted: web processes killed, Redis stopped, workers killed, a listener cut off.

Each test runs its own private stack, counts the tasks it launched and the tasks whose final state
the dashboard (the REST API and a Socket.IO client) shows correctly, and asserts none is lost.
It also records how long the dashboard took to be right again (printed after the run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.integration.conftest import Api, Feed
from tests.support import ROOT, Stack, wait_for

TIMEOUT = 90.0


def delay_from_another_process(stack: Stack, count: int, **params: Any) -> list[str]:
    """Send `count` stepped tasks with `.delay()` from a separate Python process; return their ids."""
    code = ("import json, sys; from tasks.demo import steps; "
            f"print(json.dumps([steps.delay(**{params!r}).id for _ in range({count})]))")
    out = subprocess.run([sys.executable, "-c", code], env=stack.env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def shown_right(api: Api, expected: dict[str, dict[str, Any]]) -> list[str]:
    """Ids whose final state (and result) the API does not show as expected yet."""
    wrong = []
    listed = {task["id"]: task for task in api.tasks(limit=500)}
    for task_id, want in expected.items():
        task = listed.get(task_id)
        if task is None or any(task.get(key) != value for key, value in want.items()):
            wrong.append(task_id)
    return wrong


def wait_all_right(api: Api, expected: dict[str, dict[str, Any]], timeout: float = TIMEOUT) -> float:
    """Wait until the API shows every task as expected; return the seconds it took."""
    start = time.monotonic()
    last: list[str] = []

    def check() -> bool:
        nonlocal last
        last = shown_right(api, expected)
        return not last

    try:
        wait_for(check, timeout, interval=0.2, what="every task shown right")
    except TimeoutError:
        shown = {task_id: api.get(f"/api/tasks/{task_id}").json() for task_id in last[:3]}
        pytest.fail(f"{len(last)} of {len(expected)} tasks not shown right, e.g. {shown}")
    return time.monotonic() - start


def feed_shows(feed: Feed, expected: dict[str, dict[str, Any]]) -> list[str]:
    wrong = []
    for task_id, want in expected.items():
        task = feed.latest(task_id)
        if task is None or any(task.get(key) != value for key, value in want.items()):
            wrong.append(task_id)
    return wrong


def test_200_tasks_with_the_web_process_killed_in_the_middle(private_stack: Stack, recovery: dict) -> None:
    stack = private_stack
    port = int(stack.start_web().rsplit(":", 1)[1])
    api = Api(stack.url)
    params = {"steps": 2, "delay": 0.05}
    ids = [api.launch("steps", **params)["id"] for _ in range(100)]
    stack.kill_web(stack.url)  # SIGKILL in the middle: tasks keep running, nobody listens
    ids += delay_from_another_process(stack, 100, **params)
    restarted = time.monotonic()
    url = stack.start_web(port=port)
    api = Api(url)
    expected = {task_id: {"state": "SUCCESS", "result": {"steps": 2}} for task_id in ids}
    waited = wait_all_right(api, expected)
    recovery["web killed and restarted, 200 tasks"] = time.monotonic() - restarted
    assert len(expected) == 200 and shown_right(api, expected) == []  # lost: 0

    feed = Feed(url)
    snapshot = {task["id"]: task for task in feed.snapshot()}
    missing = [i for i in ids if snapshot.get(i, {}).get("state") != "SUCCESS"]
    feed.close()
    assert missing == [], f"{len(missing)} of 200 not SUCCESS in the Socket.IO snapshot"
    assert waited < TIMEOUT


def test_an_uninstrumented_app_s_tasks_that_ran_while_no_web_listened_are_shown_after_restart(
        private_stack: Stack, recovery: dict) -> None:
    """The Celery tutorial's app (tests/userapp/mytasks.py: no celery_dashboard, events off) runs 20
    tasks while the only web process is down: no event, no registration, only the result backend
    knows them. The web that starts next looks in the backend for what ran since the last
    listener's heartbeat (web.reconciler.Reconciler.recover) and shows them, results included (one
    of 1.5 MB, too large to read whole: its end says when it ended; one from a worker whose clock is
    a minute behind), and not an entry stored an hour before."""
    from datetime import UTC, datetime

    import redis

    stack = private_stack
    port = int(stack.start_web().rsplit(":", 1)[1])
    wait_for(lambda: redis.Redis.from_url(stack.redis_url).get("dashboard:listened"), 10, what="a heartbeat")
    stack.kill_web(stack.url)
    stack.start_worker(name="tutorial", app="mytasks", events=False)
    code = ("import json; from mytasks import add, huge_result; sent = [add.delay(n, n) for n in range(20)]; "
            "big = huge_result.delay(1.5); [r.get(timeout=30) for r in [*sent, big]]; "
            "print(json.dumps([[r.id for r in sent], big.id]))")
    ids, big = json.loads(stack.python(code).stdout.strip().splitlines()[-1])
    # A worker whose clock is a minute behind stores its endings a minute early.
    late = f"slow-clock-{os.getpid()}"
    client = redis.Redis.from_url(stack.redis_url)
    client.set(f"celery-task-meta-{late}", json.dumps({
        "status": "SUCCESS", "result": 5, "traceback": None, "children": [], "task_id": late,
        "date_done": datetime.fromtimestamp(time.time() - 60, UTC).isoformat()}), ex=86400)
    # An entry stored an hour before the gap, as its expiry says (result_expires, 1 day): not the gap's.
    old = f"before-the-gap-{os.getpid()}"
    hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    client.set(f"celery-task-meta-{old}", json.dumps({"status": "SUCCESS", "result": 7, "traceback": None,
                                                      "children": [], "date_done": hour_ago, "task_id": old}),
               ex=86400 - 3600)
    restarted = time.monotonic()
    api = Api(stack.start_web(port=port))
    expected = {task_id: {"state": "SUCCESS", "result": 2 * n} for n, task_id in enumerate(ids)}
    expected.update({big: {"state": "SUCCESS", "result_truncated": True}, late: {"state": "SUCCESS", "result": 5}})
    waited = wait_all_right(api, expected)
    recovery["an uninstrumented app's 22 tasks, run while no web listened"] = time.monotonic() - restarted
    assert shown_right(api, expected) == [] and waited < TIMEOUT
    assert old not in {task["id"] for task in api.tasks(limit=500)}


def test_a_killed_worker_s_running_tasks_are_shown_lost(private_stack: Stack, recovery: dict) -> None:
    stack = private_stack
    # The verdict waits for the listener to have been connected 3 * WORKER_TIMEOUT (10 s by default,
    # for a Redis outage's reconnects); a shorter timeout tests the same rule sooner.
    url = stack.start_web(env={"WORKER_TIMEOUT": "4"})
    api = Api(url)
    feed = Feed(url)
    wait_for(lambda: any(w["pool"] == "prefork" for w in api.get("/healthz").json()["workers"].values()), 30,
             what="the dashboard to know the worker's pool")
    running = [api.launch("steps", steps=200, delay=0.25)["id"] for _ in range(2)]
    wait_for(lambda: all(api.task(i)["state"] == "PROGRESS" for i in running), 60, what="tasks running")
    assert stack.worker is not None
    os.kill(stack.worker.pid, signal.SIGKILL)  # the worker's main process, as the OOM killer would
    killed = time.monotonic()
    # A prefork main process runs no task code: silent and no answer to a ping, it is gone: LOST.
    expected = {task_id: {"state": "LOST"} for task_id in running}
    wait_all_right(api, expected)
    recovery["worker killed (kill -9)"] = time.monotonic() - killed
    for task_id in running:
        assert api.task(task_id)["error"]["type"] == "WorkerLostError"
    wait_for(lambda: not feed_shows(feed, expected), 30, what="Socket.IO client to see them lost")
    # The workers view still lists the dead worker (not responding, then offline), but no longer
    # counts the tasks it shows LOST as active (it said 'not responding', active 2).
    hostname = api.task(running[0])["worker"]
    shown = wait_for(lambda: next((w for w in api.get("/api/workers").json()["workers"]
                                   if w["hostname"] == hostname and w["status"] != "online"), None),
                     30, what="the killed worker listed as not online")
    assert shown["active"] == 0, shown

    # A new worker picks up work again, and the lost tasks stay as they were.
    stack.start_worker(name="worker2")
    after = api.launch("steps", steps=2, delay=0.1)
    assert api.wait(after["id"])["state"] == "SUCCESS"
    assert all(api.task(i)["state"] == "LOST" for i in running)
    feed.check_contract()
    feed.close()


def test_a_listener_cut_off_at_the_pubsub_buffer_limit_loses_nothing(private_stack: Stack, recovery: dict) -> None:
    stack = private_stack
    url = stack.start_web()
    api = Api(url)
    import redis

    client = redis.Redis(port=stack.redis_port)
    # The default limit is 32 MB; a small one makes the same cut-off quick to reach.
    client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    web = stack.web(url)
    wait_for(lambda: client.execute_command("PUBSUB", "NUMPAT") >= 1, 30, what="the listener's subscription")
    os.kill(web.pid, signal.SIGSTOP)  # the listener falls behind: its output buffer fills up
    try:
        ids = delay_from_another_process(stack, 150, steps=3, delay=0)
        # More events than the kernel's socket buffers absorb, so Redis's own buffer passes the limit.
        for _ in range(300):
            client.publish("/0.celeryev/task.padding", "x" * 65536)
        wait_for(lambda: all(m and json.loads(m).get("status") == "SUCCESS"
                             for m in client.mget([f"celery-task-meta-{i}" for i in ids])), 60,
                 what="the worker to finish the burst")
    finally:
        os.kill(web.pid, signal.SIGCONT)
    resumed = time.monotonic()
    assert stack.redis is not None
    assert "overcoming of output buffer limits" in stack.redis.output()  # Redis did cut it off
    wait_for(lambda: "reconnecting" in web.output(), 30, what="the listener to notice the cut")
    expected = {task_id: {"state": "SUCCESS", "result": {"steps": 3}} for task_id in ids}
    wait_all_right(api, expected)
    recovery["listener cut off at the pub/sub buffer limit, 150 tasks"] = time.monotonic() - resumed


def test_two_web_processes_each_deliver_every_update_and_survive_each_other(
        private_stack: Stack, recovery: dict) -> None:
    stack = private_stack
    first, second = stack.start_web(), stack.start_web()
    feeds = {first: Feed(first), second: Feed(second)}
    for feed in feeds.values():
        feed.snapshot()
    ids = [Api(url).launch("steps", steps=4, delay=0.2)["id"] for url in (first, second) for _ in range(3)]
    expected = {task_id: {"state": "SUCCESS", "result": {"steps": 4}} for task_id in ids}
    for feed in feeds.values():
        wait_for(lambda feed=feed: not feed_shows(feed, expected), TIMEOUT, what="both web processes' clients")
    for feed in feeds.values():
        feed.check_contract()
        for task_id in ids:
            pushed = [(t["version"], t["state"], (t["progress"] or {}).get("current"))
                      for batch in feed.batches() for t in batch if t["id"] == task_id]
            versions = [version for version, _, _ in pushed]
            assert len(versions) == len(set(versions)), f"an update pushed twice to one client: {pushed}"
    # Each web process merges what it hears and reads into the shared store: a read of the result
    # backend that one made before a report's write must not take the bar back (seen: 3 of 4, then
    # 4 of 4 from one web process's event, then 3 of 4 again). The store's versions as both
    # processes' clients were sent them:
    for task_id in ids:
        stored = sorted({(t["version"], (t["progress"] or {}).get("current"))
                         for feed in feeds.values() for batch in feed.batches() for t in batch
                         if t["id"] == task_id and t["state"] == "PROGRESS"})
        currents = [current for _, current in stored]
        assert currents == sorted(currents), f"the progress moved back in the store: {stored}"
        # One process confirms the worker's ending from the backend, the other may read the backend
        # first: the ending's time, once shown, is the same for every client (seen: a second SUCCESS
        # version 1 ms later, from the backend's date_done).
        finished = {t["finished"] for feed in feeds.values() for batch in feed.batches() for t in batch
                    if t["id"] == task_id and t["state"] == "SUCCESS"}
        assert len(finished) == 1, f"the ending's time changed after it was shown: {finished}"

    stack.kill_web(first)
    killed = time.monotonic()
    more = [Api(second).launch("steps", steps=3, delay=0.2)["id"] for _ in range(3)]
    later = {task_id: {"state": "SUCCESS", "result": {"steps": 3}} for task_id in more}
    wait_for(lambda: not feed_shows(feeds[second], later), TIMEOUT, what="the survivor's client")
    recovery["one of two web processes killed"] = time.monotonic() - killed
    feeds[second].check_contract()
    for feed in feeds.values():
        feed.close()
