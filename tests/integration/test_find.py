"""Finding tasks and reading all of one, against the real stack: arguments (a secret masked before
anything is stored), routing, attempts, a group's children, server-side filters with counts and
paging, and snapshots that leave no task running on a page after it ended."""
from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import redis
import socketio

from tasks.celery_app import celery_app
from tests.integration.conftest import Api, created_at
from tests.support import Stack, wait_for


def found(api: Api, **query: Any) -> dict[str, Any]:
    response = api.get("/api/tasks", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def ids(api: Api, **query: Any) -> list[str]:
    return [task["id"] for task in found(api, **query)["tasks"]]


def dashboard_values(client: redis.Redis) -> bytes:
    """Every value and member under the dashboard's keys, whatever their type."""
    parts: list[bytes] = []
    for key in client.scan_iter("dashboard:*", count=1000):
        kind = client.type(key).decode()
        if kind == "hash":
            parts += [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "zset":
            parts += client.zrange(key, 0, -1)
        elif kind == "set":
            parts += list(client.smembers(key))
        elif kind == "list":
            parts += client.lrange(key, 0, -1)
        elif kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "stream":
            parts += [str(entry).encode() for entry in client.xrange(key)]
    return b"\n".join(parts)


def test_arguments_are_shown_with_secrets_masked_and_routing_and_attempts(stack: Stack, api: Api) -> None:
    secret, nested = f"hunter2-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    marker = f"acme-{uuid.uuid4().hex[:8]}"
    # Another Python shell sends a task by name, with a password among its keyword arguments
    # (the demo task does not take them: it fails, and still shows what it was sent with).
    sent = stack.python(
        "from tasks.celery_app import celery_app\n"
        f"print(celery_app.send_task('tasks.demo.fail', args=({marker!r},), kwargs={{'steps': 0, "
        f"'password': {secret!r}, 'options': {{'retries': 2, 'API_KEY': {nested!r}}}}}).id)").stdout.strip()
    # A task whose error repeats its arguments: the error's message, traceback and attempts mask
    # the secret as its arguments do.
    leak = f"SUPERSECRET-{uuid.uuid4().hex}"
    failing = stack.python(
        "from tasks.demo import fail\n"
        f"print(fail.delay(steps=1, delay=0, message={{'api_token': {leak!r}, 'x': 'y' * 5000}}).id)").stdout.strip()
    launched = api.launch("steps", steps=2, delay=0.05)
    failed = api.wait(failing)
    assert failed["state"] == "FAILURE" and "'api_token': ********" in failed["kwargs"], failed["kwargs"]
    assert failed["error"]["message"].startswith("{'api_token': ********, 'x': 'yyy"), failed["error"]["message"][:80]
    assert "ValueError: {'api_token': ********" in failed["error"]["traceback"], failed["error"]["traceback"][-300:]
    assert failed["attempts"] and failed["attempts"][-1]["error"]["message"].startswith("{'api_token': ********")
    assert leak not in str(failed)
    delayed = api.wait(sent)
    assert delayed["args"] == f"('{marker}',)", delayed
    assert delayed["kwargs"] == "{'steps': 0, 'password': ********, 'options': {'retries': 2, 'API_KEY': ********}}"
    queue = celery_app.conf.task_default_queue
    assert (delayed["queue"], delayed["routing_key"]) == (queue, queue)
    done = api.wait(launched["id"])
    assert done["state"] == "SUCCESS" and done["args"] == "()" and done["kwargs"] == "{'steps': 2, 'delay': 0.05}"
    assert (done["queue"], done["exchange"], done["routing_key"]) == (queue, "", queue)
    assert done["received"] and done["created"] <= done["received"] <= done["started"] <= done["finished"]
    assert [(a["retries"], a["worker"], a["error"]) for a in done["attempts"]] == [(0, done["worker"], None)]
    assert done["retry_of"] is None
    client = redis.Redis(port=stack.redis_port)
    stored = dashboard_values(client)
    assert secret.encode() not in stored and nested.encode() not in stored and leak.encode() not in stored
    assert marker.encode() in stored  # the scan does read the task objects


def test_every_attempt_is_shown_with_its_error(api: Api) -> None:
    launched = api.launch("flaky", failures=2, countdown=0)
    api.wait(launched["id"], lambda t: t["state"] == "SUCCESS")
    done = api.task(launched["id"])
    attempts = done["attempts"]
    assert len(attempts) == 3, attempts
    assert [(a["retries"], (a["error"] or {}).get("message")) for a in attempts] == [
        (0, "attempt 1 failed"), (1, "attempt 2 failed"), (2, None)], attempts
    assert all(a["worker"] and a["started"] and a["finished"] for a in attempts), attempts
    # Each attempt's times are its own: it starts before it ends, and after the one before it started.
    assert all(a["started"] <= a["finished"] for a in attempts), attempts
    assert [a["started"] for a in attempts] == sorted({a["started"] for a in attempts}), attempts


def test_a_groups_children_show_with_their_states(api: Api) -> None:
    launched = api.launch("fanout", children=3, steps=1, delay=0.05)
    api.wait(launched["id"], lambda t: t["state"] == "SUCCESS")
    detail = wait_for(lambda: (lambda d: d if [c["state"] for c in d["children"]] == ["SUCCESS"] * 3 else None)(
        api.task(launched["id"])), 30, what="the children's endings")
    assert detail["children_total"] == 3
    assert {c["name"] for c in detail["children"]} == {"tasks.demo.steps"}
    child = api.task(detail["children"][0]["id"])
    assert child["parent"] == launched["id"] and child["state"] == "SUCCESS"


def test_filters_counts_and_paging_find_the_right_tasks(stack: Stack, api: Api) -> None:
    start = time.time() - 0.001
    ok = api.launch("steps", steps=1, delay=0.01)
    broken = api.launch("fail", steps=0, delay=0)
    ok2 = api.launch("steps", steps=1, delay=0.01)
    nobody = f"find-nobody-{uuid.uuid4().hex[:6]}"  # a queue no worker consumes: stays queued
    queued = stack.python("from tasks.celery_app import celery_app\n"
                          f"print(celery_app.send_task('tasks.demo.steps', queue={nobody!r}).id)").stdout.strip()
    try:
        for task in (ok, broken, ok2):
            api.wait(task["id"])
        wait_for(lambda: api.task(queued), 30, what="the queued task in the index")
        since = api.task(ok["id"])["created"]
        mine = dict(since=since)
        assert set(ids(api, **mine)) == {ok["id"], broken["id"], ok2["id"], queued}
        assert ids(api, state="FAILURE", **mine) == [broken["id"]]
        assert set(ids(api, state="SUCCESS,PENDING", **mine)) == {ok["id"], ok2["id"], queued}
        assert ids(api, name="demo.fail", **mine) == [broken["id"]]
        assert ids(api, queue=nobody) == [queued]
        worker = api.task(ok["id"])["worker"]
        assert set(ids(api, worker=worker, **mine)) == {ok["id"], broken["id"], ok2["id"]}
        assert ids(api, q=broken["id"][:8]) == [broken["id"]]
        assert ids(api, since=start, until=api.task(broken["id"])["created"]) == [broken["id"], ok["id"]]
        answer = found(api, **mine)
        assert answer["counts"] == {"SUCCESS": 2, "FAILURE": 1, "PENDING": 1} and answer["total"] == 4
        assert answer["truncated"] is False
        first = found(api, limit=3, **mine)
        rest = found(api, limit=3, offset=3, **mine)
        assert (len(first["tasks"]), len(rest["tasks"]), first["total"], first["limit"]) == (3, 1, 4, 3)
        newest = [t["id"] for t in first["tasks"] + rest["tasks"]]
        assert newest == sorted(newest, key=lambda i: created_at(api.task(i)), reverse=True)
        assert ids(api, sort="oldest", **mine) == newest[::-1]
        bad = api.get("/api/tasks", params={"since": "last tuesday"})
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "since"
    finally:
        api.post(f"/api/tasks/{queued}/cancel")  # out of the queue: no banner left for other tests


class Client:
    """A Socket.IO client recording its snapshots; it names the tasks it shows unfinished when it
    connects, as a browser tab does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.snapshots: list[dict[str, Any]] = []
        self.got = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("snapshot", self._snapshot)

    def _snapshot(self, data: dict[str, Any]) -> None:
        self.snapshots.append(data)
        self.got.set()

    def connect(self, unfinished: list[str] | None = None) -> dict[str, Any]:
        self.got.clear()
        self.sio.connect(self.url, transports=["websocket"], wait_timeout=20,
                         auth={"tasks": unfinished} if unfinished else None)
        assert self.got.wait(20), "no snapshot"
        return self.snapshots[-1]


def test_a_snapshot_has_every_unfinished_task_and_what_ended_while_away(stack: Stack, api: Api) -> None:
    url = stack.start_web(env={"SNAPSHOT_LIMIT": "2"})  # a web process whose snapshots hold the newest 2
    client, fresh = Client(url), Client(url)
    running = api.launch("long", seconds=120)
    try:
        ending = api.launch("steps", steps=8, delay=0.25)
        api.wait(ending["id"], lambda t: t["state"] == "PROGRESS")
        shown = {t["id"]: t["state"] for t in client.connect()["tasks"]}
        assert shown.get(ending["id"]) == "PROGRESS" and running["id"] in shown
        client.sio.disconnect()
        newer = [api.launch("steps", steps=1, delay=0.01)["id"] for _ in range(3)]
        api.wait(ending["id"], lambda t: t["state"] == "SUCCESS")
        for task_id in newer:
            api.wait(task_id)
        snapshot = client.connect(unfinished=[ending["id"], running["id"]])
        states = {t["id"]: t["state"] for t in snapshot["tasks"]}
        assert [t["id"] for t in snapshot["tasks"][:2]] == newer[:0:-1]  # the newest 2 first
        assert states[ending["id"]] == "SUCCESS"  # ended while away: no row left running
        assert states[running["id"]] in ("STARTED", "PROGRESS")  # older than the newest 2, unfinished
        assert snapshot["unfinished_truncated"] is False
        client.sio.disconnect()
        # A fresh tab, which names nothing, still gets every unfinished task.
        first = {t["id"] for t in fresh.connect()["tasks"]}
        assert running["id"] in first and ending["id"] not in first
    finally:
        api.post(f"/api/tasks/{running['id']}/cancel")
        for each in (client, fresh):
            if each.sio.connected:
                each.sio.disconnect()
        stack.kill_web(url, signal.SIGTERM)
