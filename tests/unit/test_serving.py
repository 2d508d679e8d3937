"""web.serving: what serve.py sets on gevent's WSGI server (ASYNC_MODE=gevent)."""
from __future__ import annotations

import socket
from typing import Any

from web import serving


def test_gevent_serves_each_connection_without_nagle_s_delay() -> None:
    """gevent's pywsgi sends a response's headers and body in two sends: with Nagle's algorithm on,
    the body waited for the client's delayed ACK, 44-48 ms for every request on a kept-alive
    connection. The real handler, on a real TCP connection, answering a real request."""
    from gevent import pywsgi

    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname())
        connection, address = listening.accept()
        nodelay = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            nodelay.append(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")])
            return [b'{"ok":true}']

        server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=serving.gevent_handler(), log=None)
        with client, connection:
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the kernel's default
            client.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
            server.handler_class(connection, address, server).handle()
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
    assert nodelay == [1]
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"ok":true}')


def test_with_gevent_websocket_installed_flask_socketio_s_own_handler_is_left_alone(monkeypatch: Any) -> None:
    """socketio.run passes geventwebsocket's WebSocketHandler as `handler_class` when that package is
    importable; passing ours too would stop the web at start (a TypeError)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "geventwebsocket"
                        else real(name, *a))
    assert serving.gevent_handler() is None
