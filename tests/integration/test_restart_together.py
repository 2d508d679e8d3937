"""The web process and the worker restarted together, as stopping and starting `make run` does
(SIGTERM to the worker's main process, SIGKILL to it and its pool after its warm shutdown waited
6 s; the web SIGTERMed), the new worker under the same name: nothing wrote how the old worker's
running tasks ended, and they are gone (acknowledged on start, never delivered again). The bug
report: one stayed PROGRESS for over 10 minutes, and a cancel answered 202 and changed nothing.
Right: LOST once the new worker answers without it, and a task cancelled while nobody ran it ends
REVOKED; a cancel of a LOST task is refused with the reason."""
from __future__ import annotations

import os
import signal
import time
import uuid

from tests.integration.conftest import Api
from tests.support import Stack, wait_for

WARM_SHUTDOWN = 6.0  # seconds the worker is given after SIGTERM before SIGKILL
BOUND = 60.0  # generous: the reconciler asks every 5-10 s; the machine is small and shared


def test_tasks_running_when_web_and_worker_restart_together_end_lost_or_revoked(private_stack: Stack,
                                                                               recovery: dict) -> None:
    stack = private_stack
    assert stack.worker is not None
    stack.worker.stop(signal.SIGKILL)  # the fixture's worker: replaced by one named here
    name = f"restarted-{uuid.uuid4().hex[:6]}"
    stack.start_worker(concurrency=2, name=name)
    url = stack.start_web()
    api = Api(url)
    kept, cancelled = (api.launch("long", seconds=302)["id"] for _ in range(2))
    for task_id in (kept, cancelled):
        api.wait(task_id, lambda t: t["state"] == "PROGRESS" and (t.get("progress") or {}).get("current", 0) >= 2,
                 what="the task running and reporting progress")

    stack.kill_web(url, signal.SIGTERM)
    old = stack.workers[-1]
    os.kill(old.pid, signal.SIGTERM)  # warm shutdown: it waits for its tasks ...
    time.sleep(WARM_SHUTDOWN)
    old.stop(signal.SIGKILL)  # ... until SIGKILL, pool processes and all: nothing writes an ending
    url = stack.start_web()
    api = Api(url)
    assert api.task(kept)["state"] == "PROGRESS"

    # Cancelled while no worker runs anything: accepted (it will end REVOKED) ...
    answer = api.post(f"/api/tasks/{cancelled}/cancel")
    assert answer.status_code == 202, answer.text
    stack.start_worker(concurrency=2, name=name)  # the same node name, a new process
    ready = time.monotonic()

    # ... and ends so once the new worker answers without it; the other one is LOST.
    ended = api.wait(cancelled, timeout=BOUND, what="the cancelled task to end")
    assert ended["state"] == "REVOKED", ended
    lost = api.wait(kept, timeout=BOUND, what="the task of the old worker to end")
    assert lost["state"] == "LOST", lost
    assert "restarted" in lost["error"]["message"], lost["error"]
    recovery["web and worker restarted together: both tasks ended, after the new worker was ready"] = \
        time.monotonic() - ready
    # A cancel now says why nothing is left to cancel.
    refused = api.post(f"/api/tasks/{kept}/cancel")
    assert refused.status_code == 409, refused.text
    assert "worker was lost" in refused.json()["error"], refused.text
    # And the new worker counts none of them as running.
    row = wait_for(lambda: next((w for w in api.get("/api/workers").json()["workers"]
                                 if w["hostname"].startswith(f"{name}@")), None), 10, what="the worker's row")
    assert row["status"] == "online" and row["active"] == 0, row
