"""Asking the broker and the workers: the task messages waiting in Redis, and Celery's remote control.

Users run their workers as the tutorial does (no `-E`) and send with default settings (no
`task_send_sent_event`): a waiting task then sends no event at all, and a running one sends task
events only after a worker is told `enable_events`. This module reads what the broker holds and
asks the workers directly; it knows kombu's Redis transport and Celery's control protocol, and
nothing of Flask.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from celery.app.control import Control as CeleryControl
from celery.app.control import flatten_reply
from celery.concurrency import ALIASES
from kombu import Connection, Consumer, Producer
from kombu.pidbox import Mailbox
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.uuid import uuid

log = logging.getLogger(__name__)

# kombu's Redis transport: a queue is the list named after it, plus one list per priority step
# above 0 named "<queue><sep><step>" (Channel._q_for_pri). Workers BRPOP them in step order, so
# step 0 (the bare name) is served first; producers LPUSH, so index 0 is the newest message.
SEP: str = RedisChannel.sep                      # "\x06\x16"
STEPS: tuple[int, ...] = tuple(PRIORITY_STEPS)   # (0, 3, 6, 9)
MAX_QUEUES = 100          # queues scanned at most (queue_names)
MAX_ID = 255              # a longer "task id" is not a Celery task id
MAX_HOSTNAMES = 1000      # hostnames one ping asks about
MAX_TIMEOUT = 10.0        # seconds any one control call may wait for replies
CONNECT_TIMEOUT = 2.0     # seconds to (re)connect to the broker, and for the answer to one command
CLIENT_NAME = "dashboard-control"  # what CLIENT LIST shows for a Control's Redis connections
# "celery.concurrency.thread:TaskPool" -> "threads"; the first alias wins ("prefork", not "processes").
POOL_NAMES = {path: name for name, path in reversed(ALIASES.items()) if path}
# For a control message's publish. kombu's default (Producer.publish(retry=True) without a
# policy, as kombu.pidbox does) retries forever once the broker it was connected to is gone:
# measured here, `app.control.enable_events()` was still blocked 30 s after Redis was killed.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


# ---- the task messages waiting in the broker ------------------------------------------------

class QueuedTasks(list):
    """The list `queued` returns, with what it could not show.

    `waiting`: messages the lists held when counted (LLEN); `read`: messages read (LRANGE);
    `skipped`: messages read that were not a task message kombu's JSON envelope describes.
    `len(self) < waiting` means the answer was cut at `limit` (or repeated ids were merged).
    """

    def __init__(self, tasks: Iterable[dict[str, Any]] = (), waiting: int = 0, read: int = 0,
                 skipped: int = 0) -> None:
        super().__init__(tasks)
        self.waiting = waiting
        self.read = read
        self.skipped = skipped


def priority_keys(queue: str, sep: str = SEP, steps: Sequence[int] = STEPS, prefix: str = "") -> list[str]:
    """The Redis lists holding `queue`'s messages, in the order a worker takes from them.

    kombu.transport.redis.Channel._q_for_pri: step 0 is the bare queue name, step n > 0 is
    `f"{queue}{sep}{n}"`. A message with priority p goes to the highest step <= p (Redis serves
    0 first: the reverse of AMQP). `prefix` is the transport's `global_keyprefix`, if set.
    """
    return [f"{prefix}{queue}{sep}{step}" if step else f"{prefix}{queue}" for step in steps]


def _share(lengths: list[int], limit: int) -> list[int]:
    """How many messages to read from each list: all of them if they fit in `limit`, else an
    equal share each, what a short list leaves over going to the longer ones."""
    counts = [0] * len(lengths)
    left, open_ = max(0, limit), [i for i, n in enumerate(lengths) if n > 0]
    while left and open_:
        share = max(1, left // len(open_))
        for i in list(open_):
            take = min(share, lengths[i] - counts[i], left)
            counts[i] += take
            left -= take
            if counts[i] == lengths[i]:
                open_.remove(i)
            if not left:
                break
    return counts


def _created(value: Any) -> str | None:
    """An ISO 8601 UTC time from an epoch number or an ISO string; None for anything else."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            when = datetime.fromtimestamp(float(value), UTC)
        elif isinstance(value, str):
            when = datetime.fromisoformat(value)
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return when.isoformat(timespec="microseconds")


