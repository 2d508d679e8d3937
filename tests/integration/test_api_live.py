"""The REST API against the real stack: every demo task, launched over HTTP, ends as it should."""
from __future__ import annotations

import signal
import socket
from typing import Any

import requests

from tests.integration.conftest import RUNNING, TERMINAL, Api, created_at
from tests.support import BIN, Process, Stack, free_port, wait_for

# How long a launch may take to say that Redis is down: "a few seconds", generously, on a busy machine.
LAUNCH_PATIENCE = 15
DEMOS = {"steps", "primes", "fail", "flaky", "long", "fanout"}


def assert_progress(progress: Any) -> None:
    assert isinstance(progress, dict), progress
    assert {"current", "total", "percent", "message"} <= set(progress), progress
    assert 0 <= progress["percent"] <= 100, progress
    assert isinstance(progress["message"], str)


def test_healthz_is_ok(api: Api) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_catalog_lists_every_demo_task(api: Api) -> None:
    response = api.get("/api/catalog")
    assert response.status_code == 200
    entries = {entry["name"]: entry for entry in response.json()["tasks"]}
    assert DEMOS <= set(entries)
    for name in DEMOS:
        entry = entries[name]
        assert entry["title"] and entry["description"], entry
        assert entry["params"]["type"] == "object", entry


def test_steps_reports_progress_and_succeeds(api: Api) -> None:
    launched = api.launch("steps", steps=3, delay=0.2)
    assert launched["name"] == "tasks.demo.steps"
    seen: list[dict[str, Any]] = []
    done = api.wait(launched["id"], seen=seen)

    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"steps": 3}
    assert done["error"] is None
    assert done["finished"] and done["worker"], done
    assert_progress(done["progress"])
    assert done["progress"]["current"] == done["progress"]["total"] == 3
    assert done["progress"]["percent"] == 100
    assert done["progress"]["message"] == "step 3 of 3"
    for task in seen:
        if task["progress"] is not None:
            assert_progress(task["progress"])
    percents = [t["progress"]["percent"] for t in seen if t["state"] == "PROGRESS"]
    assert percents == sorted(percents), f"progress went back while polling: {percents}"


def test_primes_counts_the_primes(api: Api) -> None:
    launched = api.launch("primes", limit=200_000)
    done = api.wait(launched["id"])
    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"limit": 200_000, "count": 17984, "largest": 199999}
    assert_progress(done["progress"])
    assert done["progress"]["percent"] == 100


def test_fail_ends_in_failure_with_the_traceback(api: Api) -> None:
    launched = api.launch("fail", steps=1, delay=0.1, message="broken on purpose")
    done = api.wait(launched["id"])
    assert done["state"] == "FAILURE", done
    assert done["result"] is None
    error = done["error"]
    assert error["type"] == "ValueError", error
    assert "broken on purpose" in error["message"], error
    assert "raise ValueError" in (error["traceback"] or ""), error
    assert done["finished"], done


def test_flaky_retries_then_succeeds(api: Api) -> None:
    launched = api.launch("flaky", failures=2, countdown=1)
    seen: list[dict[str, Any]] = []
    done = api.wait(launched["id"], seen=seen)
    states = [task["state"] for task in seen]
    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"attempts": 3}
    assert "RETRY" in states, f"RETRY never shown while polling; states seen: {sorted(set(states))}"
    retried = next(task for task in seen if task["state"] == "RETRY")
    assert retried["error"] and retried["error"]["type"] == "FlakyError", retried


