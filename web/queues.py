"""The broker's queues as the dashboard reads them: the task messages waiting in kombu's Redis
lists (and taken but not acknowledged), and taking a waiting one out.

Users run their workers as the tutorial does and send with default settings (no
`task_send_sent_event`): a waiting task then sends no event at all. This module reads what the
broker holds; it knows kombu's Redis transport, and nothing of Flask.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from celery_dashboard import connections

log = logging.getLogger(__name__)

# kombu's Redis transport: a queue is the list named after it, plus one list per priority step
# above 0 named "<queue><sep><step>" (Channel._q_for_pri). Workers BRPOP them in step order, so
# step 0 (the bare name) is served first; producers LPUSH, so index 0 is the newest message.
SEP: str = RedisChannel.sep                      # "\x06\x16"
STEPS: tuple[int, ...] = tuple(PRIORITY_STEPS)   # (0, 3, 6, 9)
MAX_QUEUES = 100          # queues scanned at most (queue_names)
EVENT_EXCHANGES = ("celeryev",)  # Celery's event exchange (celery.events.event_exchange)
MAX_ID = 255              # a longer "task id" is not a Celery task id


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


def depths(client: redis.Redis, queues: list[str], *, sep: str = SEP, steps: Sequence[int] = STEPS,
           prefix: str = "") -> dict[str, dict[str, Any]]:
    """Queue name -> {"depth": messages waiting (every priority list), "oldest": the
    `decode_message` of the message a worker takes last among each list's oldest (None when the
    queue is empty or it is not a task message)}. Two round trips: LLEN of every list, then
    LINDEX -1 (the oldest: producers LPUSH, workers BRPOP) of each non-empty one. Raises
    redis.RedisError when Redis does."""
    keys = [(queue, key) for queue in dict.fromkeys(queues) for key in priority_keys(queue, sep, steps, prefix)]
    found: dict[str, dict[str, Any]] = {queue: {"depth": 0, "oldest": []} for queue in dict.fromkeys(queues)}
    if not keys:
        return found
    with client.pipeline(transaction=False) as pipe:
        for _, key in keys:
            pipe.llen(key)
        lengths = [int(n) for n in pipe.execute()]
    filled = [(queue, key) for (queue, key), n in zip(keys, lengths, strict=True) if n]
    for (queue, _), n in zip(keys, lengths, strict=True):
        found[queue]["depth"] += n
    with client.pipeline(transaction=False) as pipe:
        for _, key in filled:
            pipe.lindex(key, -1)
        tails = pipe.execute() if filled else []
    for (queue, _), raw in zip(filled, tails, strict=True):
        message = decode_message(raw, queue) if raw is not None else None
        if message is not None:
            message["sent"] = _sent(raw)
            found[queue]["oldest"].append(message)
    return found


def _sent(raw: bytes | str) -> str | None:
    """The send time a message carries, ISO 8601 UTC: a `created` or `timestamp` header, or the
    AMQP `timestamp` property some senders set; None without one (Celery sets none)."""
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        properties = envelope.get("properties") or {}
    except (ValueError, TypeError, AttributeError):
        return None
    for value in (headers.get("created"), headers.get("timestamp"), properties.get("timestamp")):
        when = _created(value)
        if when:
            return when
    return None


UNACKED_KEY = "unacked"  # kombu's Redis transport: delivery tag -> [message, exchange, routing key]


def unacked(client: redis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """Tasks whose messages a worker took but has not acknowledged (kombu's Redis transport keeps
    them in the hash `unacked`, `Channel.unacked_key`): a prefetched message of a worker whose
    connection broke, or of a worker that died, is delivered again after the visibility timeout,
    so such a task is still to run. At most `limit` entries are read (HSCAN); never raises for
    one bad entry. Same shape as `decode_message`, with `queue` set to the routing key, and
    `"taken": True` (not a field of the task: web.reconciler reads it and drops it)."""
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
            found[update["id"]] = dict(update, taken=True)
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
        self.taken_whole = True  # the last call read every unacknowledged message (see __call__)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = connections.client(self.broker_url)  # the process's bounded pool
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
        # Event receivers (exchange "celeryev": Flower's, ours, anyone's) and remote control
        # ("*.pidbox") bind queues that are not lists of waiting tasks: never shown as queues.
        bound = [key for key in self.bindings if key.rpartition("_kombu.binding.")[2] not in EVENT_EXCHANGES
                 and not key.endswith(".pidbox")]
        for key in bound:
            pipe.smembers(key)
        for members in pipe.execute():
            for member in members:
                queue = member.decode(errors="replace").rpartition(SEP)[2]
                if queue and not queue.endswith(".pidbox") and not queue.startswith("celeryev."):
                    names[queue] = None
        return list(names)[:MAX_QUEUES]

    def __call__(self) -> tuple[list[dict[str, Any]], bool]:
        waiting = queued(self.client, self.names(), self.limit)
        taken = unacked(self.client, self.limit + 1)  # one more: `limit` of them may be all there are
        self.taken_whole = len(taken) <= self.limit
        return list(waiting) + taken, waiting.read >= waiting.waiting

    def remove(self, task_id: str) -> bool:
        return remove_queued(self.client, self.names(), task_id)

    def depths(self) -> dict[str, dict[str, Any]]:
        """Every known queue's depth and oldest messages (module function `depths`)."""
        return depths(self.client, self.names())


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