def decode_message(raw: bytes | str, queue: str) -> dict[str, Any] | None:
    """The dashboard update for one message of kombu's Redis transport, or None if it is not a
    Celery task message. Never raises.

    The envelope (kombu.transport.virtual.Channel.prepare_message, stored as JSON by the Redis
    transport) is `{"body", "content-type", "content-encoding", "headers", "properties"}`.
    Celery's protocol 2 (the default since 4.0) puts the task in the headers: `id`, `task`,
    `parent_id`, `retries`, `eta`, `expires`, `argsrepr`, `kwargsrepr` (celery.app.amqp
    as_task_v2), so the body is never decoded and its serializer does not matter. Protocol 1 puts
    them in the body, a JSON dict (base64 when `properties.body_encoding` says so).

    Returns `{"id", "name", "state": "PENDING", "parent", "retries", "created", "queue"}`;
    `created` is ISO 8601 UTC from a `created` header (epoch seconds or ISO) and None without
    one: Celery's headers carry no send time (`eta` is when it may run, not when it was sent).
    """
    try:
        envelope = json.loads(raw)
    except (ValueError, TypeError):  # pickle, or anything that is not kombu's Redis envelope
        return None
    if not isinstance(envelope, dict):
        return None
    headers = envelope.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    fields = headers
    if "task" not in headers:  # protocol 1: the task is the body
        fields = _body_v1(envelope)
    task_id, name = fields.get("id"), fields.get("task")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_ID or not isinstance(name, str):
        return None
    parent = fields.get("parent_id")
    retries = fields.get("retries")
    return {
        "id": task_id,
        "name": name,
        "state": "PENDING",
        "parent": parent if isinstance(parent, str) and parent != task_id else None,
        "retries": retries if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0 else 0,
        "created": _created(headers.get("created")),
        "queue": queue,
    }


def _body_v1(envelope: dict[str, Any]) -> dict[str, Any]:
    """A protocol 1 task body (a JSON dict), or {} for any other body."""
    if envelope.get("content-type") != "application/json":
        return {}
    body = envelope.get("body")
    properties = envelope.get("properties")
    try:
        if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
            body = base64.b64decode(body or "", validate=True)
        decoded = json.loads(body) if isinstance(body, (str, bytes)) else None
    except (ValueError, TypeError, binascii.Error):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def queued(client: redis.Redis, queues: list[str], limit: int = 1000, *, sep: str = SEP,
           steps: Sequence[int] = STEPS, prefix: str = "") -> QueuedTasks:
    """The task messages waiting in the broker's Redis lists of `queues`, as dashboard updates.

    Two round trips: LLEN of every list (`priority_keys` of each queue), then LRANGE of the
    newest messages of each, at most `limit` in total (shared out across the lists by `_share`).
    Each list is read newest first; the lists follow in `queues` order and, within a queue, in
    the order a worker serves them. Protocol 2 messages carry no send time to order them by.

    Each item is `decode_message`'s `{"id", "name", "state": "PENDING", "parent", "retries",
    "created", "queue"}`. A message that is not a task (not JSON, or no task headers) is skipped
    and counted in `.skipped`; a task id seen twice (a retry sent again) appears once, with its
    highest `retries`. A message a worker has already taken is not here: it is in the worker's
    memory (`Control.active`) and in kombu's `unacked` hash.

    `sep`, `steps` and `prefix` are the transport options `sep`, `priority_steps` and
    `global_keyprefix` (kombu defaults when not set). Raises redis.RedisError when Redis does.
    """
    keys = [(queue, key) for queue in dict.fromkeys(queues) for key in priority_keys(queue, sep, steps, prefix)]
    if not keys or limit <= 0:
        return QueuedTasks()
    with client.pipeline(transaction=False) as pipe:
        for _, key in keys:
            pipe.llen(key)
        lengths = [int(n) for n in pipe.execute()]
    counts = _share(lengths, limit)
    with client.pipeline(transaction=False) as pipe:
        reading = [(queue, key, n) for (queue, key), n in zip(keys, counts, strict=True) if n]
        for _, key, n in reading:
            pipe.lrange(key, 0, n - 1)
        chunks = pipe.execute() if reading else []
    tasks: dict[str, dict[str, Any]] = {}
    read = skipped = 0
    for (queue, _, _), messages in zip(reading, chunks, strict=True):
        for raw in messages:
            read += 1
            task = decode_message(raw, queue)
            if task is None:
                skipped += 1
            elif task["id"] not in tasks or task["retries"] > tasks[task["id"]]["retries"]:
                tasks[task["id"]] = task
    if skipped:
        log.info("skipped %d messages in queues %s that are not Celery task messages", skipped, queues)
    return QueuedTasks(tasks.values(), waiting=sum(lengths), read=read, skipped=skipped)


