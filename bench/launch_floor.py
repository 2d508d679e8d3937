"""The launch floor, for comparison only: what the required stack costs per launch with nothing of ours.

Flask-SocketIO on eventlet (monkey-patched, served by socketio.run, as serve.py serves the dashboard),
one view that reads the JSON body and calls `steps.apply_async` from tasks.demo: the same Celery app,
the same signals (celery_dashboard's index registration) and the same three Redis commands as
`steps.delay()` from a Python shell. No listener, no pusher, no validation, no sign-in. The launch
step measures it beside POST /api/tasks and `.delay()`: how far the dashboard's own work is from
what Flask-SocketIO on eventlet plus Celery's apply_async cost on this machine.

    python -m bench.launch_floor --port 5098

GET /healthz answers {"ok": true}; POST /api/tasks {"params": {...}} answers 202 {"id", "state"}.
"""
import eventlet  # noqa: I001 - monkey-patching must come before any other import

eventlet.monkey_patch()

import argparse  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

from tasks.demo import steps  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet")


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"ok": True})


@app.post("/api/tasks")
def launch() -> Any:
    body = request.get_json(silent=True) or {}
    sent = steps.apply_async(kwargs=body.get("params") or {})
    return jsonify({"id": sent.id, "state": "PENDING"}), 202


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    socketio.run(app, host=args.host, port=args.port, log_output=False)


if __name__ == "__main__":
    main()
