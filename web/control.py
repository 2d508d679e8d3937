"""Asking the workers: Celery's remote control (enable_events, ping, inspect, stats, revoke) and the
dashboard's launches, on two bounded connections of its own: one for questions, one for sends.

A worker started without `-E` sends task events only after it is told `enable_events`; a worker
is asked before the dashboard says anything about it. This module knows Celery's control
protocol, and nothing of Flask.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.app.control import Control as CeleryControl
from celery.app.control import flatten_reply
from celery.concurrency import ALIASES
from kombu import Connection, Consumer, Producer
from kombu.pidbox import Mailbox
from kombu.transport import redis as kombu_redis
from kombu.utils.uuid import uuid

log = logging.getLogger(__name__)

MAX_HOSTNAMES = 1000      # hostnames one ping asks about
MAX_TIMEOUT = 10.0        # seconds any one control call may wait for replies
CONNECT_TIMEOUT = 2.0     # seconds to (re)connect to the broker, and for the answer to one command
CLIENT_NAME = "dashboard-control"  # what CLIENT LIST shows for a Control's Redis connections
SENDER_NAME = "dashboard-sender"  # ... and for the one its launches, revokes and enable_events use
# "celery.concurrency.thread:TaskPool" -> "threads"; the first alias wins ("prefork", not "processes").
POOL_NAMES = {path: name for name, path in reversed(ALIASES.items()) if path}
# For a control message's publish. kombu's default (Producer.publish(retry=True) without a
# policy, as kombu.pidbox does) retries forever once the broker it was connected to is gone:
# measured here, `app.control.enable_events()` was still blocked 30 s after Redis was killed.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}

# ---- the connection's transport ----------------------------------------------------------------

class _PublishingChannel(kombu_redis.Channel):
    """kombu's Redis channel, with one client for its commands instead of one made per command.

    kombu's `Channel.conn_or_acquire` builds a `redis.Redis` on the channel's connection pool for
    each publish (kombu/transport/redis.py); redis-py 8 copies some 150 response callbacks into
    each new client, and two of those per launch (the task's LPUSH, its task-sent PUBLISH) were
    ~6% of the web's CPU under a launch load (py-spy). A client holds no connection of its own: it
    takes one from the same pool for each command, so the connections used are the same.
    """

    _publisher: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        if self._publisher is None:
            self._publisher = self._create_client()
        yield self._publisher


class _PublishingTransport(kombu_redis.Transport):
    Channel = _PublishingChannel


class _SendingChannel(kombu_redis.Channel):
    """kombu's Redis channel for a connection that only sends: its commands go through the
    channel's own `client`, on the pool kombu keeps for the BRPOP a consumer would run (the
    channel pings it when it opens). kombu publishes on a second pool, and a sender then held two
    Redis connections where one does."""

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self.client


class _SendingTransport(kombu_redis.Transport):
    Channel = _SendingChannel


def _transport_for(url: str, sending: bool = False) -> Any:
    """The kombu transport the Control connects with: ours for redis:// and rediss:// (one client
    per channel; one Redis connection in all for a connection that only sends); None (kombu's
    choice) for any other broker."""
    if url.split("://", 1)[0] not in ("redis", "rediss"):
        return None
    return _SendingTransport if sending else _PublishingTransport


# ---- Celery's remote control ----------------------------------------------------------------

def _release(connection: Connection | None) -> None:
    if connection is not None:
        try:
            connection.release()
        except Exception:  # noqa: BLE001 - closing a connection that is already gone
            pass


class _BoundedProducer(Producer):
    """A producer whose retried publish gives up (one reconnect) instead of retrying forever."""

    def publish(self, body: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("retry") and not kwargs.get("retry_policy"):
            kwargs["retry_policy"] = dict(RETRY_POLICY)
        return super().publish(body, *args, **kwargs)


class _Mailbox(Mailbox):
    """Celery's control mailbox with one reply queue per `Control`, no shared producer pool, and
    a reply collection that ends at its deadline or when all the replies it asked for are in.

    kombu (kombu.pidbox.Mailbox) names the reply queue after `oid`, which changes with the thread
    (and the greenlet, under eventlet): every thread would declare a reply queue of its own.
    Publishing through Celery's producer pool would take another broker connection from the app's
    pool; the Control's own connection is enough. And kombu's `_collect` waits `timeout` per
    message and counts a late reply to an earlier call toward `limit`: after a worker was busy
    (a solo worker answers its backlog when its task ends) a ping could return before the
    worker's answer to it, and a stream of stale replies could hold a call far past `timeout`.
    """

    fixed_oid = ""

    @property
    def oid(self) -> str:
        return self.fixed_oid

    @contextmanager
    def producer_or_acquire(self, producer: Producer | None = None, channel: Any = None) -> Iterator[Producer]:
        yield producer or _BoundedProducer(channel, auto_declare=False)

    def _collect(self, ticket: str, limit: int | None = None, timeout: float = 1, callback: Any = None,
                 channel: Any = None, accept: Any = None) -> list[dict[str, Any]]:
        """The replies to `ticket` that arrive within `timeout` seconds in all, at most `limit`."""
        chan = channel or self.connection.default_channel
        queue = self.reply_queue
        consumer = Consumer(chan, [queue], accept=self.accept if accept is None else accept, no_ack=True)
        replies: list[dict[str, Any]] = []

        def on_message(body: Any, message: Any) -> None:
            self.clock.adjust(message.headers.get("clock") or 0)
            if message.headers.get("ticket") == ticket:  # anything else answers an earlier call
                if callback:
                    callback(body)
                replies.append(body)

        consumer.register_callback(on_message)
        deadline = time.monotonic() + timeout
        try:
            with consumer:
                while not limit or len(replies) < limit:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        self.connection.drain_events(timeout=left)
                    except TimeoutError:  # socket.timeout: nothing more within the deadline
                        break
            return replies
        finally:
            chan.after_reply_message_received(queue.name)


class _CeleryControl(CeleryControl):
    Mailbox = _Mailbox


# Seconds a launch waits for the control connection while another call uses it.
LAUNCH_WAIT = 5.0


class Control:
    """Celery's remote control (celery.app.control) for one app, bounded and never raising.

    A call waits for replies at most its `timeout` in seconds (capped at MAX_TIMEOUT; kombu's
    BRPOP polls in 1 s steps, so up to about a second more). Reaching the broker costs at most
    `connect_timeout` per step: a broker that refuses connections fails a call at once, one that
    stops answering (frozen, black-holed) within two `connect_timeout` (the send, one reconnect),
    where Celery's own `app.control` retries a publish forever. A failure is logged and answered
    with an "unknown" answer (see each method), and `last_error` says what went wrong with the
    last question (None after one that reached the broker; `send_error` for the last revoke or
    enable_events); the next call reconnects.

    Questions (ping, inspect, stats) are serialized on one kombu connection of the Control's own:
    over Redis it holds two Redis connections (named CLIENT_NAME in CLIENT LIST) however often and
    from however many threads it is used: one for commands and PUBLISH, one for the BRPOP that
    collects replies. What awaits no reply (a launch, a revoke, enable_events) is serialized on a
    second kombu connection, one Redis connection (SENDER_NAME): a question waits its whole
    timeout (1 s) for a worker that does not answer (a solo worker running a task answers none),
    and a launch sharing its connection waited that long (measured with a busy solo worker: 9 of
    140 launches took 200-550 ms, p99 519 ms). Create a Control after any fork.
    """

    def __init__(self, app: Celery, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.app = app
        self.connect_timeout = connect_timeout
        self._control = _CeleryControl(app)
        self._control.mailbox.fixed_oid = uuid()
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._send_lock = threading.Lock()
        self._sender: Connection | None = None
        self.last_error: str | None = None  # the last question's failure (None: it reached the broker)
        self.send_error: str | None = None  # the last revoke's or enable_events' failure

    def _open(self, name: str, sending: bool = False) -> Connection:
        """A kombu connection to the app's broker, bounded by `connect_timeout`, named `name`."""
        return self.app.connection_for_write(
            transport=_transport_for(self.app.conf.broker_write_url or self.app.conf.broker_url or "", sending),
            connect_timeout=self.connect_timeout,
            transport_options={**RETRY_POLICY, "client_name": name,
                               "socket_connect_timeout": self.connect_timeout,
                               "socket_timeout": self.connect_timeout})

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self._open(CLIENT_NAME)
        return self._connection

    def _connect_sender(self) -> Connection:
        if self._sender is None:
            self._sender = self._open(SENDER_NAME, sending=True)
        return self._sender

    def _broadcast(self, command: str, timeout: float, reply: bool = True,
                   destination: list[str] | None = None, limit: int | None = None,
                   arguments: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
        """Celery's `Control.broadcast` on this Control's connection: the replies (a list of
        `{hostname: answer}`, [] when nobody answered or `reply` is False), or None on failure."""
        timeout = min(max(float(timeout), 0.01), MAX_TIMEOUT)
        lock, connect, close = ((self._lock, self._connect, self._close) if reply
                                else (self._send_lock, self._connect_sender, self._close_sender))
        error = "last_error" if reply else "send_error"  # each connection's own: calls on both overlap
        if not lock.acquire(timeout=timeout + self.connect_timeout):
            setattr(self, error, f"{command}: another call still holds the connection")
            log.warning("control %s not sent: %s", command, getattr(self, error))
            return None
        try:
            replies = self._control.broadcast(command, connection=connect(), reply=reply, timeout=timeout,
                                              destination=destination, limit=limit, arguments=arguments)
            setattr(self, error, None)
            return list(replies or [])
        except Exception as exc:  # noqa: BLE001 - any broker or protocol failure is an unknown answer
            setattr(self, error, f"{command}: {exc!r}")
            log.warning("control %s failed: %r", command, exc)
            close()
            return None
        finally:
            lock.release()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        _release(connection)

    def _close_sender(self) -> None:
        connection, self._sender = self._sender, None
        _release(connection)

    def close(self) -> None:
        """Close the Control's broker connections (the next call reconnects)."""
        with self._lock:
            self._close()
        with self._send_lock:
            self._close_sender()

    def enable_events(self) -> None:
        """Tell every worker online now to send task events (celery.worker.control.enable_events,
        what `-E` does at start): the `enable_events` broadcast Flower sends every 5 s
        (flower/events.py `on_enable_events`). No reply is awaited; a worker that starts later
        needs it again, so the caller repeats it. A failure is logged (`send_error`)."""
        self._broadcast("enable_events", timeout=self.connect_timeout, reply=False)

    def apply_async(self, task: Any, **options: Any) -> Any:
        """Send `task` (Celery's `Task.apply_async(**options)`, celery/app/task.py) on this Control's
        sending connection, so that launches hold no broker connections of their own (the
        connection budget), and never wait for a question to the workers; its AsyncResult. Waits up
        to LAUNCH_WAIT s for another send in progress. Raises what Celery raises (the broker
        unreachable: OperationalError), or TimeoutError when the connection stayed busy; the next
        call then reconnects."""
        if not self._send_lock.acquire(timeout=LAUNCH_WAIT):
            raise TimeoutError("the broker connection stayed busy")
        try:
            return task.apply_async(connection=self._connect_sender(), **options)
        except Exception:
            self._close_sender()
            raise
        finally:
            self._send_lock.release()

    def revoke(self, task_id: str, terminate: bool = False, signal: str = "SIGTERM") -> bool:
        """Broadcast Celery's `revoke` for `task_id` (celery.worker.control.revoke: every worker
        online adds it to its revoked set; with `terminate`, the one running it sends `signal` to
        the pool process, or kills its greenlet). No reply is awaited. True when it was sent;
        False when the broker could not be reached (then `send_error` says why)."""
        arguments = {"task_id": task_id, "terminate": terminate, "signal": signal}
        sent = self._broadcast("revoke", timeout=self.connect_timeout, reply=False, arguments=arguments)
        return sent is not None

    def ping(self, hostnames: list[str], timeout: float = 1.0) -> set[str]:
        """The nodes among `hostnames` (Celery node names, "celery@host") that answered a `ping`
        within `timeout` seconds; returns as soon as all have. An empty set when none answered or
        the call failed: then `last_error` is set and the silence means nothing.

        A solo-pool worker answers nothing while it runs a task (its one thread runs the task,
        not the consumer), and a gevent worker nothing while a task holds the CPU: a missing
        pong alone does not prove a worker dead."""
        wanted = list(dict.fromkeys(hostnames))[:MAX_HOSTNAMES]
        if not wanted:
            return set()
        replies = self._broadcast("ping", timeout, destination=wanted, limit=len(wanted)) or []
        return {node for node in flatten_reply(replies) if node in wanted}

    def active(self, timeout: float = 1.0) -> dict[str, set[str]] | None:
        """Hostname -> ids of the tasks the worker holds: running (`inspect().active()`), prefetched
        (`reserved()`) and waiting for their eta or countdown (`scheduled()`); None when a call failed.

        `active` waits `timeout` for every worker that answers; `reserved` and `scheduled` then ask
        only as many replies as `active` got, so the whole call takes about `timeout`, at most
        three times it. A worker that does not answer (see `ping`) is missing from the answer.
        """
        answers = self._broadcast("active", timeout)
        if answers is None:
            return None
        found: dict[str, set[str]] = {}
        for node, tasks in flatten_reply(answers).items():
            found.setdefault(node, set()).update(_task_ids(tasks))
        if not found:
            return found
        for command in ("reserved", "scheduled"):
            replies = self._broadcast(command, timeout, destination=list(found), limit=len(found))
            if replies is None:
                return None
            for node, tasks in flatten_reply(replies).items():
                found.setdefault(node, set()).update(_task_ids(tasks))
        return found

    def stats(self, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
        """Hostname -> {"pool": "prefork", "solo", "threads", "gevent" or "eventlet" (the module of
        `inspect().stats()["pool"]["implementation"]`, e.g. "celery.concurrency.prefork:TaskPool";
        another pool class gives its full path), "pid": the worker's main process id (its
        incarnation), "started": when that process started (epoch seconds, from `uptime`),
        "concurrency": its pool's size (`pool["max-concurrency"]`) or None}. Waits
        `timeout` for workers to answer; {} when none answered or the call
        failed (`last_error`)."""
        replies = self._broadcast("stats", timeout) or []
        found: dict[str, dict[str, Any]] = {}
        for node, stats in flatten_reply(replies).items():
            if not isinstance(stats, dict):
                continue
            pool = stats.get("pool")
            implementation = pool.get("implementation") if isinstance(pool, dict) else None
            pid, uptime = stats.get("pid"), stats.get("uptime")
            size = pool.get("max-concurrency") if isinstance(pool, dict) else None
            found[node] = {"pool": _pool_name(implementation) if isinstance(implementation, str) else None,
                           "pid": pid if isinstance(pid, int) else None,
                           "started": time.time() - uptime if isinstance(uptime, (int, float)) else None,
                           "concurrency": size if isinstance(size, int) and not isinstance(size, bool) else None}
        return found

    def active_queues(self, limit: int | None = None, timeout: float = 1.0) -> dict[str, list[str]] | None:
        """Hostname -> names of the queues the worker consumes (`inspect().active_queues()`);
        returns when `limit` workers answered or after `timeout`; None when the call failed."""
        replies = self._broadcast("active_queues", timeout, limit=limit)
        if replies is None:
            return None
        return {node: [q["name"] for q in queues if isinstance(q, dict) and isinstance(q.get("name"), str)]
                for node, queues in flatten_reply(replies).items() if isinstance(queues, list)}

    def pools(self, timeout: float = 1.0) -> dict[str, str]:
        """Hostname -> the worker's pool short name (see `stats`)."""
        return {node: info["pool"] for node, info in self.stats(timeout).items() if info["pool"]}


def _task_ids(tasks: Any) -> set[str]:
    """The task ids in an inspect answer: `active`/`reserved` give request dicts with `id`,
    `scheduled` gives `{"eta", "priority", "request": {...}}`."""
    ids: set[str] = set()
    for task in tasks if isinstance(tasks, list) else ():
        if isinstance(task, dict):
            request = task.get("request") if isinstance(task.get("request"), dict) else task
            if isinstance(request.get("id"), str):
                ids.add(request["id"])
    return ids


def _pool_name(implementation: str) -> str:
    """"celery.concurrency.prefork:TaskPool" -> "prefork": the name `celery worker -P` knows it by
    (celery.concurrency.ALIASES); a pool from elsewhere keeps its full path."""
    return POOL_NAMES.get(implementation, implementation)