UNACKED_KEY = "unacked"  # kombu's Redis transport: delivery tag -> [message, exchange, routing key]


def unacked(client: redis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """Tasks whose messages a worker took but has not acknowledged (kombu's Redis transport keeps
    them in the hash `unacked`, `Channel.unacked_key`): a prefetched message of a worker whose
    connection broke, or of a worker that died, is delivered again after the visibility timeout,
    so such a task is still to run. At most `limit` entries are read (HSCAN); never raises for
    one bad entry. Same shape as `decode_message`, with `queue` set to the routing key."""
    found: dict[str, dict[str, Any]] = {}
    for _, value in client.hscan_iter(UNACKED_KEY, count=min(limit, 1000)):
        if len(found) >= limit:
            break
        try:
            message, _, routing_key = json.loads(value)
            update = decode_message(json.dumps(message), str(routing_key))
        except (ValueError, TypeError):
            continue
        if update is not None:
            found[update["id"]] = update
    return list(found.values())


def remove_queued(client: redis.Redis, queues: list[str], task_id: str, limit: int = 10_000, *,
                  sep: str = SEP, steps: Sequence[int] = STEPS, prefix: str = "") -> bool:
    """Take the message of `task_id` out of the broker's lists of `queues` (LREM of its exact
    bytes), so no worker can ever receive it, whatever its code. True when it was there. Reads at
    most `limit` messages per list; a worker that took the message a moment before wins."""
    for queue in queues:
        for key in priority_keys(queue, sep, steps, prefix):
            for raw in client.lrange(key, 0, limit - 1):
                update = decode_message(raw, queue)
                if update is not None and update["id"] == task_id and client.lrem(key, 1, raw):
                    return True
    return False


class Queues:
    """The broker's queues as the dashboard reads them: `()` gives (tasks waiting or taken but not
    acknowledged, whether that is all of them); `remove(task_id)` takes a waiting task out.

    Reads the apps' configured queues plus every queue declared on the broker: kombu's Redis
    transport keeps each exchange's bindings in a set `_kombu.binding.<exchange>` (members
    `routing_key<sep>pattern<sep>queue`), and a queue Celery creates on demand (`queue=` on a send,
    `-Q` on a worker) gets an exchange of its own name. Those keys are found with SCAN, a bounded
    number of steps per read, so a large keyspace costs little each time. The Redis connection
    is opened on first use."""

    SCAN_STEPS = 5  # SCAN calls (1,000 keys each) per read, looking for bindings

    def __init__(self, broker_url: str, configured: list[str], limit: int = 1000) -> None:
        self.broker_url = broker_url
        self.configured = configured
        self.limit = limit
        self.bindings: dict[str, None] = {}
        self.cursor = 0
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.broker_url, socket_timeout=5, socket_connect_timeout=3)
        return self._client

    def names(self) -> list[str]:
        """The queues to read: configured ones, then those found bound on the broker."""
        client = self.client
        for _ in range(self.SCAN_STEPS):
            self.cursor, keys = client.scan(self.cursor, match="_kombu.binding.*", count=1000)
            for key in keys:
                if len(self.bindings) < MAX_QUEUES:
                    self.bindings[key.decode(errors="replace")] = None
            if self.cursor == 0:
                break
        names = dict.fromkeys(self.configured)
        pipe = client.pipeline(transaction=False)
        for key in self.bindings:
            pipe.smembers(key)
        for members in pipe.execute():
            for member in members:
                queue = member.decode(errors="replace").rpartition(SEP)[2]
                if queue and not queue.endswith(".pidbox"):
                    names[queue] = None
        return list(names)[:MAX_QUEUES]

    def __call__(self) -> tuple[list[dict[str, Any]], bool]:
        waiting = queued(self.client, self.names(), self.limit)
        taken = unacked(self.client, self.limit)
        return list(waiting) + taken, waiting.read >= waiting.waiting

    def remove(self, task_id: str) -> bool:
        return remove_queued(self.client, self.names(), task_id)


