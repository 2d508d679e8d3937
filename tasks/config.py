"""Worker-side settings, read from the environment once."""
from __future__ import annotations

import errno
import os
import socket
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery_dashboard.settings import number

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# The project's demo app; CELERY_APP names other apps the way `celery -A` does.
DEFAULT_CELERY_APP = "tasks.celery_app"


def redis_url(raw: str | None = None) -> str:
    """Return the Redis URL to use, with `ssl_cert_reqs=none` added for `rediss://`.

    Heroku Redis serves TLS with a self-signed certificate; plain `redis://` rejects the option.
    """
    url = (raw if raw is not None else os.environ.get("REDIS_URL", "")).strip() or DEFAULT_REDIS_URL
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = dict(parse_qsl(parts.query))
    query.setdefault("ssl_cert_reqs", "none")
    return urlunsplit(parts._replace(query=urlencode(query)))


def celery_apps(raw: str | None = None) -> list[str]:
    """The Celery apps named by CELERY_APP (a comma-separated list of `celery -A` names), in order.

    Unset or blank means the demo app. The worker and Flower serve the first one.
    """
    spec = raw if raw is not None else os.environ.get("CELERY_APP", "")
    names = [name.strip() for name in spec.split(",") if name.strip()]
    return list(dict.fromkeys(names)) or [DEFAULT_CELERY_APP]


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be an integer, got {value!r}") from exc


_float = number  # one parser for numbers from the environment, shared with celery_dashboard


REDIS_URL = redis_url()
# How long results stay in the backend (seconds).
RESULT_EXPIRES = _int("RESULT_EXPIRES", 7 * 24 * 3600)
# Kombu connections a process publishes on (Celery's broker_pool_limit; its default is 10): the
# web's launches, a worker's task events and sub-tasks. Each holds two Redis connections.
BROKER_CONNECTIONS = _int("BROKER_CONNECTIONS", 2)


def port_taken(who: str, host: str, port: int | str, port_setting: str, host_setting: str) -> str:
    """The one sentence for a port already in use, naming the settings that choose it."""
    return (f"{who}: port {port} on {host} is already in use by another process; stop it, or set {port_setting} "
            f"(and {host_setting}) to a free one")


def check_port(who: str, host: str, port: int | str, port_setting: str, host_setting: str) -> None:
    """Exit with one sentence (SystemExit) unless `host`:`port` can be listened on now; None when free.

    Binds a throwaway socket with SO_REUSEADDR (as eventlet's, gevent's and Tornado's servers do)
    and without SO_REUSEPORT, which eventlet's listen() sets: a port held by anyone, another
    instance of the same process included, is refused instead of being silently shared.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.exit(port_taken(who, host, port, port_setting, host_setting))
        sys.exit(f"{who}: cannot listen on {host}:{port} ({exc.strerror or exc}); check the {host_setting} and "
                 f"{port_setting} settings")
