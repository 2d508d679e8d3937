"""Conformance: the dashboard is right about a user's Celery app on every pool.

A real redis-server, the real web process pointed at the user's app (`CELERY_APP=conform`, a
module in tests/userapp, not the demo app), and one real worker of that app per pool (prefork,
solo, threads, gevent, eventlet), each started the way the Celery tutorial does (no `-E`: the
dashboard turns events on itself) and consuming a queue of its own, so every test can send its
task to the pool it is about. Every input of issue 8 is asserted through the REST API and a
Socket.IO client.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis

from celery_dashboard.reporting import SENT_KEY
from tests.conftest import ARTIFACTS
from tests.integration.conftest import Api, Feed
from tests.support import ROOT, USERAPP, Stack, wait_for

POOLS = ["prefork", "solo", "threads", "gevent", "eventlet"]
TERMINATES = {"prefork", "gevent", "eventlet"}  # pools whose running tasks Celery can terminate
# Each stack has its own Redis, so the user's module is imported again for it (its app reads
# REDIS_URL at import): Celery warns that the task names are registered again.
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")
TIMEOUT = 45.0
ENDED = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED", "LOST", "UNKNOWN"}
WEB_ENV = {"CELERY_APP": "conform", "WORKER_TIMEOUT": "3", "RECONCILE_WINDOW": "8",
           "RECONCILE_INTERVAL": "1", "POLL_INTERVAL": "0.5", "RESULT_MAX_BYTES": "30000000"}


def queue(pool: str) -> str:
    return f"conform.{pool}"


def start_pool_worker(stack: Stack, pool: str, name: str | None = None, queues: str | None = None,
                      env: dict[str, str] | None = None, wait: bool = True) -> Any:
    concurrency = None if pool == "solo" else 3
    extra_env = env or {}
    if extra_env:
        saved, stack.env = stack.env, {**stack.env, **extra_env}
    try:
        return stack.start_worker(app="conform", pool=pool, name=name or pool, queues=queues or queue(pool),
                                  events=False, concurrency=concurrency, wait=wait)
    finally:
        if extra_env:
            stack.env = saved


@pytest.fixture(scope="module")
def conform_stack() -> Iterator[Stack]:
    stack = Stack(logdir=ARTIFACTS / "logs" / f"conformance-{time.strftime('%H%M%S')}", env=WEB_ENV)
    try:
        stack.start_redis()
        stack.start_web()
        for worker in [start_pool_worker(stack, pool, wait=False) for pool in POOLS]:  # started together
            stack.ready(worker)
        api = Api(stack.url)
        # The dashboard enables events and learns each worker's pool (an idle worker answers).
        wait_for(lambda: all(w.get("pool") for h, w in api.get("/healthz").json()["workers"].items())
                 and len(api.get("/healthz").json()["workers"]) >= len(POOLS), 40,
                 what="every worker's pool known to the dashboard")
        yield stack
    finally:
        stack.stop()


def user_app(stack: Stack) -> Any:
    """The user's app in this (the sending) process, as their own Python shell would have it."""
    os.environ["REDIS_URL"] = stack.redis_url
    if str(USERAPP) not in sys.path:
        sys.path.insert(0, str(USERAPP))
    sys.modules.pop("conform", None)
    module = importlib.import_module("conform")
    module.app.set_current()
    return module.app


@pytest.fixture(scope="module")
def app(conform_stack: Stack) -> Any:
    return user_app(conform_stack)


@pytest.fixture(scope="module")
def api(conform_stack: Stack) -> Api:
    return Api(conform_stack.url)


@pytest.fixture
def feed(conform_stack: Stack) -> Iterator[Feed]:
    client = Feed(conform_stack.url)
    client.snapshot()
    yield client
    client.close()


