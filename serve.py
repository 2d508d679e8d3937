"""The web entry point: `python serve.py` serves the dashboard and runs the event listener."""
import os  # noqa: I001 - monkey-patching must come before any other import
if os.environ.get("ASYNC_MODE", "eventlet") == "eventlet": __import__("eventlet").monkey_patch()  # noqa: E701,E501

import logging  # noqa: E402
import sys  # noqa: E402

from web import create_app  # noqa: E402
from web.config import ConfigError  # noqa: E402
from web.extensions import services, socketio  # noqa: E402
from web.listener import Listener  # noqa: E402

log = logging.getLogger("web")


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except ConfigError as exc:  # a setting is wrong: one sentence, not a traceback
        sys.exit(f"web: {exc}")
    with app.app_context():
        dash = services()
    listener = Listener(dash.celery_app, dash.coalescer.add, on_connect=dash.reconciler.listener_connected,
                        on_worker=dash.reconciler.worker_event, sleep=socketio.sleep)
    dash.listener = listener
    socketio.start_background_task(dash.pusher.run)
    socketio.start_background_task(dash.reconciler.run)
    socketio.start_background_task(listener.run)
    host, port = app.config["HOST"], app.config["PORT"]
    log.info("dashboard on http://%s:%s (async mode %s)", host, port, app.config["ASYNC_MODE"])
    kwargs = {"max_size": app.config["MAX_CONNECTIONS"]} if app.config["ASYNC_MODE"] == "eventlet" else {}
    socketio.run(app, host=host, port=port, log_output=os.environ.get("ACCESS_LOG") == "1", **kwargs)


if __name__ == "__main__":
    main()
