"""The reasonable baseline's web side: Flask-SocketIO with a Redis message queue, relaying what the
worker emits (bench/mq_worker.py) to every connected client, as Flask-SocketIO documents it.

    python -m bench.mq_relay --port 5098      # and a worker: celery -A bench.mq_worker worker -Q bench-mq

POST /api/tasks {"task": "steps", "params": {...}} sends the baseline's `steps` task (202 {"id"});
GET /healthz answers {"listener": {"connected", "events": 0}, "clients": n} like the other relays.
"""
import eventlet  # noqa: I001 - monkey-patching must come before any other import

eventlet.monkey_patch()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

from bench.mq_worker import CHANNEL, celery_app  # noqa: E402
from tasks import config  # noqa: E402

log = logging.getLogger("mq_relay")
app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet", message_queue=config.REDIS_URL, channel=CHANNEL,
                    ping_interval=20, ping_timeout=20)


@app.get("/healthz")
def healthz() -> Any:
    clients = len(socketio.server.eio.sockets) if socketio.server is not None else 0
    return jsonify({"listener": {"connected": True, "events": 0}, "clients": clients})


@app.post("/api/tasks")
def launch() -> Any:
    body = request.get_json(silent=True) or {}
    if body.get("task", "steps") != "steps":
        return jsonify({"error": "only 'steps' is served by this baseline", "field": "task"}), 422
    task_id = str(uuid.uuid4())
    celery_app.send_task("bench.mq_worker.steps", kwargs=body.get("params") or {}, task_id=task_id)
    return jsonify({"id": task_id, "state": "PENDING"}), 202


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("message-queue relay on http://%s:%s", args.host, args.port)
    socketio.run(app, host=args.host, port=args.port, log_output=False)


if __name__ == "__main__":
    main()
