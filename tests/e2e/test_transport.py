"""The page's live transport (static/js/transport.js): it takes deltas, merges them into the task it
holds, and reads a task again when a delta does not apply to what it holds.

The server sends a delta only against the version it pushed last, which the page holds (its
snapshot is taken under the pusher's lock), so a delta that does not apply needs a second web
process or a store that dropped the task. Here such a message is added, in the Socket.IO framing
the server uses, to the page's real connection to the real server (Playwright's WebSocket route
forwards everything else both ways).

A message is added only once the page has upgraded that WebSocket (engine.io's UPGRADE packet, "5",
sent by the page): Socket.IO connects over HTTP long-polling and then probes the WebSocket, and
a message that reaches the page during the probe fails the upgrade and is lost (engine.io-client's
`probe`). Playwright's sync API runs the route's handlers only inside its own calls, so the waits
here poll with `page.wait_for_timeout`, never `time.sleep`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT
from tests.e2e.test_dashboard import Task, expect_live
from tests.support import Stack, wait_for

pytestmark = pytest.mark.usefixtures("eventlet_only")  # page code: the server's async mode cannot change it


class Sockets(list):
    """The page's open Socket.IO WebSockets (a reconnect opens another), those the page has
    upgraded to, and the version of each task the server has sent the page through them (its
    "snapshot" and "tasks" messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}
        self.upgraded: list[WebSocketRoute] = []

    def page_sent(self, ws: WebSocketRoute, message: str | bytes) -> None:
        if message == "5" and ws not in self.upgraded:  # engine.io UPGRADE: the page now uses this WebSocket
            self.upgraded.append(ws)

    def closed(self, ws: WebSocketRoute) -> None:
        for held in (self, self.upgraded):
            if ws in held:
                held.remove(ws)

    def note(self, message: str | bytes) -> None:
        if not isinstance(message, str) or not message.startswith("42"):
            return
        event, *args = json.loads(message[2:])
        data = args[0] if args and isinstance(args[0], dict) else {}
        if event in ("snapshot", "tasks"):
            for task in [*(data.get("tasks") or []), *(data.get("changes") or [])]:
                if isinstance(task, dict) and "version" in task:
                    self.versions[task["id"]] = task["version"]


@pytest.fixture
def routed(browser: Browser, stack: Stack) -> Iterator[tuple[Page, Sockets]]:
    """The dashboard whose Socket.IO connection passes through a route this test can add to."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sockets = Sockets()

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def relay(message: str | bytes) -> None:  # the server's messages, forwarded as they come
            sockets.note(message)
            ws.send(message)

        def forward(message: str | bytes) -> None:  # the page's messages, forwarded as they come
            sockets.page_sent(ws, message)
            server.send(message)

        server.on_message(relay)
        ws.on_message(forward)
        ws.on_close(lambda *_: sockets.closed(ws))  # a reconnect opens another
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/socket\.io/"), route)
    page.goto(stack.url)
    # Upgraded before the test launches anything: every push of its tasks then comes through the
    # route, where `page_holds` sees it (one sent over long-polling during the probe would not be).
    upgraded(page, sockets)
    yield page, sockets
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def in_page(page: Page, check: Any, timeout: float, what: str) -> Any:
    """Poll `check` while Playwright delivers the page's WebSocket messages; TimeoutError naming `what`."""
    return wait_for(check, timeout, interval=0.05, what=what,
                    sleep=lambda seconds: page.wait_for_timeout(seconds * 1000))


def upgraded(page: Page, sockets: Sockets) -> WebSocketRoute:
    """The WebSocket the page has upgraded to: a message added to it reaches the page's Socket.IO."""
    return in_page(page, lambda: sockets.upgraded and sockets.upgraded[-1], 30,
                   "the page to upgrade to a WebSocket")


def page_holds(page: Page, sockets: Sockets, task: dict[str, Any]) -> None:
    """Wait until the server has sent the page `task` at its version (a push within a tick)."""
    in_page(page, lambda: sockets.versions.get(task["id"]) == task["version"], 30,
            f"the page to be sent version {task['version']}")


def pushed(ws: WebSocketRoute, data: dict[str, Any]) -> None:
    """A "tasks" message as the server frames it (engine.io MESSAGE, socket.io EVENT)."""
    ws.send("42" + json.dumps(["tasks", data]))