def queue_names(apps: list[Celery]) -> list[str]:
    """The queues to scan, at most MAX_QUEUES: each app's `task_default_queue` and the names of
    its `task_queues` (kombu Queue objects, or names), in that order, without repeats.

    Broadcast (fanout) queues are left out: they are not lists of waiting tasks. Queues reached
    only through `task_routes` (with `task_create_missing_queues`) cannot be known from
    configuration; name them in `task_queues`.
    """
    names: dict[str, None] = {}
    for app in apps:
        conf = app.conf
        candidates: list[Any] = [conf.task_default_queue]
        configured = conf.task_queues or ()
        candidates.extend(configured.keys() if isinstance(configured, dict) else configured)
        for queue in candidates:
            exchange = getattr(queue, "exchange", None)
            if getattr(exchange, "type", None) == "fanout":
                continue
            name = queue if isinstance(queue, str) else getattr(queue, "name", None)
            if isinstance(name, str) and name:
                names[name] = None
    if len(names) > MAX_QUEUES:
        log.warning("scanning %d of %d configured queues", MAX_QUEUES, len(names))
    return list(names)[:MAX_QUEUES]


# ---- Celery's remote control ----------------------------------------------------------------

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


class Control:
    """Celery's remote control (celery.app.control) for one app, bounded and never raising.

    A call waits for replies at most its `timeout` in seconds (capped at MAX_TIMEOUT; kombu's
    BRPOP polls in 1 s steps, so up to about a second more). Reaching the broker costs at most
    `connect_timeout` per step: a broker that refuses connections fails a call at once, one that
    stops answering (frozen, black-holed) within two `connect_timeout` (the send, one reconnect),
    where Celery's own `app.control` retries a publish forever. A failure is logged and answered
    with an "unknown" answer (see each method), and `last_error` says what went wrong (None
    after a call that reached the broker); the next call reconnects.

    Calls are serialized on one kombu connection of the Control's own: over Redis it holds two
    Redis connections (named CLIENT_NAME in CLIENT LIST) however often and from however many
    threads it is used: one for commands and PUBLISH, one for the BRPOP that collects replies.
    Create a Control after any fork.
    """

    def __init__(self, app: Celery, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.app = app
        self.connect_timeout = connect_timeout
        self._control = _CeleryControl(app)
        self._control.mailbox.fixed_oid = uuid()
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self.last_error: str | None = None

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self.app.connection_for_write(
                connect_timeout=self.connect_timeout,
                transport_options={**RETRY_POLICY, "client_name": CLIENT_NAME,
                                   "socket_connect_timeout": self.connect_timeout,
                                   "socket_timeout": self.connect_timeout})
        return self._connection

    def _broadcast(self, command: str, timeout: float, reply: bool = True,
                   destination: list[str] | None = None, limit: int | None = None) -> list[dict[str, Any]] | None:
        """Celery's `Control.broadcast` on this Control's connection: the replies (a list of
        `{hostname: answer}`, [] when nobody answered or `reply` is False), or None on failure."""
        timeout = min(max(float(timeout), 0.01), MAX_TIMEOUT)
        if not self._lock.acquire(timeout=timeout + self.connect_timeout):
            self.last_error = f"{command}: another call still holds the connection"
            log.warning("control %s not sent: %s", command, self.last_error)
            return None
        try:
            replies = self._control.broadcast(command, connection=self._connect(), reply=reply, timeout=timeout,
                                              destination=destination, limit=limit)
            self.last_error = None
            return list(replies or [])
        except Exception as exc:  # noqa: BLE001 - any broker or protocol failure is an unknown answer
            self.last_error = f"{command}: {exc!r}"
            log.warning("control %s failed: %r", command, exc)
            self._close()
            return None
        finally:
            self._lock.release()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # noqa: BLE001 - closing a connection that is already gone
                pass

    def close(self) -> None:
        """Close the Control's broker connection (the next call reconnects)."""
        with self._lock:
            self._close()

    def enable_events(self) -> None:
        """Tell every worker online now to send task events (celery.worker.control.enable_events,
        what `-E` does at start): the `enable_events` broadcast Flower sends every 5 s
        (flower/events.py `on_enable_events`). No reply is awaited; a worker that starts later
        needs it again, so the caller repeats it. A failure is logged (`last_error`)."""
        self._broadcast("enable_events", timeout=self.connect_timeout, reply=False)

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
        incarnation), "started": when that process started (epoch seconds, from `uptime`)}. Waits
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
            found[node] = {"pool": _pool_name(implementation) if isinstance(implementation, str) else None,
                           "pid": pid if isinstance(pid, int) else None,
                           "started": time.time() - uptime if isinstance(uptime, (int, float)) else None}
        return found

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
