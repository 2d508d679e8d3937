"""What serve.py sets on the WSGI server it runs (eventlet's or gevent's), beyond Flask-SocketIO's defaults."""
from __future__ import annotations

import importlib.util
import socket


def gevent_handler() -> type | None:
    """gevent's WSGI handler, sending without Nagle's delay (TCP_NODELAY on each accepted connection).

    gevent's pywsgi (gevent/pywsgi.py, WSGIHandler) writes a response's headers and its body in two
    sends. With Nagle's algorithm the body then waits for the client to acknowledge the headers,
    and a client acknowledges late on purpose (delayed ACK, 40 ms on Linux): every request on a
    kept-alive connection took 44-48 ms here (GET /healthz, POST /api/tasks; 1.8 and 5.9 ms on
    eventlet, whose server writes both in one send and sets TCP_QUICKACK). A connection that is not
    TCP (a UNIX socket) is served as it is.

    None where gevent-websocket is installed: Flask-SocketIO's socketio.run then passes its own
    `handler_class` (geventwebsocket's WebSocketHandler), and two would be a TypeError at start."""
    if importlib.util.find_spec("geventwebsocket") is not None:
        return None
    from gevent import pywsgi  # only in gevent mode: importing it does not patch anything

    class NoDelayHandler(pywsgi.WSGIHandler):
        def handle(self) -> None:
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
            super().handle()

    return NoDelayHandler
