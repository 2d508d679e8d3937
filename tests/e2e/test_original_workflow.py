"""The Celery tutorial's workflow, unchanged, watched in a browser.

A user's module written as the tutorial writes it (tests/userapp/mytasks.py: no dashboard
import, no events setting), its worker started as the tutorial starts it (`celery -A mytasks
worker -l info`: no -E, so the dashboard switches events on itself), and `add.delay(2, 3)` called
from another Python shell. The dashboard (`CELERY_APP=mytasks`), opened beforehand, shows the
task live, with no reload, and shows a task still waiting in a queue as "queued".
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Task, expect_live
from tests.support import Process, Stack, wait_for

TITLE = "mytasks.add"  # no catalog entry: the page names the task as Celery does
# A queued task is found by the broker scan (POLL_INTERVAL, 1 s by default): "within a few seconds".
QUEUED_MS = 10_000
# The dashboard repeats the enable_events broadcast every 5 s; a worker started later gets the next one.
EVENTS_ON_S = 20
# Longer than a reconcile pass (RECONCILE_INTERVAL, 5 s by default), which also trims the index.
A_WHILE_MS = 6_000
# `add` takes milliseconds; generous for a busy two-core machine, short enough to fail in time.
ENDED_MS = 30_000


@pytest.fixture(scope="module")
def stack(async_mode: str) -> Iterator[Stack]:
    """Replaces the session stack for this module: Redis and the web (in each async mode) pointed at
    the user's app, with no worker; each test starts the worker it needs."""
    running = Stack(logdir=ARTIFACTS / "logs" / f"original-workflow-{async_mode}-{time.strftime('%H%M%S')}",
                    env={"CELERY_APP": "mytasks", "ASYNC_MODE": async_mode})
    try:
        running.start_redis()
        running.start_web()
        yield running
    finally:
        running.stop()


def start_worker(stack: Stack, pool: str = "prefork") -> Process:
    """`celery -A mytasks worker -l info` (plus `-P pool`), as the tutorial has it: every worker is
    `celery@<host>`, as a restarted one is. Each logs to a folder of its own, since a log shared
    with an earlier worker would already say "ready." and "enabled by remote"."""
    logdir = stack.logdir
    stack.logdir = logdir / f"worker-{len(stack.workers) + 1}-{pool}"
    stack.logdir.mkdir(parents=True, exist_ok=True)
    try:
        return stack.start_worker(app="mytasks", pool=pool, events=False)
    finally:
        stack.logdir = logdir


def stop_worker(worker: Process) -> None:
    worker.stop()  # SIGTERM: Celery's warm shutdown, as Ctrl+C in the tutorial's terminal


def events_switched_on(worker: Process) -> None:
    """The worker says the dashboard switched its task events on (Celery logs the remote command)."""
    wait_for(lambda: "Events of group {task} enabled by remote" in worker.output(), EVENTS_ON_S,
             what="the dashboard's enable_events broadcast to reach a worker started without -E")


@pytest.fixture(params=["prefork", "solo", "threads"])
def worker(request: pytest.FixtureRequest, stack: Stack, async_mode: str) -> Iterator[Process]:
    """A worker of the pool, running for a while: the dashboard has switched its events on. The
    worker's pool cannot change how the web process pushes: the gevent pass takes prefork only."""
    if async_mode != "eventlet" and request.param != "prefork":
        pytest.skip("each worker pool is checked under eventlet; the gevent pass checks the live transport")
    running = start_worker(stack, request.param)
    events_switched_on(running)
    yield running
    stop_worker(running)


def delay_from_another_shell(stack: Stack, call: str) -> str:
    """Run `from mytasks import add; <call>` in a separate Python process; the task id it sent."""
    return stack.python(f"from mytasks import add; print({call}.id)").stdout.strip()


def test_a_task_delayed_from_another_shell_shows_live_and_succeeds(page: Page, stack: Stack,
                                                                   worker: Process) -> None:
    expect_live(page)
    page.evaluate("window.__sameDocument = true")

    task = Task(TITLE, delay_from_another_shell(stack, "add.delay(2, 3)"))

    expect(task.row(page)).to_be_visible(timeout=ENDED_MS)
    expect(task.row(page).get_by_role("cell").first).to_contain_text(TITLE)
    expect(task.state(page)).to_have_text("succeeded", timeout=ENDED_MS)
    expect(task.row(page).get_by_text("5", exact=True)).to_be_visible()
    expect(task.cancel_button(page)).to_be_hidden()
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    # The worker really ran it (not the dashboard guessing): its own log says so.
    assert f"Task {TITLE}[{task.id}] succeeded" in worker.output()


def test_a_task_sent_to_a_queue_nobody_consumes_shows_queued(page: Page, stack: Stack) -> None:
    """`queue=` names a queue no worker and no configuration knows (Celery creates it on the fly,
    with an exchange of the same name): the scan of the broker's queues finds the task anyway."""
    expect_live(page)
    task = Task(TITLE, delay_from_another_shell(stack, 'add.apply_async((1, 2), queue="nobody")'))

    expect(task.row(page)).to_be_visible(timeout=QUEUED_MS)
    expect(task.state(page)).to_have_text("queued")


@pytest.mark.usefixtures("eventlet_only")
def test_a_task_sent_while_the_worker_is_down_shows_queued_then_succeeds(
        page: Page, open_page: Callable[[], Page], stack: Stack) -> None:
    """Send with no worker running: queued on the page; start the worker: it runs, live."""
    expect_live(page)
    page.evaluate("window.__sameDocument = true")

    task = Task(TITLE, delay_from_another_shell(stack, "add.delay(20, 22)"))
    expect(task.row(page)).to_be_visible(timeout=QUEUED_MS)
    expect(task.state(page)).to_have_text("queued")

    # It waits a while; a page opened now sees it too, still queued.
    page.wait_for_timeout(A_WHILE_MS)
    later = open_page()
    expect_live(later)
    expect(task.state(later)).to_have_text("queued", timeout=QUEUED_MS)

    worker = start_worker(stack)
    try:
        for each in (page, later):
            expect(task.state(each)).to_have_text("succeeded", timeout=ENDED_MS)
            expect(task.row(each).get_by_text("42", exact=True)).to_be_visible()
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
        events_switched_on(worker)  # a worker started later is switched on too
    finally:
        stop_worker(worker)
