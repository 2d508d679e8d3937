"""A worker killed without a goodbye (SIGKILL: no worker-offline event) on the workers API of a real
web process: "not responding" once its heartbeat is late (Celery's freq * 2), "offline" after
WORKER_OFFLINE_AFTER, then gone after WORKER_FORGET_AFTER."""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import requests

from tests.support import Stack, wait_for

HEARTBEAT = 1      # seconds between the worker's heartbeats (--heartbeat-interval): late after 2 s
OFFLINE_AFTER = 6
FORGET_AFTER = 12


def test_a_worker_killed_with_sigkill_goes_not_responding_then_offline_then_leaves_the_list(stack: Stack) -> None:
    web = stack.start_web(env={"WORKER_OFFLINE_AFTER": str(OFFLINE_AFTER), "WORKER_FORGET_AFTER": str(FORGET_AFTER)})
    name = f"killed-{uuid.uuid4().hex[:6]}"
    worker = stack.start_worker(concurrency=1, name=name, queues=f"{name}-q",
                                extra=[f"--heartbeat-interval={HEARTBEAT}"])
    seen: list[tuple[float, str | None]] = []

    def status() -> str | None:
        rows = requests.get(f"{web}/api/workers", timeout=10).json()["workers"]
        found: dict[str, Any] | None = next((w for w in rows if w["hostname"].startswith(f"{name}@")), None)
        value = found["status"] if found else None
        if not seen or seen[-1][1] != value:
            seen.append((time.monotonic(), value))
        return value

    try:
        wait_for(lambda: status() == "online", 30, what="the worker online")
        worker.stop(signal.SIGKILL)  # its whole process group: no worker-offline is ever sent
        killed = time.monotonic()
        wait_for(lambda: status() is None, FORGET_AFTER + 20, interval=0.25, what="the worker to leave the list")
    finally:
        worker.stop(signal.SIGKILL)
        stack.kill_web(web, signal.SIGTERM)
    after = [(round(at - killed, 1), value) for at, value in seen if at >= killed]
    states = [value for _, value in after]
    assert states[-3:] == ["not responding", "offline", None], after
    late, offline, gone = (at for at, _ in after[-3:])
    # Each verdict comes after its bound, not before (later is the polling and the machine's load).
    assert late >= HEARTBEAT * 2 - 1 and late < OFFLINE_AFTER, after
    assert offline >= OFFLINE_AFTER - 1, after
    assert gone >= FORGET_AFTER - 1, after
