"""Who is asking: sign-in pages, sessions, Bearer tokens, and the guard in front of every view."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address

from web import devices
from web.errors import ApiError
from web.extensions import csrf, limiter, services
from web.users import LOCAL_ADMIN, User

bp = Blueprint("auth", __name__)

# Endpoints anyone may reach: the sign-in page, static files, and the health check (no task data).
# /metrics checks its own access (an admin, or a scraper's METRICS_TOKEN: web.metrics).
PUBLIC = {"auth.login", "static", "pages.health", "metrics.metrics"}
# Blueprints that check CSRF themselves: Flower's pages send Flower's token, not ours (web/flower.py).
OWN_CSRF = {"flower"}
# Paths answered 401 rather than redirected to the sign-in page when nobody is signed in.
API_PATHS = ("/api/", "/flower/api/")


def identify() -> tuple[User | None, str]:
    """The user behind the current request and how they proved it: "local", "token", "session" or ""."""
    if not current_app.config["AUTH_REQUIRED"]:
        return LOCAL_ADMIN, "local"
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        user = services().users.by_token(token.strip()) if scheme.lower() == "bearer" else None
        return user, "token" if user else ""
    name, session_id = session.get("user"), session.get("sid")
    if isinstance(name, str) and isinstance(session_id, str):
        users = services().users
        # Both read each time: a signed-out session (a copied cookie too) or a removed account
        # is out at once, on every web process.
        if users.session_user(session_id) == name:
            user = users.get(name)
            if user is not None:
                return user, "session"
    return None, ""


def credential() -> str:
    """What the current request proved itself with: the session id or the Bearer token ("" if
    neither). Kept with a live connection, to check it again when some access ends."""
    if g.get("auth_method") == "token" or request.headers.get("Authorization"):
        return request.headers.get("Authorization", "").partition(" ")[2].strip()
    session_id = session.get("sid")
    return session_id if isinstance(session_id, str) else ""


def current_user() -> User:
    return g.user


def require(check: Callable[[User], bool], message: str) -> Callable:
    """A view decorator: 403 with `message` unless `check(current user)` holds."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not check(current_user()):
                raise ApiError(403, message)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    return not origin or urlsplit(origin).netloc == request.host


def guard() -> Any:
    """Runs before every view: sign-in, CSRF on cookie-authenticated changes, cross-site refusal."""
    g.user, g.auth_method = identify()
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if g.auth_method != "token" and not _same_origin():
            raise ApiError(403, "cross-site request refused")
        if (g.auth_method == "session" and request.blueprint not in OWN_CSRF) or request.endpoint == "auth.login":
            csrf.protect()
    if request.endpoint in PUBLIC:
        return None
    if g.user is None:
        if request.path.startswith(API_PATHS) or request.headers.get("Authorization"):
            raise ApiError(401, "sign-in required: a session cookie or Authorization: Bearer <token>")
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.dashboard")


def _typed_name() -> str:
    return (request.form.get("username") or "")[:64]


def _address_and_name_key() -> str:
    return f"{get_remote_address()}|{_typed_name().lower()}"


def _failures_key() -> str:
    """Failed sign-ins are counted per user name: one count for every browser new to that name,
    and one per browser it signed in from (web.devices)."""
    device = devices.known(_typed_name())
    return _typed_name().lower() + (f"|{device}" if device else "")


def _failures_scope(endpoint: str) -> str:
    return "failures-known" if devices.known(_typed_name()) else "failures-new"


def _failed(response: Any) -> bool:
    return response.status_code == 401


def _setting(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


# Three limits on sign-in attempts, counted in Redis (shared by every web process). Per address:
# guessing from one address, across names. Per address and name: one address at one account;
# neither lets a stranger elsewhere hold the owner back. Per name, failures only (checked before
# the password is, counted after a wrong one): guessing spread over many addresses; a browser the
# name signed in from has its own count, so a stranger can hold back only browsers new to the
# name, never the owner's own. Concurrent attempts may each pass the check before any is counted:
# the overshoot is at most the attempts in flight.
@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_setting("LOGIN_LIMIT_PER_ADDRESS"), methods=["POST"])
@limiter.limit(_setting("LOGIN_LIMIT"), methods=["POST"], key_func=_address_and_name_key)
@limiter.limit(_setting("LOGIN_FAILURE_LIMIT_PER_NAME"), methods=["POST"], key_func=_failures_key,
               scope=_failures_scope, deduct_when=_failed)
def login() -> Any:
    if not current_app.config["AUTH_REQUIRED"]:
        return redirect(url_for("pages.dashboard"))
    error = None
    if request.method == "POST":
        user = services().users.authenticate(_typed_name(), (request.form.get("password") or "")[:1024])
        if user is not None:
            session.clear()  # a new session on sign-in: no fixation
            session["user"] = user.name
            session["sid"] = services().users.start_session(
                user.name, int(current_app.permanent_session_lifetime.total_seconds()))
            session.permanent = True
            return devices.remember(redirect(_safe_next(request.args.get("next"))), user.name)
        error = "Wrong user name or password."
    status = 401 if error else 200
    return render_template("login.html", error=error, next=request.args.get("next", "")), status


@bp.post("/logout")
def logout() -> Any:
    """Sign-out: ends the session on the server (every web process, every tab and any copy of
    the cookie), and the live connections that came with it within a second or so."""
    if isinstance(session.get("sid"), str):
        services().users.end_session(session["sid"])
    session.clear()
    return redirect(url_for("auth.login"))


def register(app: Flask) -> None:
    app.before_request(guard)
    app.register_blueprint(bp)
