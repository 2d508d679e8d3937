"""web.queues and web.control against a real redis-server and real Celery workers of a user's own app, run as the
tutorial runs them: `.delay()` with default settings, `celery -A <module> worker` without `-E`."""
from __future__ import annotations

import base64
import importlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from tests.conftest import ARTIFACTS
from tests.support import BIN, Process, Stack, wait_for
from web import control as remote
from web import queues

MODULE = "tutorial_tasks"  # the user's tasks module, written to a temporary directory
APP = '''
import time
from celery import Celery

app = Celery("usr", broker="{url}", backend="{url}")


@app.task
def add(x, y):
    return x + y


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds
'''
HOST = socket.gethostname()
SOLO = f"solo@{HOST}"
THREADS = f"threads@{HOST}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack(logdir=ARTIFACTS / "logs" / f"broker-{time.strftime('%H%M%S')}")
    try:
        running.start_redis()
        (running.dir / f"{MODULE}.py").write_text(APP.format(url=running.redis_url))
        running.env["PYTHONPATH"] = str(running.dir)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def usr(stack: Stack) -> Iterator[ModuleType]:
    """The user's module, imported here as their own process would."""
    sys.path.insert(0, str(stack.dir))
    try:
        yield importlib.import_module(MODULE)
    finally:
        sys.path.remove(str(stack.dir))
        sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url)


