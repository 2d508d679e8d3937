"""The listener on Celery's event stream: turns task events into updates for the coalescer."""
from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from celery import Celery

from web import records

log = logging.getLogger(__name__)

# Messages read between two yields to the rest of the process (eventlet switches only on I/O
# that would block, and a busy subscription never blocks).
YIELD_EVERY = 100
# While connected, a listener writes the time (epoch seconds) to this key every BEAT_EVERY s: a web
# process that starts reads it, and looks in the result backend for the tasks that ran since (see
# `Listener.run`). Any web process's listener keeps it: the gap is the time none listened.
HEARTBEAT_KEY = "dashboard:listened"
BEAT_EVERY = 5.0


def _loads(text: bytes | str) -> Any:
    """JSON text's value: orjson's parse (about 3x the standard module's speed on Celery's event
    messages), or the standard module's where orjson refuses what Python's json writes and reads
    (NaN or Infinity, which kombu's json.dumps sends; a lone surrogate escape). Raises ValueError
    (json.JSONDecodeError) for text that is not JSON. orjson reads an integer past 64 bits as a
    float: in an event that can only be a progress value, shown as a percentage."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode(raw: bytes | str) -> list[dict[str, Any]]:
    """The Celery events in a kombu message on Redis pub/sub (JSON only). A worker sends its own
    task events in batches (a list body, routing key `task.multi`); a task's process sends one.
    Raises ValueError for a message that is not JSON or whose body is not base64 as it says."""
    envelope = _loads(raw)
    if not isinstance(envelope, dict) or envelope.get("content-type") != "application/json":
        return []  # the project's Celery speaks JSON only; anything else is not ours to read
    body = envelope.get("body", "")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = binascii.a2b_base64(body)
    events = _loads(body)
    return [e for e in (events if isinstance(events, list) else [events]) if isinstance(e, dict)]


class Listener:
    """Consumes Celery events forever, reconnecting with backoff.

    It subscribes to the events' pub/sub channels itself (what Celery's event receiver does, less
    its per-event bookkeeping) so that per-event work stays a few microseconds: Redis cuts a
    subscriber that falls behind. The heavy lifting happens in the pusher's tick. Every
    (re)connect calls `on_connect`, which reconciles what the gap may have missed.
    """

    def __init__(self, celery_app: Celery, on_update: Callable[[dict[str, Any]], None],
                 on_connect: Callable[[], Any] | None = None,
                 on_worker: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 max_backoff: float = 10.0, commands: redis.Redis | None = None) -> None:
        self.celery_app = celery_app
        self.on_update = on_update
        self.on_connect = on_connect
        self.on_worker = on_worker
        self.sleep = sleep
        self.max_backoff = max_backoff
        self.running = False
        self.connected = False
        self.events = 0
        self.client: redis.Redis | None = None
        # The heartbeat's client: the process's shared one (serve.py: the store's), so that the beat
        # opens no connection of its own (a Heroku mini Redis allows 20 clients in all); else the
        # subscription's client, whose pool then opens a second connection.
        self.commands = commands
        self.numbering = records.Numbering()  # the attempt of events that name none
        self.cut_at: float | None = None  # when the connection was lost (epoch seconds), until reconnected
        self.beaten = 0.0

    def handle(self, event: dict[str, Any]) -> None:
        self.events += 1
        if self.on_worker is not None and "hostname" in event:
            # Every event is a sign of life of the worker that sent it; its time comes back on
            # the web's clock (web.workers).
            event = self.on_worker(event)
        if event.get("type", "").startswith("worker-"):
            return
        update = records.from_event(self.numbering.number(event))
        if update is not None:
            self.on_update(update)

    def subscribe(self) -> Any:
        """A pub/sub connection subscribed to every Celery event channel of the broker's database.

        The client is kept (self.client) while its subscription is read: redis-py closes a client's
        connection pool when the client is garbage-collected (`Redis.__del__`), which cut the
        subscription within seconds wherever a collection ran (seen with eventlet and rediss://)."""
        self.client = client = redis.Redis.from_url(self.celery_app.conf.broker_url, socket_connect_timeout=3,
                                                    health_check_interval=15, client_name="dashboard-listener")
        db = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        # kombu's Redis transport publishes fanout exchanges to "/<db>.<exchange>/<routing key>".
        pubsub.psubscribe(f"/{db}.{self.celery_app.conf.event_exchange}/*")
        kwargs = client.connection_pool.connection_kwargs
        log.info("listening for Celery events on %s:%s/%s", kwargs.get("host"), kwargs.get("port"), db)
        return pubsub

    def gap_start(self) -> float | None:
        """Since when events may have been missed (epoch seconds, the web's clock), or None: when
        this listener lost its connection; at its first connect, the last heartbeat any listener of
        this dashboard wrote (HEARTBEAT_KEY; none: a new dashboard, nothing was missed)."""
        if self.cut_at is not None:
            return self.cut_at
        client = self.commands or self.client
        try:
            beat = client.get(HEARTBEAT_KEY) if client is not None else None
            return float(beat) if beat else None
        except (ValueError, redis.RedisError):
            return None

    def beat(self) -> None:
        """Write the heartbeat. One that cannot be written (Redis out of memory) is logged, never
        cuts the subscription: events are read on."""
        self.beaten = time.time()
        client = self.commands or self.client
        if client is None:
            return
        try:
            client.set(HEARTBEAT_KEY, repr(self.beaten), ex=30 * 86400)
        except redis.ResponseError as exc:
            log.warning("listener heartbeat not written: %s", exc)

    def run(self) -> None:
        """Read events until `stop`, reconnecting with a backoff. Each (re)connect calls
        `on_connect(since)` with `gap_start()`: what the gap may have missed is reconciled from the
        result backend, tasks the dashboard never heard of included (web.reconciler.Reconciler.recover)."""
        self.running = True
        backoff = 0.5
        while self.running:
            pubsub = None
            try:
                pubsub = self.subscribe()
                # A gap may have lost a task-received: an attempt number from before it could be stale.
                self.numbering = records.Numbering()
                if self.on_connect:
                    self.on_connect(self.gap_start())
                self.cut_at = None
                self.beat()
                backoff = 0.5
                self.connected = True
                since_yield = 0
                while self.running:
                    if time.time() - self.beaten >= BEAT_EVERY:
                        self.beat()
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "pmessage":
                        continue
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:  # a flood must not starve pushes and HTTP
                        since_yield = 0
                        self.sleep(0)
                    try:
                        events = decode(message["data"])
                    except Exception as exc:  # one malformed message must not cut the stream
                        log.warning("ignored a malformed event message: %r", exc)
                        continue
                    for event in events:  # (a task.multi message holds many: one bad one drops itself)
                        try:
                            self.handle(event)
                        except Exception as exc:  # noqa: BLE001 - nor one malformed event the rest
                            log.warning("ignored a malformed event: %r", exc)
            except Exception as exc:  # the loop must survive Redis going away
                if self.connected and self.cut_at is None:
                    self.cut_at = time.time()
                self.connected = False
                log.warning("event listener disconnected (%s); reconnecting in %.1f s", exc, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                for closable in (pubsub, self.client):
                    try:
                        if closable is not None:
                            closable.close()
                    except Exception:  # noqa: BLE001 - closing a connection that is already gone
                        pass
                self.client = None

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "events": self.events}

    def stop(self) -> None:
        self.running = False