@pytest.fixture(scope="module")
def marks(conform_stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(conform_stack.redis_url)


def send(app: Any, name: str, pool: str, *args: Any, **options: Any) -> str:
    return app.tasks[f"conform.{name}"].apply_async(args, queue=options.pop("queue", queue(pool)), **options).id


def ended(api: Api, task_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    return api.wait(task_id, lambda t: t["state"] in ENDED, timeout=timeout)


def test_a_task_from_another_process_is_shown_queued_started_and_succeeded(
        app: Any, api: Api, feed: Feed, pool: str) -> None:
    task_id = send(app, "add", pool, 2, 3)
    task = ended(api, task_id)
    assert (task["state"], task["result"], task["name"]) == ("SUCCESS", 5, "conform.add")
    assert task["worker"].startswith(f"{pool}@")
    final = feed.wait(task_id, lambda t: t["state"] == "SUCCESS")
    assert final["result"] == 5
    feed.check_contract()


def test_a_task_waiting_in_a_queue_is_shown_queued(app: Any, api: Api, pool: str) -> None:
    task_id = send(app, "add", pool, 1, 1, queue=f"conform.nobody.{pool}")
    task = api.wait(task_id, lambda t: True, what="the queued task to be listed")
    assert task["state"] == "PENDING" and task["name"] == "conform.add"


def test_results_of_any_type_are_shown_and_never_stop_the_stream(
        app: Any, api: Api, feed: Feed, pool: str) -> None:
    typed = {kind: send(app, "typed_result", pool, kind) for kind in ("datetime", "decimal", "uuid")}
    others = [send(app, "add", pool, n, n) for n in range(3)]
    want = {"datetime": "2024-05-17T12:30:00+00:00", "decimal": "12.50",
            "uuid": "12345678-1234-5678-1234-567812345678"}
    for kind, task_id in typed.items():
        assert ended(api, task_id)["result"] == want[kind]
        assert feed.wait(task_id)["state"] == "SUCCESS"
    for n, task_id in enumerate(others):
        assert feed.wait(task_id)["result"] == 2 * n


def test_a_result_that_cannot_be_decoded_is_shown_as_such_and_never_blocks_others(
        conform_stack: Stack, app: Any, api: Api, feed: Feed) -> None:
    worker = conform_stack.start_worker(app="pickler", pool="solo", name="pickler", queues="pickler", events=False)
    try:
        # A worker of an app without celery_dashboard reports nothing until events reach it.
        wait_for(lambda: "enabled by remote" in worker.output(), 20, what="the dashboard to enable events")
        result = conform_stack.python("from pickler import report; print(report.delay().id)")
        pickled = result.stdout.strip().splitlines()[-1]
        others = [send(app, "add", "prefork", n, 1) for n in range(3)]
        task = feed.wait(pickled, what="the pickled result's task to end")
        assert task["state"] == "SUCCESS" and "cannot be decoded" in task["result"]
        assert task["result_truncated"] is True
        assert [feed.wait(i)["result"] for i in others] == [1, 2, 3]
        assert api.get(f"/api/tasks/{pickled}/result").status_code == 422
    finally:
        worker.stop(signal.SIGQUIT)


def test_values_json_cannot_carry_never_break_a_client(app: Any, api: Api, feed: Feed) -> None:
    task_id = send(app, "odd_progress", "prefork")
    other = send(app, "add", "prefork", 1, 1)
    task = ended(api, task_id)  # the API's JSON parses: no NaN or Infinity in it
    assert (task["state"], task["result"]) == ("SUCCESS", "nan")
    assert feed.wait(other)["result"] == 2 and feed.wait(task_id)["state"] == "SUCCESS"
    assert feed.client.connected
    listing = api.get("/api/tasks", params={"limit": 50}).text
    assert "NaN" not in listing and "Infinity" not in listing


def test_progress_is_the_task_s_to_set(app: Any, api: Api, feed: Feed, pool: str) -> None:
    task_id = send(app, "progress_down", pool, 0.4)
    running = feed.wait(task_id, lambda t: (t.get("progress") or {}).get("total") == 5
                        and t["progress"]["current"] == 3, what="progress to go from 10/10 to 3/5")
    assert running["progress"]["percent"] == 60.0 and running["state"] == "PROGRESS"
    assert ended(api, task_id)["state"] == "SUCCESS"


def test_the_tutorials_progress_is_a_live_percentage(app: Any, api: Api, feed: Feed, pool: str) -> None:
    task_id = send(app, "tutorial_progress", pool, 8, 0.5)
    ended(api, task_id)
    shown = [t["progress"]["percent"] for t in feed.history(task_id)
             if t["state"] == "PROGRESS" and t.get("progress")]
    # It moved while the task ran, step by step: a poll (0.5 s here) missed for seconds shows 1 or 2.
    assert len(set(shown)) >= 4, shown
    assert all(0 <= p <= 100 for p in shown)


def test_the_user_s_async_result_holds_the_first_report_at_once_and_then_the_final_one(
        app: Any, api: Api, feed: Feed, marks: redis.Redis, pool: str) -> None:
    """progress() stores a run's first report at once, the final value, and at most one report per
    PROGRESS_STORE_INTERVAL (1 s) in between: the user's own AsyncResult(id).info reads them while
    the task runs. Every report's event still reaches the dashboard (steps 0.15 s apart,
    PROGRESS_INTERVAL 0.1 s: each step is reported; a tick may merge two)."""
    task_id = send(app, "reporting_then_waiting", pool, 8, 0.15, 2.0)
    wait_for(lambda: app.AsyncResult(task_id).state == "PROGRESS", TIMEOUT, interval=0.02,
             what="the first report in the result backend")
    first = app.AsyncResult(task_id).info
    assert first["current"] < 8 and first["total"] == 8, first  # stored before the run's last report
    wait_for(lambda: marks.get(f"conform:reported:{task_id}"), TIMEOUT, what="the last report")
    final = app.AsyncResult(task_id).info
    assert (final["current"], final["total"], final["percent"]) == (8, 8, 100.0) and SENT_KEY in final, final
    assert ended(api, task_id)["state"] == "SUCCESS"
    shown = {t["progress"]["current"] for t in feed.history(task_id) if t.get("progress")}
    assert len(shown) >= 6, sorted(shown)


def test_a_loop_that_slows_down_after_a_fast_phase_reports_again_at_once(app: Any, api: Api, pool: str) -> None:
    """100,000 quick progress calls, then calls that each hold the CPU 0.25 s (PROGRESS_INTERVAL is
    0.1 s): a skipped call reads no clock, so only this process's ticker (an OS thread, in gevent and
    eventlet workers too) makes a slow call look at the time; without it none of the 6 slow calls
    would be sent. Each is due; the task returns which ones were."""
    task = ended(api, send(app, "fast_then_slow", pool, 100_000, 6, 0.25))
    assert task["state"] == "SUCCESS", task
    sent = app.AsyncResult(task["id"]).get(timeout=TIMEOUT)
    assert sent and sent[0] <= 2 and len(sent) >= 5, sent


@pytest.mark.parametrize("concurrent_pool", ["threads", "gevent", "eventlet"])
def test_two_runs_of_one_task_at_once_each_show_every_step(app: Any, api: Api, feed: Feed,
                                                            concurrent_pool: str) -> None:
    """Both runs share the task object in the worker's process (threads, green threads): each run
    keeps a throttle of its own, so neither loses reports to the other's (steps 0.25 s apart,
    PROGRESS_INTERVAL 0.1 s: every step is reported)."""
    ids = [send(app, "counting", concurrent_pool, 8, 0.25) for _ in range(2)]
    for task_id in ids:
        assert ended(api, task_id)["state"] == "SUCCESS"
    for task_id in ids:
        shown = {t["progress"]["current"] for t in feed.history(task_id) if t.get("progress")}
        assert len(shown) >= 6, (task_id, sorted(shown))  # a tick may merge two steps; never half of them


def test_custom_states_are_shown_by_name(app: Any, api: Api, feed: Feed, pool: str) -> None:
    task_id = send(app, "custom_state", pool, 1.5)
    feed.wait(task_id, lambda t: t["state"] == "DOWNLOADING", what="the DOWNLOADING state")
    assert ended(api, task_id)["state"] == "SUCCESS"


def test_ignored_tasks_end_ignored(app: Any, api: Api, pool: str) -> None:
    assert ended(api, send(app, "ignored", pool))["state"] == "IGNORED"


def test_an_error_whose_text_comes_from_str_shows_that_text(app: Any, api: Api, pool: str) -> None:
    task = ended(api, send(app, "str_only_error", pool))
    assert task["state"] == "FAILURE"
    assert task["error"]["message"] == "the remote end answered 503"
    assert task["error"]["type"].endswith("StrOnlyError")
    task = ended(api, send(app, "unpicklable_error", pool))  # stored by Celery as a wrapper
    assert (task["error"]["type"], task["error"]["message"]) == ("UnpicklableError", "quota exceeded (429)")


def test_a_cancelled_queued_task_never_runs_even_with_no_worker_online(
        conform_stack: Stack, app: Any, api: Api, marks: redis.Redis, pool: str) -> None:
    lonely = f"conform.later.{pool}"
    task_id = send(app, "sleep_quietly", pool, 0.1, queue=lonely)
    api.wait(task_id, lambda t: True, what="the queued task to be listed")
    assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 202
    worker = start_pool_worker(conform_stack, pool, name=f"late-{pool}", queues=lonely)
    try:
        task = ended(api, task_id)
        assert task["state"] == "REVOKED"
        time.sleep(1)
        assert not marks.exists(f"conform:ran:{task_id}")
    finally:
        worker.stop(signal.SIGQUIT)


def test_a_queued_task_of_an_app_without_the_integration_never_runs_once_cancelled(
        conform_stack: Stack, api: Api) -> None:
    # The tutorial's app: its workers know nothing of the revocations kept in Redis, so the
    # dashboard takes the message out of the queue itself.
    sent = conform_stack.python("from mytasks import add; print(add.apply_async((4, 4), queue='plain.later').id)")
    task_id = sent.stdout.strip().splitlines()[-1]
    api.wait(task_id, lambda t: True, what="the queued task to be listed")
    assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 202
    worker = conform_stack.start_worker(app="mytasks", name="plain-late", queues="plain.later", events=False)
    try:
        assert ended(api, task_id)["state"] == "REVOKED"
        time.sleep(2)
        assert task_id not in worker.output() and api.task(task_id)["state"] == "REVOKED"
    finally:
        worker.stop(signal.SIGQUIT)


def test_a_running_task_that_reports_progress_is_cancelled_on_every_pool(
        app: Any, api: Api, feed: Feed, marks: redis.Redis, pool: str) -> None:
    task_id = send(app, "reporting", pool, 60, 0.2)
    feed.wait(task_id, lambda t: t["state"] == "PROGRESS", what="the task to report progress")
    assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 202
    assert ended(api, task_id)["state"] == "REVOKED"
    assert feed.wait(task_id)["state"] == "REVOKED"
    time.sleep(1.5)
    assert not marks.exists(f"conform:finished:{task_id}")
    assert api.task(task_id)["state"] == "REVOKED"


def test_a_running_quiet_task_is_cancelled_where_the_pool_can_and_refused_where_not(
        app: Any, api: Api, feed: Feed, marks: redis.Redis, pool: str) -> None:
    task_id = send(app, "sleep_quietly", pool, 4)
    feed.wait(task_id, lambda t: t["state"] == "STARTED", what="the task to start")
    response = api.post(f"/api/tasks/{task_id}/cancel")
    if pool in TERMINATES:
        assert response.status_code == 202, response.text
        task = ended(api, task_id)
        if task["state"] == "SUCCESS" and pool in ("gevent", "eventlet"):
            # The killed greenlet's task-succeeded (result None) can be taken in before the worker
            # has written REVOKED to the backend; the backend's ending outranks it at the next poll
            # (Reconciler.confirm; POLL_INTERVAL 0.5 s here).
            task = api.wait(task_id, lambda t: t["state"] != "SUCCESS", timeout=3,
                            what="the backend's REVOKED to replace the killed greenlet's SUCCESS")
        assert task["state"] == "REVOKED"
        time.sleep(4.5)
        assert api.task(task_id)["state"] == "REVOKED"
        assert not marks.exists(f"conform:finished:{task_id}")
    else:
        assert response.status_code == 409, response.text
        assert pool in response.json()["error"]
        task = ended(api, task_id)
        assert task["state"] == "SUCCESS" and task["result"] == 4
        assert all(t["state"] != "REVOKED" for t in feed.history(task_id))


def test_any_id_celery_accepts_works_everywhere(app: Any, api: Api, pool: str) -> None:
    task_id = f"reports/2026/{pool} #1?x=%41"
    send(app, "sleep_quietly", pool, 3, task_id=task_id)
    path = quote(task_id, safe="")
    wait_for(lambda: api.get(f"/api/tasks/{path}").status_code == 200, 20, what="the odd id to be readable")
    assert api.task(path)["id"] == task_id
    response = api.post(f"/api/tasks/{path}/cancel")
    assert response.status_code in (202, 409), response.text  # 409 where the pool cannot stop it
    assert api.wait(path, lambda t: t["state"] in ENDED)["id"] == task_id
    assert task_id in {t["id"] for t in api.tasks(limit=200)}
    for tricky in (f"job-{pool}/result", f"job-{pool}/cancel"):  # ids that end like a route
        send(app, "add", pool, 1, 2, task_id=tricky)
        readable = quote(tricky, safe="")
        assert api.wait(readable, lambda t: t["state"] in ENDED)["id"] == tricky
        assert api.get(f"/api/tasks/{readable}/result").json()["result"] == 3


def test_huge_results_travel_as_previews(app: Any, api: Api, feed: Feed, pool: str) -> None:
    ids = [send(app, "huge_result", pool, 8) for _ in range(2)]
    for task_id in ids:
        task = feed.wait(task_id)
        assert task["state"] == "SUCCESS" and task["result_truncated"] is True
        assert len(str(task["result"])) < 10_000
    listing = api.get("/api/tasks", params={"limit": 100})
    assert len(listing.content) < 500_000
    full = api.get(f"/api/tasks/{ids[0]}/result")
    assert full.status_code == 200 and len(full.json()["result"]) == 8 * 1024 * 1024


def test_a_task_that_could_not_be_sent_is_never_shown(app: Any, api: Api, feed: Feed, pool: str) -> None:
    from kombu.exceptions import EncodeError

    with pytest.raises(EncodeError):
        app.tasks["conform.add"].apply_async((object(), 1), queue=queue(pool), task_id=f"never-{pool}")
    sent = send(app, "add", pool, 1, 1)  # sent after it: once this is shown, the other would be too
    feed.wait(sent)
    assert api.get(f"/api/tasks/never-{pool}").status_code == 404
    assert api.post(f"/api/tasks/never-{pool}/cancel").status_code == 404
    assert feed.history(f"never-{pool}") == []


def test_what_events_said_is_not_erased_by_the_backend(app: Any, api: Api, pool: str) -> None:
    task_id = send(app, "add", pool, 20, 22)
    task = ended(api, task_id)
    time.sleep(2.5)  # a few reconciliations against a backend without extended results
    assert api.task(task_id)["worker"] == task["worker"] is not None


def test_a_retry_is_shown_then_the_next_attempt(app: Any, api: Api, feed: Feed, pool: str) -> None:
    task_id = send(app, "retry_once", pool)
    task = ended(api, task_id)
    assert (task["state"], task["result"]) == ("SUCCESS", "second attempt")
    assert "RETRY" in feed.states(task_id)
    feed.check_contract()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pool" in metafunc.fixturenames:
        metafunc.parametrize("pool", POOLS)


def test_an_amqp_broker_is_refused_with_one_sentence(tmp_path: Any) -> None:
    (tmp_path / "rabbit.py").write_text(
        "from celery import Celery\n"
        "app = Celery('rabbit', broker='amqp://guest@localhost//', backend='redis://localhost:6379/0')\n")
    env = {**os.environ, "CELERY_APP": "rabbit", "PYTHONPATH": str(tmp_path), "HOST": "127.0.0.1"}
    done = subprocess.run([sys.executable, "serve.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("web: Celery app 'rabbit' uses broker scheme amqp://") and "Traceback" not in done.stderr
