"""The relays our web process is compared with, started for a step and stopped after it.

- naive: bench/naive_relay.py, one Socket.IO message per Celery event to every client (the strawman);
- message queue: Flask-SocketIO's documented pattern, the worker emitting through a Redis message
  queue (bench/mq_worker.py) and a Flask-SocketIO web process relaying it (bench/mq_relay.py).

Each answers POST /api/tasks and GET /healthz as our web does, so the same clients measure all three.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.harness import Run, listener_events, wait_subscribed
from devstack import BIN, Process, wait_for

NAMES = {"ours": "our web process", "naive": "naive relay (one message per event)",
         "mq": "Flask-SocketIO message queue (worker emits)"}


@dataclass
class Relay:
    """A running relay: its base URL, the pid serving its clients, and the processes to stop."""

    name: str
    url: str
    pid: int
    processes: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


def ours(run: Run) -> Relay:
    return Relay("ours", run.web_url, run.web_pid)


def naive(run: Run, db: int = 0) -> Relay:
    proc, url = run.start_relay("bench.naive_relay", db)
    wait_for(lambda: "listening for Celery events" in proc.output(), 30, what="naive listener")
    base = listener_events(url)
    wait_subscribed(lambda: listener_events(url) > base, 30, "naive listener")
    return Relay("naive", url, proc.pid, [proc])


def message_queue(run: Run, concurrency: int = 4) -> Relay:
    """The baseline's worker (as many processes as ours) and its web process."""
    worker = run.start_process("mq-worker", [str(BIN / "celery"), "-A", "bench.mq_worker", "worker", "-Q",
                                             "bench-mq", f"--concurrency={concurrency}", "--without-mingle",
                                             "--without-gossip", "--loglevel=INFO", "-n", "mq@%h"])
    wait_for(lambda: "ready." in worker.output() or not worker.alive(), 60, what="mq worker ready")
    if not worker.alive():
        raise RuntimeError(f"mq worker exited: {worker.output()[-2000:]}")
    proc, url = run.start_relay("bench.mq_relay")
    return Relay("mq", url, proc.pid, [proc, worker])


def start(run: Run, name: str) -> Relay:
    return {"ours": ours, "naive": naive, "mq": message_queue}[name](run)