def test_long_is_cancelled_and_ends_revoked(api: Api) -> None:
    launched = api.launch("long", seconds=30)
    api.wait(launched["id"], lambda t: t["state"] in RUNNING, what="the long task to start")

    response = api.post(f"/api/tasks/{launched['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["id"] == launched["id"]
    done = api.wait(launched["id"], what="the cancelled task to end")
    assert done["state"] == "REVOKED", done
    assert done["finished"], done

    again = api.post(f"/api/tasks/{launched['id']}/cancel")
    assert again.status_code == 409
    assert "error" in again.json()


def test_cancelling_a_finished_task_is_a_conflict(api: Api) -> None:
    launched = api.launch("steps", steps=1, delay=0)
    api.wait(launched["id"])
    response = api.post(f"/api/tasks/{launched['id']}/cancel")
    assert response.status_code == 409
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "The task has already ended: it succeeded"
    assert api.task(launched["id"])["state"] == "SUCCESS"


def test_fanout_succeeds_and_lists_its_children(api: Api) -> None:
    launched = api.launch("fanout", children=3, steps=3, delay=0.2)
    done = api.wait(launched["id"])
    assert done["state"] == "SUCCESS", done
    assert done["result"] == {"children": 3, "steps": 9}
    assert_progress(done["progress"])
    assert done["progress"]["current"] == done["progress"]["total"] == 9

    def children() -> list[dict[str, Any]]:
        found = [t for t in api.tasks(limit=500) if t["parent"] == launched["id"]]
        return found if len(found) == 3 and all(t["state"] == "SUCCESS" for t in found) else []

    found = wait_for(children, 60, interval=0.2, what="three successful children in GET /api/tasks")
    for child in found:
        assert child["name"] == "tasks.demo.steps"
        assert child["result"] == {"steps": 3}


def test_list_is_newest_first_and_filters_by_state(api: Api) -> None:
    first = api.launch("steps", steps=1, delay=0)
    second = api.launch("steps", steps=1, delay=0)
    api.wait(first["id"])
    api.wait(second["id"])

    listed = api.tasks(limit=500)
    ids = [task["id"] for task in listed]
    assert ids.index(second["id"]) < ids.index(first["id"])
    stamps = [created_at(task) for task in listed if task["created"]]
    assert stamps == sorted(stamps, reverse=True)

    succeeded = api.tasks(state="SUCCESS", limit=500)
    assert succeeded and all(task["state"] == "SUCCESS" for task in succeeded)
    assert {first["id"], second["id"]} <= {task["id"] for task in succeeded}
    assert len(api.tasks(limit=1)) == 1


def test_unknown_task_id_is_404(api: Api) -> None:
    response = api.get("/api/tasks/no-such-task")
    assert response.status_code == 404
    assert "error" in response.json()


def closed_port() -> int:
    """A port nothing listens on (checked)."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_without_redis_health_and_launch_answer_503(stack: Stack) -> None:
    port = free_port()
    env = dict(stack.env, PORT=str(port), HOST="127.0.0.1", REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    web = Process(f"web-noredis-{port}", [str(BIN / "python"), "serve.py"], env, stack.logdir)
    url = f"http://127.0.0.1:{port}"
    try:
        # A list, because a 503 Response is falsy and wait_for waits for something truthy.
        health = wait_for(lambda: [requests.get(f"{url}/healthz", timeout=10)], 30, what="the web without Redis")[0]
        assert health.status_code == 503
        assert health.json()["status"] != "ok"

        # A launch must be answered, not left hanging while the broker is unreachable.
        launch = None
        try:
            launch = requests.post(f"{url}/api/tasks", json={"task": "steps", "params": {"steps": 1}},
                                   timeout=LAUNCH_PATIENCE)
        except requests.Timeout:
            pass
        assert launch is not None, f"POST /api/tasks without Redis got no answer within {LAUNCH_PATIENCE} s"
        assert launch.status_code == 503, launch.text
        assert "error" in launch.json()

        listing = requests.get(f"{url}/api/tasks", timeout=20)
        assert listing.status_code == 503, listing.text
        assert "error" in listing.json()
        assert web.alive()
    finally:
        web.stop(signal.SIGTERM)


def test_all_launched_tasks_have_ended(api: Api) -> None:
    # Nothing launched by this module is left running or queued (which would mean a lost update).
    unfinished = [task for task in api.tasks(limit=500) if task["state"] not in TERMINAL]
    assert not unfinished, unfinished
