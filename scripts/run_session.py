"""Runs `make run`'s processes in a session of their own and stops every one of them however `make run` ends.

Usage: `.venv/bin/python scripts/run_session.py COMMAND [ARG...]` (scripts/run does this).

Why: honcho (the Procfile runner) starts each Procfile line in a new session of its own, and stops
them only when *it* gets SIGINT or SIGTERM and can still print. A closed terminal (SIGHUP) kills
honcho outright and leaves web, worker and Flower running; a closed output pipe (`make run | tee`,
then Ctrl-C) makes honcho's own "SIGINT received" line raise BrokenPipeError and leaves them too.

How: COMMAND starts in a new session (so no terminal signal reaches it or its children directly)
with its stdout and stderr relayed through this process. This process alone hears the terminal, so
it decides when the run ends:

- SIGINT (Ctrl-C), SIGTERM (also what make forwards when it gets SIGTERM) or SIGHUP (terminal closed);
- its own stdout or stderr failing (EPIPE from a closed pipe, EIO from a closed terminal);
- COMMAND exiting by itself (honcho stops everything when one Procfile process exits).

Then every process below this one gets SIGTERM, found by walking the process tree with psutil
(children of children too: prefork pool processes, a Flower started by the web process), plus every
process seen in an earlier walk that has since been orphaned; those still running after STOP_GRACE
seconds, or at once after a second signal, get SIGKILL. psutil checks a process's start time
before signalling it, so a reused pid is never hit. The exit status is COMMAND's when it ended
by itself; otherwise this process ends by the same signal it got (SIGPIPE for a closed output), as
shells and make expect.
"""
from __future__ import annotations

import errno
import os
import pty
import select
import signal
import subprocess
import sys
import time

import psutil

# Seconds between SIGTERM and SIGKILL (honcho's own wait is 5 s; Celery's warm shutdown would wait
# for running tasks for as long as they take).
STOP_GRACE = 5.0
# Seconds between two walks of the process tree while running (to remember processes that a dying
# parent would orphan), and while stopping (to catch processes started during the stop).
WALK_EVERY = 2.0
WALK_EVERY_STOPPING = 0.1
# Seconds after SIGKILL after which this process returns even if something it started remains.
GIVE_UP_AFTER_KILL = 5.0
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Session:
    """COMMAND in its own session; `run()` relays its output and returns how the run ended."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.signals: list[int] = []
        self.known: dict[int, psutil.Process] = {}
        self.output_broken = False
        self.stop_reason: int | str | None = None  # a signal number, "output" or "exited"
        self.kill_at: float | None = None
        self.killed = False

    def run(self) -> int | str:
        """Start COMMAND, relay its output until it and all its processes are gone; the ending's reason.

        Returns the reason: a signal number, "output" (our stdout/stderr failed) or "exited" (COMMAND
        ended by itself; its status is then `self.child.returncode`).
        """
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in ENDING_SIGNALS:
            signal.signal(sig, lambda signum, frame: self.signals.append(signum))
        if sys.stdout.isatty() and sys.stderr.isatty():
            # A terminal of its own (never its controlling one: no signal comes from it), so that
            # honcho still colours its prefixes as it does on a terminal.
            reader, writer = pty.openpty()
            outputs = {"stdout": writer, "stderr": writer}
            relays = {reader: sys.stdout.fileno()}
        else:
            (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
            outputs = {"stdout": out_w, "stderr": err_w}
            relays = {out_r: sys.stdout.fileno(), err_r: sys.stderr.fileno()}
        # stdin from /dev/null: processes left in another session must never read the user's terminal.
        self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True, **outputs)
        for fd in set(outputs.values()):
            os.close(fd)
        me = psutil.Process()
        next_walk = 0.0
        while True:
            timeout = WALK_EVERY_STOPPING if self.stop_reason is not None else WALK_EVERY
            readable, _, _ = select.select([*relays, wake_r], [], [], timeout)
            if wake_r in readable:
                os.read(wake_r, 512)
            for source in readable:
                if source in relays and not self.relay(source, relays[source]):
                    del relays[source]
            while self.signals:
                sig = self.signals.pop(0)
                if self.stop_reason is None:
                    self.begin_stop(sig)
                else:
                    self.kill_all()  # a second Ctrl-C: no more waiting
            if self.output_broken and self.stop_reason is None:
                self.begin_stop("output")
            if self.child.poll() is not None and self.stop_reason is None:
                self.begin_stop("exited")
            now = time.monotonic()
            if now >= next_walk or self.stop_reason is not None:
                self.walk(me)
                next_walk = now + WALK_EVERY
            if self.stop_reason is not None:
                if self.kill_at is not None and now >= self.kill_at and not self.killed:
                    self.kill_all()
                if self.child.poll() is not None and not self.alive() and not relays:
                    return self.stop_reason
                if self.killed and now >= self.kill_at + GIVE_UP_AFTER_KILL:
                    self.child.poll()
                    return self.stop_reason  # a process SIGKILL cannot end (stuck in the kernel)

    def relay(self, source: int, target: int) -> bool:
        """Copy what `source` has to `target` (dropped once a target failed); False at end of file."""
        try:
            data = os.read(source, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        if not self.output_broken:
            try:
                while data:
                    data = data[os.write(target, data):]
            except OSError as exc:  # EPIPE (pipe reader gone), EIO (terminal closed)
                if exc.errno not in (errno.EPIPE, errno.EIO, errno.ENXIO, errno.EBADF):
                    raise
                self.output_broken = True
        return True

    def walk(self, me: psutil.Process) -> None:
        """Remember every process below this one; while stopping, SIGTERM the ones not yet told."""
        try:
            found = me.children(recursive=True)
        except psutil.Error:
            found = []
        for proc in found:
            if proc.pid not in self.known:
                self.known[proc.pid] = proc
                if self.stop_reason is not None:
                    self.send(proc, signal.SIGKILL if self.killed else signal.SIGTERM)

    def begin_stop(self, reason: int | str) -> None:
        """SIGTERM every known process; SIGKILL follows after STOP_GRACE seconds."""
        self.stop_reason = reason
        self.kill_at = time.monotonic() + STOP_GRACE
        self.walk(psutil.Process())
        for proc in list(self.known.values()):
            self.send(proc, signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL every known process still running (after the grace period, or on a second signal)."""
        self.killed = True
        self.walk(psutil.Process())
        for proc in list(self.known.values()):
            self.send(proc, signal.SIGKILL)

    def send(self, proc: psutil.Process, sig: int) -> None:
        try:
            proc.send_signal(sig)  # psutil refuses a pid that now belongs to another process
        except psutil.Error:
            self.known.pop(proc.pid, None)

    def alive(self) -> bool:
        """Whether any known process still runs. A zombie counts as gone, unless other threads of it
        are still ending: the main thread of a multi-threaded process (Flower) can end first, and
        its files, listening sockets included, stay open until the last thread has ended (Linux's
        `delay_group_leader`). Returning then, make run's Flower port still answered (seen in CI)."""
        for pid, proc in list(self.known.items()):
            try:
                if proc.is_running() and (proc.status() != psutil.STATUS_ZOMBIE or proc.num_threads() > 1):
                    return True
            except psutil.Error:
                pass
            del self.known[pid]
        return False


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: run_session.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    session = Session(argv)
    reason = session.run()
    if reason == "exited":
        return session.child.returncode if session.child.returncode >= 0 else 128 - session.child.returncode
    sig = signal.SIGPIPE if reason == "output" else int(reason)
    # End the way the signal would have ended us, so that make and the shell report it as such.
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    return 128 + sig


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
