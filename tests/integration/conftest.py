"""Integration helpers: a REST client for the running stack and recording Socket.IO clients."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import socketio

from tests.conftest import ARTIFACTS
from tests.support import Stack, wait_for
from web import lifecycle
from web.records import FIELDS

# Generous: the machine is small and shared, so tasks may run slower than they would alone.
TIMEOUT = 60.0
TERMINAL = lifecycle.TERMINAL
RUNNING = frozenset({"STARTED", "PROGRESS"})
TASK_FIELDS = set(FIELDS)


def created_at(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(task["created"])


def backwards_steps(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The consecutive pairs of task objects one client received that go back: a lower `version`
    (the server's one ordering number per task), or an ending followed by a state that is not one
    (web.lifecycle decides which update may replace which; a client only checks what it sees)."""
    bad = []
    for old, new in zip(history, history[1:], strict=False):
        if new["version"] < old["version"]:
            bad.append((f"{old['state']} v{old['version']}", f"{new['state']} v{new['version']}"))
        elif old["state"] in TERMINAL and new["state"] not in TERMINAL:
            bad.append((old["state"], new["state"]))
    return bad


class Api:
    """The REST API of one web process, as a script would call it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(path), timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url(path), timeout=10, **kwargs)

    def launch(self, task: str, **params: Any) -> dict[str, Any]:
        """POST /api/tasks; check the 202, the task object and its Location; return the object."""
        response = self.post("/api/tasks", json={"task": task, "params": params, "duplicate": True})
        assert response.status_code == 202, response.text
        body = response.json()
        assert TASK_FIELDS <= set(body), f"task object lacks {TASK_FIELDS - set(body)}"
        assert body["state"] == "PENDING" and body["version"] >= 1, body  # the launch answers at once
        location = response.headers.get("Location")
        assert location, "202 without a Location header"
        at = self.http.get(self.url(location), timeout=10)
        assert at.status_code == 200, (location, at.text)
        assert at.json()["id"] == body["id"]
        return body

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def tasks(self, **query: Any) -> list[dict[str, Any]]:
        response = self.get("/api/tasks", params=query)
        assert response.status_code == 200, response.text
        return response.json()["tasks"]

    def wait(self, task_id: str, accept: Callable[[dict[str, Any]], bool] = lambda t: t["state"] in TERMINAL,
             what: str = "", timeout: float = TIMEOUT, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Poll GET /api/tasks/<id> until `accept` holds; every object read goes into `seen`."""

        def check() -> dict[str, Any] | None:
            task = self.task(task_id)
            if seen is not None:
                seen.append(task)
            return task if accept(task) else None

        return wait_for(check, timeout, interval=0.05, what=what or f"task {task_id} to end")


class Feed:
    """A python-socketio client that records every `snapshot` and `tasks` message, in order."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, list[dict[str, Any]]]] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("snapshot", lambda data: self._record("snapshot", data))
        self.client.on("tasks", lambda data: self._record("tasks", data))
        # Recorded with no tasks: a client that was cut off says so when it misses something.
        self.client.on("disconnect", lambda *_: self._record("disconnect", {"tasks": []}))
        self.client.connect(url, transports=["websocket"], wait_timeout=20)

    def _record(self, event: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append((event, list(data["tasks"])))

    def recorded(self) -> list[tuple[str, list[dict[str, Any]]]]:
        with self.lock:
            return list(self.messages)

    def snapshot(self) -> list[dict[str, Any]]:
        """The first message, which must be the snapshot."""
        wait_for(self.recorded, 20, what="a first Socket.IO message")
        event, tasks = self.recorded()[0]
        assert event == "snapshot", f"first message was {event!r}, not the snapshot"
        return tasks

    def batches(self) -> list[list[dict[str, Any]]]:
        return [tasks for event, tasks in self.recorded() if event == "tasks"]

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """Every object this client received for one task, snapshot included, in the order the
        server sent them: by `version`, as the browser orders them (static/js/state.js).

        Not in the order recorded: python-engineio's client runs each message's handler in a
        thread of its own (engineio/client.py, `_trigger_event(..., run_async=True)`), so two
        messages close together may be recorded in either order (seen: a task's SUCCESS
        recorded before its last PROGRESS, so the 'latest' object was the PROGRESS)."""
        found = [task for _, tasks in self.recorded() for task in tasks if task["id"] == task_id]
        return sorted(found, key=lambda task: task.get("version") or 0)  # stable: ties keep their order

    def states(self, task_id: str) -> list[str]:
        return [task["state"] for task in self.history(task_id)]

    def latest(self, task_id: str) -> dict[str, Any] | None:
        history = self.history(task_id)
        return history[-1] if history else None

    def wait(self, task_id: str, accept: Callable[[dict[str, Any]], bool] = lambda t: t["state"] in TERMINAL,
             what: str = "", timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait until the last object received for `task_id` satisfies `accept`."""

        def check() -> dict[str, Any] | None:
            task = self.latest(task_id)
            return task if task is not None and accept(task) else None

        return wait_for(check, timeout, interval=0.05, what=what or f"Socket.IO: task {task_id} to end")

    def check_contract(self, since: int = 0) -> None:
        """What every client must be able to rely on: one object per task per batch, no going back.

        Only messages from number `since` on are checked, and the tasks they name (over their whole
        history), so that a fault is reported once, where it happened.
        """
        messages = self.recorded()[since:]
        for number, (event, batch) in enumerate(messages, start=since):
            if event != "tasks":
                continue
            ids = [task["id"] for task in batch]
            assert len(ids) == len(set(ids)), f"message {number} repeats a task: {ids}"
            for task in batch:
                assert TASK_FIELDS <= set(task), f"pushed object lacks {TASK_FIELDS - set(task)}"
        seen = {task["id"] for _, tasks in messages for task in tasks}
        for task_id in sorted(seen):
            history = self.history(task_id)
            assert not backwards_steps(history), \
                f"task {task_id} went back: {[(t['state'], t.get('retries')) for t in history]}"

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    return Api(stack.url)


@pytest.fixture
def connect(stack: Stack) -> Iterator[Callable[[], Feed]]:
    """Connect recording Socket.IO clients to the web server; all are disconnected afterwards."""
    feeds: list[Feed] = []

    def open_feed() -> Feed:
        feed = Feed(stack.url)
        feeds.append(feed)
        return feed

    yield open_feed
    for feed in feeds:
        feed.close()


@pytest.fixture
def private_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack of this test's own (Redis and the demo worker; the test starts the web): for
    tests that break something."""
    stack = Stack(logdir=ARTIFACTS / "logs" / f"{request.node.name}-{time.strftime('%H%M%S')}")
    try:
        stack.start_redis()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
