"""A synthetic Celery worker: publishes real task events to the broker, as workers do.

Two modes, both registering every task in the dashboard's index at "sent" time (as the sending
side does) and storing each result in the result backend before its `task-succeeded` event (as a
worker does), so the dashboard can reconcile whatever the event stream loses:

    python -m bench.storm rate --ids-file IDS --steps 250 --rate 3000
        Celery's own EventDispatcher, paced: every task is sent, received, started, reports
        `--steps` progress events (all tasks in turn) and succeeds.
    python -m bench.storm flood --tasks 10000 --progress 10 --rate 20000 --ids-out IDS
        Kombu messages built and serialized up front, then PUBLISHed through Redis pipelines
        at `--rate` events/s (0: as fast as Redis takes them), 100 tasks in flight at a time.

REDIS_URL selects the broker. Prints one JSON line: events sent, when, at what rate.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

TASK_NAME = "tasks.demo.steps"
HOSTNAME = "bench@synthetic"
KINDS = ("sent", "received", "started", "progress", "succeeded")


def _progress(step: int, steps: int) -> dict[str, Any]:
    return {"current": step, "total": steps, "percent": round(100.0 * step / steps, 1),
            "message": f"step {step} of {steps}"}


def event_fields(kind: str, task_id: str, step: int = 0, steps: int = 1) -> dict[str, Any]:
    """The fields a worker (or, for task-sent, the sending client) puts in each task event."""
    if kind == "sent":
        return {"uuid": task_id, "root_id": task_id, "parent_id": None, "name": TASK_NAME,
                "args": "()", "kwargs": f"{{'steps': {steps}}}", "retries": 0, "eta": None, "expires": None,
                "queue": "celery", "exchange": "", "routing_key": "celery"}
    if kind == "received":
        return {"uuid": task_id, "name": TASK_NAME, "args": "()", "kwargs": f"{{'steps': {steps}}}",
                "root_id": task_id, "parent_id": None, "retries": 0, "eta": None, "expires": None}
    if kind == "started":
        return {"uuid": task_id}
    if kind == "progress":
        return {"uuid": task_id, "progress": _progress(step, steps), "sent": time.time(), "retries": 0}
    if kind == "succeeded":
        return {"uuid": task_id, "result": f"{{'n': {steps}}}", "runtime": 0.5}
    raise ValueError(kind)


def lifecycle(ids: list[str], steps: int, kinds: tuple[str, ...] = KINDS) -> Iterator[tuple[str, str, int]]:
    """(kind, task id, step) for a group of tasks running side by side, progress in turn."""
    for kind in ("sent", "received", "started"):
        if kind in kinds:
            for task_id in ids:
                yield kind, task_id, 0
    if "progress" in kinds:
        for step in range(1, steps + 1):
            for task_id in ids:
                yield "progress", task_id, step
    if "succeeded" in kinds:
        for task_id in ids:
            yield "succeeded", task_id, steps


# ---- rate-controlled, through Celery's EventDispatcher -----------------------------------------

def rate_storm(ids: list[str], steps: int, rate: float, hostname: str = HOSTNAME,
               max_seconds: float = 60.0) -> dict[str, Any]:
    import redis

    from celery_dashboard import index
    from tasks import config
    from tasks.celery_app import celery_app

    client = redis.Redis.from_url(config.REDIS_URL)
    backend = celery_app.backend
    sent = progress_events = 0
    with celery_app.connection_for_write() as connection:
        dispatcher = celery_app.events.Dispatcher(connection, hostname=hostname)
        start_wall, start = time.time(), time.perf_counter()
        deadline = start + max_seconds
        for kind, task_id, step in lifecycle(ids, steps):
            due = start + sent / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now > deadline:
                break
            if kind == "sent":
                index.register(client, task_id, TASK_NAME)
            elif kind == "succeeded":
                backend.store_result(task_id, {"n": steps}, "SUCCESS")
            dispatcher.send(f"task-{kind}", **event_fields(kind, task_id, step, steps))
            sent += 1
            progress_events += kind == "progress"
        elapsed = time.perf_counter() - start
        dispatcher.close()
    return {"mode": "rate", "events": sent, "progress_events": progress_events, "tasks": len(ids),
            "started_at": start_wall, "ended_at": start_wall + elapsed, "seconds": round(elapsed, 3),
            "rate": round(sent / elapsed, 1) if elapsed else None, "target_rate": rate,
            "complete": sent == len(ids) * (steps + 4)}


# ---- pre-serialized, pipelined PUBLISH ---------------------------------------------------------

class Envelope:
    """Builds the exact message kombu's Redis transport publishes for a Celery event."""

    def __init__(self, hostname: str, db: int) -> None:
        from celery.utils.time import utcoffset

        self.hostname = hostname
        self.db = db
        self.utcoffset = utcoffset()
        self.pid = os.getpid()
        self.clock = 0

    def channel(self, kind: str) -> str:
        return f"/{self.db}.celeryev/task.{kind}"

    def message(self, kind: str, fields: dict[str, Any]) -> str:
        self.clock += 1
        body = {"hostname": self.hostname, "utcoffset": self.utcoffset, "pid": self.pid, "clock": self.clock,
                **fields, "timestamp": time.time(), "type": f"task-{kind}"}
        return json.dumps({
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"hostname": self.hostname},
            "properties": {"delivery_mode": 1,
                           "delivery_info": {"exchange": "celeryev", "routing_key": f"task.{kind}"},
                           "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        })


def build_flood(n_tasks: int, progress: int, kinds: tuple[str, ...], hostname: str,
                in_flight: int = 100) -> tuple[list[str], list[tuple[Any, ...]], int]:
    """Every Redis command of the flood, in order: (task ids, commands, number of events)."""
    from celery_dashboard import index
    from tasks import config
    from tasks.celery_app import celery_app

    backend = celery_app.backend
    db = int((config.REDIS_URL.rsplit("/", 1)[-1] or "0").split("?")[0] or 0)
    envelope = Envelope(hostname, db)
    ids = [str(uuid.uuid4()) for _ in range(n_tasks)]
    commands: list[tuple[Any, ...]] = []
    events = 0
    first = next(kind for kind in KINDS if kind in kinds)  # the task is registered before its first event
    for start in range(0, n_tasks, in_flight):
        wave = ids[start:start + in_flight]
        for kind, task_id, step in lifecycle(wave, max(progress, 1), kinds):
            if kind == "progress" and step > progress:
                continue
            if kind == first:
                _, keys, args = index.registration(task_id, TASK_NAME, None, None, time.time())
                commands.append(("register", keys, args))
            if kind == "succeeded":
                meta = backend._get_result_meta({"n": progress}, "SUCCESS", None, None)
                commands.append(("result", backend.get_key_for_task(task_id), backend.encode(meta)))
            commands.append(("publish", envelope.channel(kind),
                             envelope.message(kind, event_fields(kind, task_id, step, max(progress, 1)))))
            events += 1
    return ids, commands, events


def flood(n_tasks: int, progress: int, rate: float, kinds: tuple[str, ...], hostname: str = HOSTNAME,
          chunk: int = 500, max_seconds: float = 120.0,
          on_ready: Callable[[], None] | None = None) -> tuple[list[str], dict[str, Any]]:
    import redis

    from celery_dashboard import index
    from tasks import config
    from tasks.celery_app import celery_app

    prep_start = time.perf_counter()
    ids, commands, events = build_flood(n_tasks, progress, kinds, hostname)
    prepared = time.perf_counter() - prep_start
    client = redis.Redis.from_url(config.REDIS_URL)
    register = client.script_load(index.REGISTER)
    expires = celery_app.backend.expires
    if on_ready:
        on_ready()
    published = 0
    start_wall, start = time.time(), time.perf_counter()
    deadline = start + max_seconds
    for offset in range(0, len(commands), chunk):
        if rate > 0:
            due = start + published / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
        if time.perf_counter() > deadline:
            break
        pipe = client.pipeline(transaction=False)
        for command in commands[offset:offset + chunk]:
            if command[0] == "publish":
                pipe.publish(command[1], command[2])
                published += 1
            elif command[0] == "register":
                pipe.evalsha(register, len(command[1]), *command[1], *command[2])
            else:  # the result backend's write: SET with expiry, then PUBLISH on the key (RedisBackend._set)
                pipe.set(command[1], command[2], ex=expires)
                pipe.publish(command[1], command[2])
        pipe.execute()
    elapsed = time.perf_counter() - start
    return ids, {"mode": "flood", "events": published, "planned_events": events, "tasks": n_tasks,
                 "events_per_task": events // max(n_tasks, 1), "prepare_s": round(prepared, 2),
                 "started_at": start_wall, "ended_at": start_wall + elapsed, "seconds": round(elapsed, 3),
                 "rate": round(published / elapsed, 1) if elapsed else None, "target_rate": rate or "max",
                 "complete": published == events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    rate = sub.add_parser("rate")
    rate.add_argument("--ids-file", required=True, help="JSON list of task ids to run")
    rate.add_argument("--steps", type=int, default=250)
    rate.add_argument("--rate", type=float, default=3000.0, help="events per second")
    rate.add_argument("--max-seconds", type=float, default=60.0)
    rate.add_argument("--hostname", default=HOSTNAME)
    fl = sub.add_parser("flood")
    fl.add_argument("--tasks", type=int, required=True)
    fl.add_argument("--progress", type=int, default=10, help="progress events per task")
    fl.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    fl.add_argument("--kinds", default=",".join(KINDS), help="which task events to send, comma-separated")
    fl.add_argument("--ids-out", help="write the task ids here (JSON)")
    fl.add_argument("--max-seconds", type=float, default=120.0)
    fl.add_argument("--hostname", default=HOSTNAME)
    args = parser.parse_args()
    if args.mode == "rate":
        with open(args.ids_file) as ids_file:
            ids = json.load(ids_file)
        result = rate_storm(ids, args.steps, args.rate, args.hostname, args.max_seconds)
    else:
        kinds = tuple(k for k in args.kinds.split(",") if k)
        unknown = set(kinds) - set(KINDS)
        if unknown:
            parser.error(f"unknown kinds: {sorted(unknown)}")

        def ready() -> None:
            print(json.dumps({"ready": True}), flush=True)

        ids, result = flood(args.tasks, args.progress, args.rate, kinds, args.hostname,
                            max_seconds=args.max_seconds, on_ready=ready)
        if args.ids_out:
            with open(args.ids_out, "w") as out:
                json.dump(ids, out)
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["complete"] else 3)


if __name__ == "__main__":
    main()
