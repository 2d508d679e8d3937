"""Child processes with their output in a log file, stopped by their own pid; ports and polling."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Users' Celery apps (`mytasks`, the Celery tutorial's module): importable by every process started here.
USERAPP = ROOT / "tests" / "userapp"


# Ports handed out below the kernel's ephemeral range (Linux: 32768-60999), where no outgoing connection
# takes one: a port chosen here and bound a moment later (by Redis, the web, a second `make run`) is not
# taken meanwhile by some client's connection, of this process or of another test process beside it.
PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port nothing is bound to right now on 127.0.0.1, picked at random from PORTS (falls back to
    one the kernel picks if 50 tries find none)."""
    for _ in range(50):
        port = random.choice(PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "",
             sleep: Callable[[float], object] = time.sleep) -> object:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` after `timeout` seconds.
    `sleep(seconds)` waits between checks (a browser test passes Playwright's, which delivers the
    page's events meanwhile)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling until it works
            last_error = exc
        sleep(interval)
    raise TimeoutError(f"timed out waiting for {what or check!r}: {last_error!r}")


class Process:
    """A child process in a session of its own, its output in logdir/<name>.log; stopped by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # A restart under the same name appends to the same log: read only this process's lines.
        self.offset = self.log.tell()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.signalled: int | None = None  # the signal begin_stop sent

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def begin_stop(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to its process group and return at once (`stop` then waits without sending
        it again: a second SIGTERM would interrupt the web's own stopping)."""
        if self.alive() and self.signalled is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.signalled = sig
            except ProcessLookupError:
                pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send `sig` to its process group (unless `begin_stop` sent it), SIGKILL after `timeout` s."""
        if self.alive():
            try:
                if self.signalled != sig:
                    os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.log.close()