def send(stack: Stack, *calls: str) -> list[str]:
    """Publish from a process of the user's own, as they do (`.delay()`, default settings): each
    call is an expression on their module `t`; returns the task ids. (In this process, importing
    `web` connects the dashboard's own publish hook, which a user's process does not have.)"""
    code = f"import {MODULE} as t\n" + "".join(f"print(({call}).id)\n" for call in calls)
    done = subprocess.run([sys.executable, "-c", code], env=stack.env, cwd=stack.dir, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.split()


def start_worker(stack: Stack, name: str, *options: str) -> Process:
    """`celery -A tutorial_tasks worker` as a user runs it: no -E (task events off)."""
    proc = Process(f"worker-{name}", [str(BIN / "celery"), "-A", MODULE, "worker", "-l", "info",
                                      "-n", f"{name}@%h", *options], stack.env, stack.logdir)
    stack.processes.append(proc)
    wait_for(lambda: "ready." in proc.output(), 60, what=f"worker {name} ready")
    return proc


@pytest.fixture(scope="module")
def workers(stack: Stack, usr: ModuleType, client: redis.Redis) -> list[Process]:
    """A solo worker on the default queue and a threads worker on queue "slow"; started after the
    queue tests (which need the messages to stay waiting), with the queues emptied first."""
    client.delete(*queues.priority_keys("celery"))
    return [start_worker(stack, "solo", "-P", "solo"),
            start_worker(stack, "threads", "-P", "threads", "-c", "2", "-Q", "slow")]


@pytest.fixture(scope="module")
def control(usr: ModuleType) -> remote.Control:
    return remote.Control(usr.app)


def task_events(pubsub: Any, wait: float) -> list[dict[str, Any]]:
    """The task events published within `wait` seconds (kombu envelopes, a worker's batches too)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if not message or message["type"] != "pmessage":
            continue
        envelope = json.loads(message["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        events += [e for e in (body if isinstance(body, list) else [body]) if e["type"].startswith("task-")]
    return events


# ---- the queue, with no worker running ------------------------------------------------------

def test_tasks_sent_with_delay_are_listed_while_they_wait(stack: Stack, usr: ModuleType,
                                                          client: redis.Redis) -> None:
    sent = send(stack, *[f"t.add.delay({i}, {i})" for i in range(5)])
    assert queues.queue_names([usr.app]) == ["celery"]
    found = queues.queued(client, ["celery"])
    assert [task["id"] for task in found] == sent[::-1]  # newest first
    assert {(task["name"], task["state"], task["queue"], task["retries"], task["parent"]) for task in found} == {
        ("tutorial_tasks.add", "PENDING", "celery", 0, None)}
    assert (found.waiting, found.skipped) == (5, 0)


def test_the_answer_is_bounded_by_limit(client: redis.Redis) -> None:
    found = queues.queued(client, ["celery"], limit=3)
    assert len(found) == 3 and found.read == 3 and found.waiting >= 5


def test_a_task_with_a_priority_is_found_in_kombus_priority_list(stack: Stack, client: redis.Redis) -> None:
    [urgent] = send(stack, "t.add.apply_async((1, 1), priority=5)")
    assert client.llen("celery\x06\x163") == 1  # priority 5 -> step 3: "<queue>\x06\x16<step>"
    assert urgent in {task["id"] for task in queues.queued(client, ["celery"])}


def test_a_message_that_is_not_a_task_is_skipped(stack: Stack, client: redis.Redis) -> None:
    client.lpush("celery", b"\x80\x04\x95 not a kombu envelope")
    send(stack, "t.add.delay(2, 2)")
    found = queues.queued(client, ["celery"])
    assert found.skipped == 1
    assert len(found) == found.read - 1 == 7


# ---- the workers ------------------------------------------------------------------------------

def test_task_events_flow_only_after_enable_events(stack: Stack, usr: ModuleType, client: redis.Redis,
                                                   workers: list[Process], control: remote.Control) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/0.celeryev/*")
    try:
        [quiet] = send(stack, "t.add.delay(1, 2)")
        assert usr.app.AsyncResult(quiet).get(timeout=20) == 3
        assert task_events(pubsub, 1.0) == []  # a user's worker: events are off by default

        control.enable_events()
        assert control.last_error is None
        assert control.ping([SOLO], timeout=5) == {SOLO}  # same mailbox, so enable_events came first
        [heard] = send(stack, "t.add.delay(2, 3)")
        assert usr.app.AsyncResult(heard).get(timeout=20) == 5
        events = wait_for(lambda: [e for e in task_events(pubsub, 0.5) if e["uuid"] == heard], 10,
                          what="task events after enable_events")
        assert "task-succeeded" in {event["type"] for event in events}
    finally:
        pubsub.close()


def test_ping_answers_for_a_worker_and_not_for_a_made_up_one(workers: list[Process],
                                                             control: remote.Control) -> None:
    assert control.ping([SOLO, f"nobody@{HOST}"], timeout=1.0) == {SOLO}
    assert control.ping([f"nobody@{HOST}"], timeout=0.3) == set()
    assert control.last_error is None


def test_pools_name_each_workers_pool(workers: list[Process], control: remote.Control) -> None:
    assert control.pools(timeout=1.0) == {SOLO: "solo", THREADS: "threads"}


def test_active_lists_running_and_scheduled_tasks(stack: Stack, usr: ModuleType, workers: list[Process],
                                                 control: remote.Control) -> None:
    # the second is held in the worker's memory until its countdown ends
    running, later = send(stack, 't.sleep.apply_async((3,), queue="slow")',
                          't.add.apply_async((1, 1), queue="slow", countdown=60)')

    def both_listed() -> dict[str, set[str]] | None:
        found = control.active(timeout=0.5)
        return found if found and {running, later} <= found.get(THREADS, set()) else None

    found = wait_for(both_listed, 10, interval=0.2, what="active() listing the sleeping task")
    assert SOLO in found and running not in found[SOLO]
    assert usr.app.AsyncResult(running).get(timeout=20) == 3
    usr.app.control.revoke(later)


def test_a_solo_worker_running_a_task_does_not_answer(stack: Stack, usr: ModuleType, workers: list[Process],
                                                      control: remote.Control) -> None:
    """Why a missing pong proves nothing: solo's one thread runs the task, not the consumer. When
    the task ends it answers every ping it missed: those late answers must not stand for new ones."""
    [busy] = send(stack, "t.sleep.delay(2)")
    wait_for(lambda: control.ping([SOLO], timeout=0.3) == set(), 5, what="the solo worker busy")
    assert control.last_error is None  # the broker answered; the worker did not
    assert usr.app.AsyncResult(busy).get(timeout=20) == 2
    assert control.ping([SOLO], timeout=2) == {SOLO}


def test_a_control_holds_two_redis_connections_however_often_it_is_used(
        client: redis.Redis, workers: list[Process], control: remote.Control) -> None:
    import threading

    def use() -> None:
        for _ in range(10):
            control.ping([SOLO], timeout=0.5)
            control.enable_events()

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    control.pools(timeout=0.2)
    assert control.active(timeout=0.2) is not None
    mine = [c for c in client.client_list() if c.get("name") == remote.CLIENT_NAME]
    assert 1 <= len(mine) <= 2, mine
    assert client.scard("_kombu.binding.reply.celery.pidbox") <= 1  # one reply queue, not one per thread


def test_a_launch_and_a_revoke_never_wait_for_a_question_nobody_answers(
        client: redis.Redis, workers: list[Process], usr: ModuleType, control: remote.Control) -> None:
    """A question waits its whole timeout for a worker that does not answer (a solo worker running
    a task answers none); the dashboard's launches and cancels go out meanwhile."""
    import threading

    asking = threading.Thread(target=control.ping, args=(["nobody@nowhere"],), kwargs={"timeout": 4})
    asking.start()
    try:
        time.sleep(0.3)  # the ping is out, its connection held while it waits for the answer
        sent = control.apply_async(usr.add, args=(20, 22))
        assert control.revoke("not-a-running-task") is True
        assert asking.is_alive(), "the launch and the revoke waited for the unanswered ping"
        assert sent.get(timeout=30) == 42  # really sent: the solo worker ran it
    finally:
        asking.join()
    names = [c.get("name") for c in client.client_list()]
    assert names.count(remote.SENDER_NAME) == 1 and names.count(remote.CLIENT_NAME) <= 2, names


def test_a_launch_sends_its_task_and_its_task_sent_event(stack: Stack, usr: ModuleType, client: redis.Redis,
                                                          workers: list[Process], control: remote.Control) -> None:
    """A launch publishes the task's message and, in an app that sends task-sent events (what
    Flower shows as "Sent"), that event: both reach Redis, each as Celery sends it, and the next
    launch on the same connection does too."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("/0.celeryev/*")
    usr.app.conf.task_send_sent_event = True
    try:
        launched = [control.apply_async(usr.add, args=(20, n), headers={"owner": "ann"}) for n in (1, 2)]
        assert [result.get(timeout=30) for result in launched] == [21, 22]
        ids = {result.id for result in launched}
        seen: list[dict[str, Any]] = []

        def both_sent() -> list[dict[str, Any]] | None:
            seen.extend(e for e in task_events(pubsub, 0.3) if e["type"] == "task-sent" and e["uuid"] in ids)
            return seen if {e["uuid"] for e in seen} == ids else None

        wait_for(both_sent, 10, what="the launches' task-sent events")
        assert {(e["name"], e["args"], e["queue"], e["routing_key"]) for e in seen} == {
            ("tutorial_tasks.add", f"(20, {n})", "celery", "celery") for n in (1, 2)}
    finally:
        usr.app.conf.task_send_sent_event = False
        pubsub.close()


def test_every_answer_is_unknown_when_redis_is_gone(tmp_path: Path) -> None:
    from celery import Celery

    gone = Stack(logdir=tmp_path)
    try:
        gone.start_redis()
        control = remote.Control(Celery("usr", broker=gone.redis_url, set_as_current=False))
        assert control.ping(["nobody@nowhere"], timeout=0.2) == set() and control.last_error is None
        gone.redis.stop()  # killed, while the Control holds connections to it
        started = time.monotonic()
        assert control.ping(["nobody@nowhere"], timeout=0.2) == set()
        assert control.last_error is not None
        assert control.active(timeout=0.2) is None
        assert control.pools(timeout=0.2) == {}
        assert control.enable_events() is None
        assert time.monotonic() - started < 15  # gave up instead of retrying forever (kombu's default)
        with pytest.raises(redis.ConnectionError):
            queues.queued(redis.Redis.from_url(gone.redis_url), ["celery"])
    finally:
        gone.stop()
