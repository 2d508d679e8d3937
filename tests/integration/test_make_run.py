"""`make run` (Makefile, scripts/run, scripts/run_session.py, scripts/run-processes) stops everything it
started however it ends: Ctrl-C, SIGTERM to make, a closed terminal (SIGHUP), a closed output pipe."""
from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import signal
import socket
import subprocess
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")

MARK = "MAKE_RUN_TEST_MARK"
# make's own variables from an outer `make test` would reach the inner make (jobserver, overrides).
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def started_by(mark: str, sessions: set[int]) -> dict[int, str]:
    """pid -> command line of every running process of one `make run`: those whose environment carries
    MARK=mark (everything it starts inherits it) and those in `sessions` (redis-server writes its
    title over its environment; it stays in the session of the script that started it)."""
    needle = f"{MARK}={mark}\0".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if needle not in environ.read() and os.getsid(pid) not in sessions:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                found[pid] = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if not found[pid] and len(os.listdir(f"/proc/{pid}/task")) > 1:
                # A zombie whose other threads still end: they hold its files and ports.
                found[pid] = "(main thread ended, other threads still ending)"
        except OSError:  # gone meanwhile
            found.pop(pid, None)
    return {pid: cmd for pid, cmd in found.items() if cmd}  # a zombie has no command line left


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def bindable(port: int) -> bool:
    """Whether a server could listen on `port` now (SO_REUSEADDR, as redis, eventlet and tornado set)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            return False
    return True


class MakeRun:
    """`make run` started as from a terminal: a new session whose controlling terminal is a pty;
    stdout is that terminal, or a pipe read by this test (`make run | tee run.log`)."""

    def __init__(self, ports: dict[str, int], run_dir: Path, stdout_pipe: bool) -> None:
        self.mark = uuid.uuid4().hex
        self.ports = ports
        self.output = bytearray()
        self.sessions: set[int] = set()
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
        env.update({name: str(port) for name, port in ports.items()})
        env.update({MARK: self.mark, "REDIS_URL": "", "RUN_DIR": str(run_dir), "WORKER_CONCURRENCY": "2",
                    "HOST": "127.0.0.1", "FLOWER_ADDRESS": "127.0.0.1", "FLOWER_URL": "", "CELERY_APP": ""})
        self.proc = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=env, stdin=slave, stderr=slave,
            stdout=subprocess.PIPE if stdout_pipe else slave,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.sources = [self.master] + ([self.proc.stdout.fileno()] if stdout_pipe else [])
        self.stop_reading = threading.Event()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        """Drain the terminal and the pipe (a full one would block make run) until told to stop."""
        while not self.stop_reading.is_set() and self.sources:
            readable, _, _ = select.select(self.sources, [], [], 0.1)
            for fd in readable:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if data:
                    self.output += data
                else:
                    self.sources.remove(fd)

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_until_up(self) -> dict[int, str]:
        """Wait for the dashboard, Flower and the worker; the processes then running under make run."""
        def up() -> bool:
            assert self.proc.poll() is None, f"make run exited ({self.proc.returncode}):\n{self.text()[-3000:]}"
            return (requests.get(f"http://127.0.0.1:{self.ports['PORT']}/healthz", timeout=2).status_code == 200
                    and listening(self.ports["FLOWER_PORT"]) and "ready." in self.text())
        wait_for(up, 90, 0.2, what="make run: dashboard, Flower and worker up")
        self.sessions = {os.getsid(pid) for pid in started_by(self.mark, set())}
        return self.processes()

    def processes(self) -> dict[int, str]:
        """What this make run started that still runs (the sessions are known once it was up)."""
        return started_by(self.mark, self.sessions)

    def close_terminal(self) -> None:
        self.stop_reading.set()
        self.reader.join()
        os.close(self.master)

    def close_pipe(self) -> None:
        """The reader of `make run | tee` goes away: its end of the pipe closes."""
        self.stop_reading.set()
        self.reader.join()
        self.proc.stdout.close()
        self.sources = [self.master]
        self.stop_reading.clear()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")  # the terminal turns it into SIGINT to its foreground process group

    def cleanup(self) -> None:
        """After the test: whatever it found, stop make run's leftovers (by their pids) and close."""
        self.stop_reading.set()
        if self.reader.is_alive():
            self.reader.join()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for fd in (self.master,):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """One set of ports for every way of ending: each start proves the previous run freed them."""
    return {"PORT": free_port(), "FLOWER_PORT": free_port(), "REDIS_PORT": free_port()}


def end_with_ctrl_c(run: MakeRun) -> None:
    run.ctrl_c()


def end_with_sigterm(run: MakeRun) -> None:
    os.kill(run.proc.pid, signal.SIGTERM)  # to make alone, as `kill <pid of make>` does


def end_by_closing_the_terminal(run: MakeRun) -> None:
    # The terminal goes away; the whole foreground process group gets SIGHUP (what a shell that
    # gets the hangup passes on to its foreground job, and what the kernel sends when it exits).
    run.close_terminal()
    os.killpg(run.proc.pid, signal.SIGHUP)


def end_with_ctrl_c_after_the_pipe_closed(run: MakeRun) -> None:
    # `make run | tee run.log`, then Ctrl-C: tee dies first, its end of the pipe closes.
    run.close_pipe()
    run.ctrl_c()


WAYS = {
    "ctrl-c": (end_with_ctrl_c, False),
    "sigterm-to-make": (end_with_sigterm, False),
    "terminal-closed-sighup": (end_by_closing_the_terminal, False),
    "pipe-closed-then-ctrl-c": (end_with_ctrl_c_after_the_pipe_closed, True),
}


@pytest.mark.parametrize("way", list(WAYS))
def test_make_run_stops_everything_it_started(way: str, ports: dict[str, int], tmp_path: Path) -> None:
    end, stdout_pipe = WAYS[way]
    for name, port in ports.items():
        assert bindable(port), f"{name} {port} still taken before make run started (an earlier way leaked it)"
    run = MakeRun(ports, tmp_path, stdout_pipe)
    try:
        running = run.wait_until_up()
        commands = list(running.values())
        # What the test tracks is really the whole run: Redis, web, Flower, the worker and its pool.
        assert any(f"redis-server 127.0.0.1:{ports['REDIS_PORT']}" in cmd for cmd in commands), commands
        assert any(cmd.endswith("serve.py") for cmd in commands), commands
        assert any("tasks.flower" in cmd for cmd in commands), commands
        assert sum("celery" in cmd and " worker " in cmd for cmd in commands) >= 3, commands  # main + 2 pool
        if not stdout_pipe:
            assert "\x1b[" in run.text()  # on a terminal, honcho's prefixes are coloured as ever

        ended = time.monotonic()
        end(run)
        try:
            run.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running 30 s after {way}; left: {run.processes()}")
        stopped_in = time.monotonic() - ended

        left = run.processes()
        assert not left, f"after {way}, make run left these running: {left}"
        for name, port in ports.items():
            assert not listening(port), f"{name} {port} still answers after {way}"
            assert bindable(port), f"{name} {port} still taken after {way}: the next make run would fail"
        print(f"{way}: everything stopped {stopped_in:.1f} s after the ending")
    finally:
        run.cleanup()
