"""How soon a role change ends the live connections it affects, apart from the CLI's own start-up.

    python -m bench.access_end          # starts redis-server and one web process, 10 rounds
    python -m bench.access_end 20

Each round signs an admin in, opens a Socket.IO connection with the session (websocket, as the page
does), waits for its snapshot and a varied pause (the web checks every second: web.sockets
watch_access), then changes the role, alternately in two ways: `flask --app web users role` as an
operator runs it, and `UserStore.set_role` called here (no process start). The moment the change is
stored is when the access epoch in Redis moves (read every 2 ms). Reported, in seconds
(bench.common.percentiles): the CLI from its start to that moment and to its exit, and from that
moment to the client's `disconnect` event, for each way.

A user who types the CLI command waits for the first and the last figure together.
This is a development tool, not a step of `make bench`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

PASSWORD = "a long enough password"


class Watched:
    """One signed-in connection, with the moment it was closed (time.monotonic)."""

    def __init__(self, url: str, cookies: dict[str, str]) -> None:
        import socketio

        self.closed_at: float | None = None
        self.closed = threading.Event()
        snapshot = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("snapshot", lambda data: snapshot.set())
        self.client.on("disconnect", self._closed)
        self.client.connect(url, headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
                            transports=["websocket"], wait_timeout=20)
        if not snapshot.wait(20):
            raise RuntimeError("no snapshot within 20 s")

    def _closed(self, *_: Any) -> None:
        self.closed_at = time.monotonic()
        self.closed.set()

    def wait_closed(self, timeout: float = 30.0) -> float:
        if not self.closed.wait(timeout):
            raise RuntimeError(f"the connection was not closed within {timeout} s")
        assert self.closed_at is not None
        return self.closed_at


def stored_at(users: Any, before: int, stop: threading.Event, out: dict[str, float]) -> None:
    """Note in out["stored"] when the access epoch first differs from `before` (2 ms steps)."""
    while not stop.is_set():
        if users.access_epoch() != before:
            out["stored"] = time.monotonic()
            return
        time.sleep(0.002)


def measure(stack: Any, url: str, rounds: int) -> dict[str, Any]:
    """{"cli_start_to_stored_s", "cli_start_to_exit_s", "cli_stored_to_closed_s",
    "direct_stored_to_closed_s"}: percentiles of `rounds` // 2 rounds each (seconds)."""
    import redis

    from bench.common import percentiles
    from devstack import BIN, ROOT, sign_in
    from web.users import UserStore

    users = UserStore(redis.Redis.from_url(stack.redis_url))
    found: dict[str, list[float]] = {"cli_start_to_stored_s": [], "cli_start_to_exit_s": [],
                                     "cli_stored_to_closed_s": [], "direct_stored_to_closed_s": []}
    for i in range(rounds):
        watched = Watched(url, dict(sign_in(url, "ada", PASSWORD).cookies))
        time.sleep(0.2 + (i % 7) * 0.13)  # changes at varied points of the web's 1 s check
        role = "operator" if i % 4 < 2 else "admin"
        if i % 2:
            users.set_role("ada", role)
            stored = time.monotonic()
            found["direct_stored_to_closed_s"].append(watched.wait_closed() - stored)
        else:
            out: dict[str, float] = {}
            stop = threading.Event()
            poll = threading.Thread(target=stored_at, args=(users, users.access_epoch(), stop, out))
            poll.start()
            start = time.monotonic()
            subprocess.run([str(BIN / "flask"), "--app", "web", "users", "role", "ada", role], cwd=ROOT,
                           env=stack.env, check=True, capture_output=True)
            exited = time.monotonic()
            closed = watched.wait_closed()
            stop.set()
            poll.join()
            found["cli_start_to_stored_s"].append(out["stored"] - start)
            found["cli_start_to_exit_s"].append(exited - start)
            found["cli_stored_to_closed_s"].append(closed - out["stored"])
    return {name: percentiles(values, 2) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", type=int, nargs="?", default=10)
    args = parser.parse_args()
    from devstack import Stack, add_users

    stack = Stack(env={"AUTH_REQUIRED": "1", "LOGIN_LIMIT": "1000/minute", "LOGIN_LIMIT_PER_ADDRESS": "1000/minute"})
    try:
        stack.start_redis()
        add_users(stack, {"ada": "admin"}, PASSWORD)
        url = stack.start_web()
        print(json.dumps(measure(stack, url, args.rounds)), flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
