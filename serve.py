"""The web entry point: `python serve.py` serves the dashboard and runs the event listener."""
import os  # noqa: I001 - monkey-patching must come before any other import
MODE = os.environ.get("ASYNC_MODE", "eventlet")
if MODE == "eventlet": __import__("eventlet").monkey_patch()  # noqa: E701
if MODE == "gevent": __import__("gevent.monkey").monkey.patch_all()  # noqa: E701

import errno  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from types import FrameType  # noqa: E402

from tasks import config as task_config  # noqa: E402
from web import create_app, flower, monitor, pauses, serving, sockets  # noqa: E402
from web.config import ConfigError  # noqa: E402
from web.extensions import services, socketio  # noqa: E402
from web.listener import Listener  # noqa: E402

log = logging.getLogger("web")

# The modes whose server is fit to face users: eventlet's and gevent's WSGI servers (Flask-SocketIO's
# socketio.run). "threading" runs Werkzeug's development server: create_app accepts it (the unit
# tests use it through the test clients), serve.py refuses it.
SERVING_MODES = ("eventlet", "gevent")


# Seconds gevent's server gives open requests to finish on SIGTERM before it closes them (its
# default, 1 s, is all of docker's patience; a browser's Socket.IO connection never finishes).
STOP_GRACE = 0.5


# Seconds after SIGTERM/SIGINT after which the process ends even if the server did not unwind.
STOP_DEADLINE = 2.0
EMBEDDED: list = []  # the embedded Flower, if any, stopped by hard_stop too


def hard_stop(signum: int, frame: FrameType | None) -> None:
    """End the process now (SIGALRM armed by the stop handler): stop an embedded Flower, exit 0."""
    log.warning("the server did not stop within %.0f s; ending the process", STOP_DEADLINE)
    for child in EMBEDDED:
        flower.stop(child)
    logging.shutdown()
    os._exit(0)


class Stop(SystemExit):
    """Raised by the SIGTERM/SIGINT handler. A SystemExit, so eventlet's and gevent's hubs pass it
    on to the main greenlet (they re-raise system exits wherever a signal handler happened to run)."""


def stop_on_signals() -> None:
    """Make SIGTERM (docker stop, Heroku, systemd) and SIGINT (Ctrl-C) end the process at once, status 0.

    Python installs no SIGTERM handler, and Linux delivers no signal to a PID 1 (a container's first
    process) that has no handler: without this one, `docker stop` waits 10 s and kills. The handler
    raises Stop, which unwinds socketio.run() in the main greenlet: the listening socket closes
    (gevent first gives open requests STOP_GRACE s), then main() ends the process.
    """
    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        # If the unwinding does not reach the main greenlet (a greenlet blocked where the hub
        # cannot interrupt it), the process still ends: SIGALRM, from the kernel, STOP_DEADLINE s on.
        signal.signal(signal.SIGALRM, hard_stop)
        signal.setitimer(signal.ITIMER_REAL, STOP_DEADLINE)
        raise Stop(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    if MODE == "gevent":
        from gevent import pywsgi

        pywsgi.WSGIServer.stop_timeout = STOP_GRACE


def freeze_startup_objects() -> int:
    """Move every object alive once the app is built (modules, the Flask app, Celery, kombu, the
    catalog: about 110,000 objects) out of the collector's reach, and return how many (CPython's
    `gc.freeze`, docs.python.org/3/library/gc.html). They live as long as the process, yet each
    full (generation 2) collection walked them all, a pause of every push, launch and event read
    in this one-threaded server: while 1,000 clients connected, 126-147 ms a collection on average,
    82-100 ms frozen (`python -m bench.herd 1000`; /metrics: dashboard_gc_pause_seconds). A frozen
    object freed by its reference count is freed as before; a reference cycle among frozen objects
    that later becomes garbage is kept, at most what was frozen here, never growing."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if MODE not in SERVING_MODES:
        sys.exit(f"web: ASYNC_MODE={MODE} cannot serve: python serve.py runs with eventlet (the default) or gevent")
    stop_on_signals()
    try:
        app = create_app()
    except ConfigError as exc:  # a setting is wrong: one sentence, not a traceback
        sys.exit(f"web: {exc}")
    with app.app_context():
        dash = services()
    listener = Listener(dash.celery_app, dash.coalescer.add, on_connect=dash.reconciler.listener_connected,
                        on_worker=dash.reconciler.worker_event, sleep=socketio.sleep, commands=dash.store.client)
    dash.listener = listener
    host, port = app.config["HOST"], app.config["PORT"]
    task_config.check_port("web", host, port, "PORT", "HOST")  # before anything starts
    embedded = flower.start(app)  # Heroku: Flower as a child on loopback, served at /flower (FLOWER_EMBED)
    EMBEDDED.append(embedded)
    socketio.start_background_task(dash.pusher.run)
    dash.reconciler.start(socketio.start_background_task)  # the slow passes and the fast poll
    socketio.start_background_task(listener.run)
    # Ends live connections whose access ended (sign-out, removed account, new role, revoked token).
    socketio.start_background_task(sockets.watch_access, dash.users, recheck=app.config["SESSION_RECHECK"])
    # Workers and queues to every tab of the workers page (web.monitor), when they change.
    socketio.start_background_task(monitor.push_workers, app)
    log.info("%d objects built at start frozen out of the garbage collector", freeze_startup_objects())
    pauses.PAUSES.install()  # /metrics: dashboard_gc_pause_seconds
    log.info("dashboard on http://%s:%s (async mode %s)", host, port, MODE)
    # At most MAX_CONNECTIONS at once: eventlet.wsgi's max_size, a gevent pool of that size.
    kwargs: dict = {"max_size" if MODE == "eventlet" else "spawn": app.config["MAX_CONNECTIONS"]}
    handler = serving.gevent_handler() if MODE == "gevent" else None
    if handler is not None:
        kwargs["handler_class"] = handler
    try:
        socketio.run(app, host=host, port=port, log_output=os.environ.get("ACCESS_LOG") == "1", **kwargs)
    except OSError as exc:  # taken between the check and the server's own bind
        if exc.errno != errno.EADDRINUSE:
            raise
        sys.exit(task_config.port_taken("web", host, port, "PORT", "HOST"))
    except Stop:
        pass  # gevent's server lets it through; eventlet's catches it and returns
    # Stopped by a signal. Skip the interpreter's teardown (0.3-0.5 s of collecting greenlets and
    # connections): nothing is left to save, and the kernel closes every socket.
    flower.stop(embedded)  # not left to atexit: os._exit skips it
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
