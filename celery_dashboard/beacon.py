"""A worker's sign of life beside its event loop: `worker-beacon` events.

Celery's own heartbeat (`worker-heartbeat`) comes from the worker's event loop, which a solo
pool blocks while a task runs: silence from such a worker is not death. This daemon thread of
the worker's main process sends a `worker-beacon` event every BEACON_INTERVAL seconds, even with
the worker's own events off, so a worker busy with a task that sleeps or waits on I/O is not
shown "not responding". It proves life, never death: a task holding the GIL in one C call, or
the CPU under `-P gevent`/`-P eventlet` (where this thread is a greenlet), starves it too.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from celery_dashboard import settings

log = logging.getLogger(__name__)

EVENT = "worker-beacon"


class Beacon(threading.Thread):
    """Sends `worker-beacon` (hostname, pid and timestamp filled by Celery's event dispatcher,
    celery/events/dispatcher.py) for `hostname` every `interval` seconds until stopped."""

    def __init__(self, app: Any, hostname: str, interval: float) -> None:
        super().__init__(name="dashboard-beacon", daemon=True)
        self.app = app
        self.hostname = hostname
        self.interval = interval
        self.stopped = threading.Event()
        self.failing = False

    def send(self) -> None:
        with self.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
            dispatcher.send(EVENT, freq=self.interval, retry=False)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.send()
                self.failing = False
            except Exception as exc:  # noqa: BLE001 - Redis away: the next beacon tries again
                if not self.failing:
                    log.warning("worker beacon not sent: %s", exc)
                self.failing = True

    def stop(self) -> None:
        self.stopped.set()


_beacon: Beacon | None = None


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _beacon
    app, hostname = getattr(sender, "app", None), getattr(sender, "hostname", None)
    if app is None or not hostname or _beacon is not None or settings.BEACON_INTERVAL <= 0:
        return
    _beacon = Beacon(app, hostname, settings.BEACON_INTERVAL)
    _beacon.start()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    global _beacon
    if _beacon is not None:
        _beacon.stop()
        _beacon = None
