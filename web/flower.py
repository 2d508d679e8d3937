"""Flower behind the dashboard: /flower proxied to a Flower process for admins, and Flower embedded on Heroku."""
from __future__ import annotations

import atexit
import base64
import ctypes
import hashlib
import hmac
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import urllib3
from flask import Blueprint, Flask, Response, current_app, g, redirect, request
from markupsafe import escape

from tasks.flower import URL_PREFIX
from web.auth import current_user
from web.config import ConfigError
from web.config import flag as config_flag
from web.errors import ApiError

log = logging.getLogger(__name__)

bp = Blueprint("flower", __name__, url_prefix=f"/{URL_PREFIX}")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "proxy-connection"})
# Flower's pages share the dashboard's origin: a script injected into one would act as the admin,
# so no inline script runs but Flower's one (workers.html, `var autorefresh = {{ autorefresh }};`,
# 0 or 1 as Flower 2.2 renders it), allowed by its hash. Style attributes are allowed (Flower uses them).
INLINE_SCRIPTS = [f"\nvar autorefresh = {n};\n" for n in (0, 1)]
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' " + " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                                    for s in INLINE_SCRIPTS),
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    "form-action 'self'", "object-src 'none'",
])
CHUNK = 64 * 1024
# The cookie Flower's pages read and send back as X-XSRFToken on every POST (flower.js).
XSRF_COOKIE = "_xsrf"


def settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The proxy's settings from the environment, as Flask config keys; ConfigError for a bad one.

    FLOWER_PROXY (1/0, default 1), FLOWER_UPSTREAM (default http://127.0.0.1:$FLOWER_PORT),
    FLOWER_EMBED (1/0, default 0; costs about 7 Redis connections: README, "Redis connections"),
    FLOWER_PROXY_TIMEOUT (seconds
    Flower may take to answer, default 30), FLOWER_BASIC_AUTH (sent to Flower by the proxy).
    """
    env = os.environ if environ is None else environ

    port = env.get("FLOWER_PORT", "").strip() or "5555"
    upstream = env.get("FLOWER_UPSTREAM", "").strip() or f"http://127.0.0.1:{port}"
    parts = urlsplit(upstream)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"FLOWER_UPSTREAM must be http://host:port (Flower's address, no path), got {upstream!r}")
    try:
        timeout = float(env.get("FLOWER_PROXY_TIMEOUT", "").strip() or 30)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise ConfigError(f"FLOWER_PROXY_TIMEOUT must be a number of seconds, got {env.get('FLOWER_PROXY_TIMEOUT')!r}")
    return {
        "FLOWER_PROXY": config_flag("FLOWER_PROXY", True, env),
        "FLOWER_UPSTREAM": f"{parts.scheme}://{parts.netloc}",
        "FLOWER_EMBED": config_flag("FLOWER_EMBED", False, env),
        "FLOWER_PROXY_TIMEOUT": timeout,
        "FLOWER_CREDENTIALS": env.get("FLOWER_BASIC_AUTH", "").split(",")[0].strip(),
    }


def link(app: Flask) -> str:
    """Where the dashboard's Flower link points: /flower/ when this process proxies it, else FLOWER_URL."""
    return f"/{URL_PREFIX}/" if app.config.get("FLOWER_PROXY") else app.config.get("FLOWER_URL", "")


def register(app: Flask) -> None:
    """Read the settings (config given to create_app wins) and serve /flower when FLOWER_PROXY is on."""
    for key, value in settings().items():
        app.config.setdefault(key, value)
    if app.config["FLOWER_PROXY"]:
        app.register_blueprint(bp)


@bp.before_request
def admins_only() -> None:
    """After auth.guard (signed in, same origin): admins only, and POSTs carry Flower's XSRF token."""
    if not current_user().is_admin:
        raise ApiError(403, "Flower is for admins only")
    if request.method not in ("GET", "HEAD", "OPTIONS") and g.auth_method != "token":
        # Double submit: Flower's pages send the _xsrf cookie back as X-XSRFToken. Another site can
        # neither read that cookie nor add a header to a cross-site request without a CORS
        # preflight, which nothing here answers; auth.guard has refused other origins already.
        cookie = request.cookies.get(XSRF_COOKIE, "")
        header = request.headers.get("X-XSRFToken", "")
        if not cookie or not hmac.compare_digest(cookie, header):
            raise ApiError(403, "Flower's XSRF token is missing: use Flower's own page, or a Bearer token")


def _pool() -> urllib3.PoolManager:
    pool = current_app.extensions.get("flower_pool")
    if pool is None:
        # A few sockets are plenty for one admin's Flower; urllib3 opens them only when used.
        pool = current_app.extensions["flower_pool"] = urllib3.PoolManager(num_pools=2, maxsize=4, block=False)
    return pool


def _request_headers() -> dict[str, str]:
    named = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
    headers = {name: value for name, value in request.headers.items()
               if name.lower() not in HOP_BY_HOP | named | {"authorization", "cookie", "content-length"}}
    # Only Flower's own cookies travel on: never the dashboard's session.
    session_cookie = current_app.config.get("SESSION_COOKIE_NAME", "session")
    cookies = "; ".join(f"{k}={v}" for k, v in request.cookies.items() if k != session_cookie)
    if cookies:
        headers["Cookie"] = cookies
    credentials = current_app.config.get("FLOWER_CREDENTIALS")
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    headers["Host"] = request.host  # Flower compares the Origin of a POST with its Host
    return headers


def _unreachable(reason: str) -> Any:
    upstream = current_app.config["FLOWER_UPSTREAM"]
    message = (f"Flower is not reachable at {upstream} ({reason}); start it with `python -m tasks.flower` "
               "or set FLOWER_UPSTREAM to where it runs.")
    if request.path.startswith(f"/{URL_PREFIX}/api/") or request.accept_mimetypes.best == "application/json":
        raise ApiError(502, message)
    page = (f"<!doctype html><meta charset=utf-8><title>Flower unavailable</title>"
            f"<h1>Flower unavailable</h1><p>{escape(message)}</p><p><a href=\"/\">Back to the dashboard</a></p>")
    return Response(page, status=502, mimetype="text/html")


@bp.route("", methods=["GET", "HEAD"], strict_slashes=False)
def root() -> Any:
    return redirect(f"/{URL_PREFIX}/")


@bp.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "OPTIONS"])
@bp.route("/<path:path>", methods=["GET", "HEAD", "POST", "OPTIONS"])
def proxy(path: str) -> Any:
    """Forward this request to Flower and stream its answer back (502 with a sentence if it is down).

    The body is read whole, bounded by MAX_CONTENT_LENGTH (413 beyond); the answer streams in 64 KiB
    chunks. Hop-by-hop headers, the dashboard's session cookie and the caller's Authorization stay
    here; Flower gets FLOWER_BASIC_AUTH instead.
    """
    upstream = current_app.config["FLOWER_UPSTREAM"]
    url = f"{upstream}{request.full_path if request.query_string else request.path}"
    timeout = urllib3.Timeout(connect=3.0, read=current_app.config["FLOWER_PROXY_TIMEOUT"])
    try:
        answer = _pool().request(request.method, url, body=request.get_data(cache=False) or None,
                                 headers=_request_headers(), preload_content=False, decode_content=False,
                                 redirect=False, retries=False, timeout=timeout)
    except urllib3.exceptions.HTTPError as exc:
        log.warning("Flower proxy: %s %s failed: %s", request.method, url, exc)
        reason = "timed out" if isinstance(exc, urllib3.exceptions.TimeoutError) else "connection refused"
        if not isinstance(exc, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.TimeoutError)):
            reason = type(exc).__name__
        return _unreachable(reason)
    named = {h.strip().lower() for h in answer.headers.get("Connection", "").split(",")}
    headers = [(name, value) for name, value in answer.headers.iteritems()
               if name.lower() not in HOP_BY_HOP | named and not name.lower().startswith("access-control-")]
    response = Response(_stream(answer), status=answer.status, headers=headers, direct_passthrough=True)
    response.headers["Content-Security-Policy"] = CSP
    return response


