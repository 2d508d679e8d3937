"""The listener on Celery's event stream: turns task events into updates for the relay."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from web import records

log = logging.getLogger(__name__)


class Listener:
    """Consumes Celery events forever, reconnecting with backoff.

    Per-event work is one dict build and one call: Redis cuts a pub/sub subscriber that falls
    behind, so the heavy lifting happens in the relay's tick. Every (re)connect calls
    `on_connect`, which reconciles what the gap may have missed.
    """

    def __init__(self, celery_app: Celery, on_update: Callable[[dict[str, Any]], None],
                 on_connect: Callable[[], Any] | None = None,
                 on_worker: Callable[[dict[str, Any]], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 max_backoff: float = 10.0) -> None:
        self.celery_app = celery_app
        self.on_update = on_update
        self.on_connect = on_connect
        self.on_worker = on_worker
        self.sleep = sleep
        self.max_backoff = max_backoff
        self.running = False
        self.connected = False
        self.events = 0

    def handle(self, event: dict[str, Any]) -> None:
        self.events += 1
        if self.on_worker is not None and "hostname" in event:
            self.on_worker(event)  # every event is a sign of life of the worker that sent it
        if event.get("type", "").startswith("worker-"):
            return
        update = records.from_event(event)
        if update is not None:
            self.on_update(update)

    def run(self) -> None:
        self.running = True
        backoff = 0.5
        while self.running:
            try:
                with self.celery_app.connection_for_read() as connection:
                    receiver = self.celery_app.events.Receiver(connection, handlers={"*": self.handle})
                    connection.ensure_connection(max_retries=1)
                    log.info("listening for Celery events on %s", connection.as_uri())
                    if self.on_connect:
                        self.on_connect()
                    backoff = 0.5
                    self.connected = True
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # the loop must survive Redis going away
                self.connected = False
                log.warning("event listener disconnected (%s); reconnecting in %.1f s", exc, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "events": self.events}

    def stop(self) -> None:
        self.running = False
