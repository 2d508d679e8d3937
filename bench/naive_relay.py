"""The reference naive relay, for comparison only: ONE Socket.IO message per Celery task event.

What a first attempt at a live Celery dashboard looks like: Flask-SocketIO in eventlet mode, a
Celery event Receiver, and every task event emitted at once to every connected client. No store,
no merging, no batching. The payload has the dashboard's shape, so the same clients measure both.

    python -m bench.naive_relay --port 5099

GET /healthz answers {"listener": {"connected", "events"}, "clients": n}; POST /api/tasks
{"task": "steps", "params": {...}} sends a catalog task (only so that the idle-latency
measurement can launch work through either relay the same way).
"""
import eventlet  # noqa: I001 - monkey-patching must come before any other import

eventlet.monkey_patch()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

from tasks.celery_app import celery_app  # noqa: E402

log = logging.getLogger("naive")
STATES = {"task-sent": "PENDING", "task-received": "RECEIVED", "task-started": "STARTED",
          "task-progress": "PROGRESS", "task-succeeded": "SUCCESS", "task-failed": "FAILURE",
          "task-retried": "RETRY", "task-revoked": "REVOKED"}
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet", ping_interval=20, ping_timeout=20)
stats = {"connected": False, "events": 0}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="microseconds")


def task_object(event: dict[str, Any]) -> dict[str, Any] | None:
    state = STATES.get(event.get("type", ""))
    if state is None or not event.get("uuid"):
        return None
    progress = event.get("progress") if state == "PROGRESS" else None
    updated = iso(event["sent"]) if state == "PROGRESS" and event.get("sent") else iso(event.get("timestamp"))
    return {"id": event["uuid"], "state": state, "progress": progress, "updated": updated,
            "finished": iso(event.get("timestamp")) if state in TERMINAL else None}


def on_event(event: dict[str, Any]) -> None:
    stats["events"] += 1
    task = task_object(event)
    if task is not None:
        socketio.emit("tasks", {"tasks": [task]})  # every client, at once, one message per event


def listen() -> None:
    while True:
        try:
            with celery_app.connection_for_read() as connection:
                receiver = celery_app.events.Receiver(connection, handlers={"*": on_event})
                connection.ensure_connection(max_retries=1)
                log.info("listening for Celery events on %s", connection.as_uri())
                stats["connected"] = True
                receiver.capture(limit=None, timeout=None, wakeup=True)
        except Exception as exc:  # noqa: BLE001 - keep listening whatever happens
            stats["connected"] = False
            log.warning("listener disconnected (%s); reconnecting", exc)
            socketio.sleep(0.5)


@app.get("/healthz")
def healthz() -> Any:
    clients = len(socketio.server.eio.sockets) if socketio.server is not None else 0
    return jsonify({"listener": dict(stats), "clients": clients})


@app.post("/api/tasks")
def launch() -> Any:
    body = request.get_json(silent=True) or {}
    task_id = str(uuid.uuid4())
    celery_app.send_task(f"tasks.demo.{body.get('task', 'steps')}", kwargs=body.get("params") or {},
                         task_id=task_id)
    return jsonify({"id": task_id, "state": "PENDING", "updated": iso(time.time())}), 202


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    socketio.start_background_task(listen)
    log.info("naive relay on http://%s:%s", args.host, args.port)
    socketio.run(app, host=args.host, port=args.port, log_output=False)


if __name__ == "__main__":
    main()