def _stream(answer: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    try:
        yield from answer.stream(CHUNK, decode_content=False)
    except urllib3.exceptions.HTTPError as exc:  # Flower went away mid-answer: the client sees a cut body
        log.warning("Flower proxy: answer cut: %s", exc)
    finally:
        answer.release_conn()


class Embedded:
    """A Flower child process of the web process (Heroku: only `web` gets traffic), on loopback.

    Started by `start`, stopped by `stop`, at exit, and by the kernel when the web process dies
    (PR_SET_PDEATHSIG on Linux): it never outlives the web process.
    """

    def __init__(self, proc: subprocess.Popen[bytes], upstream: str) -> None:
        self.proc = proc
        self.upstream = upstream

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def stop(embedded: Embedded | None) -> None:
    """SIGTERM to an embedded Flower without waiting (the web process is ending); None does nothing."""
    if embedded is not None and embedded.proc.poll() is None:
        embedded.proc.terminate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    try:  # Linux: SIGTERM when the web process dies, however it dies (SIGKILL included)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def start(app: Flask) -> Embedded | None:
    """With FLOWER_EMBED on, start Flower as a child bound to 127.0.0.1 and point the proxy at it.

    Its port is FLOWER_PORT, or a free one when unset; its basic-auth credentials are
    FLOWER_BASIC_AUTH, or random ones only this process knows. Returns None when embedding is off.
    """
    if not app.config.get("FLOWER_EMBED"):
        return None
    port = os.environ.get("FLOWER_PORT", "").strip() or str(_free_port())
    credentials = app.config.get("FLOWER_CREDENTIALS") or f"dashboard:{secrets.token_urlsafe(24)}"
    env = dict(os.environ, FLOWER_ADDRESS="127.0.0.1", FLOWER_PORT=port, FLOWER_BASIC_AUTH=credentials)
    proc = subprocess.Popen([sys.executable, "-m", "tasks.flower"], env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
    app.config.update(FLOWER_PROXY=True, FLOWER_UPSTREAM=f"http://127.0.0.1:{port}", FLOWER_CREDENTIALS=credentials)
    if "flower" not in app.blueprints:
        app.register_blueprint(bp)
    embedded = Embedded(proc, app.config["FLOWER_UPSTREAM"])
    atexit.register(embedded.stop)
    log.info("Flower embedded (pid %s) on %s, served at /%s/ to admins", proc.pid, embedded.upstream, URL_PREFIX)
    return embedded