def ended_task(stack: Stack, name: str = "steps", params: dict[str, Any] | None = None,
               state: str = "SUCCESS") -> dict[str, Any]:
    launched = requests.post(f"{stack.url}/api/tasks", timeout=10, json={
        "task": name, "params": {"steps": 2, "delay": 0} if params is None else params, "duplicate": True}).json()

    def ended() -> dict[str, Any] | None:
        task = requests.get(f"{stack.url}/api/tasks/{launched['id']}", timeout=10).json()
        return task if task["state"] == state else None

    wait_for(ended, 60, what="the task to succeed")
    # An ending is confirmed from the result backend after the event: the version may move once
    # more. The page holds the version that no longer moves (pushed within a tick).
    seen: list[int] = []

    def settled() -> dict[str, Any] | None:
        task = requests.get(f"{stack.url}/api/tasks/{launched['id']}", timeout=10).json()
        seen.append(task["version"])
        return task if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3] else None

    return wait_for(settled, 30, interval=0.5, what="the task's version to settle")


def test_a_delta_at_the_version_held_is_merged_into_the_task(routed: tuple[Page, Sockets], stack: Stack) -> None:
    page, sockets = routed
    expect_live(page)
    task = ended_task(stack)
    row = Task("Stepped job", task["id"])
    expect(row.state(page)).to_have_text("succeeded")
    page_holds(page, sockets, task)  # the settled version may reach the page a tick after the API says it
    held = task["version"]
    pushed(upgraded(page, sockets), {"tasks": [], "changes": [
        {"id": task["id"], "version": held + 1, "base": held, "state": "SUCCESS",
         "progress": {"current": 2, "total": 2, "percent": 100.0, "message": "merged from a delta"}}]})
    expect(row.row(page)).to_contain_text("merged from a delta")
    expect(row.state(page)).to_have_text("succeeded")  # the fields the delta left out are still there
    expect(row.row(page).get_by_text('{"steps":2}', exact=True)).to_be_visible()


def test_a_delta_the_page_cannot_apply_makes_it_read_the_task_again(routed: tuple[Page, Sockets],
                                                                    stack: Stack) -> None:
    page, sockets = routed
    expect_live(page)
    task = ended_task(stack)
    row = Task("Stepped job", task["id"])
    expect(row.state(page)).to_have_text("succeeded")
    held = task["version"]
    # A delta against a version the page never had: applying it would show its fields on a task
    # whose other fields are older; the page reads the task from the server instead. Its base is far
    # past the version read: the backend's confirmation of the ending may still move the page's copy
    # on by one or two, and a base it reached would merge.
    ws = upgraded(page, sockets)
    with page.expect_request(lambda r: r.method == "GET" and r.url.endswith(f"/api/tasks/{task['id']}")) as asked:
        pushed(ws, {"tasks": [], "changes": [
            {"id": task["id"], "version": held + 1001, "base": held + 1000, "state": "SUCCESS",
             "progress": {"current": 1, "total": 2, "percent": 50.0, "message": "not to be shown"}}]})
    assert asked.value.response().status == 200
    expect(row.row(page)).to_contain_text("step 2 of 2")
    expect(row.row(page)).not_to_contain_text("not to be shown")


def test_an_opened_traceback_stays_open_when_the_ending_is_told_again(routed: tuple[Page, Sockets],
                                                                      stack: Stack) -> None:
    """An ending comes twice (the worker's event, then the result backend's record, whose traceback
    may read differently): the row's details are rebuilt, and a traceback the user opened stays open."""
    page, sockets = routed
    expect_live(page)
    task = ended_task(stack, "fail", {"steps": 0, "message": "told twice"}, state="FAILURE")
    row = Task("Failing job", task["id"])
    expect(row.state(page)).to_have_text("failed")
    page_holds(page, sockets, task)
    row.row(page).get_by_text("Traceback", exact=True).click()
    box = row.row(page).get_by_role("region", name=re.compile("^Traceback of Failing job"))
    expect(box).to_be_visible()
    again = dict(task, version=task["version"] + 1000,
                 error=dict(task["error"], traceback=f"{task['error']['traceback']}\n(as the result backend has it)"))
    pushed(upgraded(page, sockets), {"tasks": [again]})
    expect(box).to_contain_text("(as the result backend has it)")
    expect(box).to_be_visible()
