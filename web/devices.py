"""Device cookies: the browsers each account signed in from, so that failed sign-ins from elsewhere
hold back only browsers new to that account (OWASP, "Slow Down Online Guessing Attacks with
Device Cookies"). The cookie names users, signed with SECRET_KEY; it is never a credential, only
which failure count a sign-in attempt is charged to (web.auth)."""
from __future__ import annotations

import secrets
from typing import Any

from flask import Response, current_app, g, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "device"
SALT = "dashboard.device"  # a signature made for anything else (the session) is not a device cookie
MOST_USERS = 10     # the names one browser is remembered for: the most recent ones
MAX_COOKIE = 2_000  # characters; a longer cookie is not read


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=SALT)


def _max_age() -> int:
    return current_app.config["LOGIN_DEVICE_DAYS"] * 86400


def _read() -> dict[str, Any] | None:
    """This browser's device cookie as {"id": random text, "users": [names]}; None when it sent
    none, or one not signed with this site's key and salt, or one signed more than
    LOGIN_DEVICE_DAYS days ago. Read once per request."""
    if "device_cookie" not in g:
        raw = request.cookies.get(COOKIE, "")
        found = None
        if raw and len(raw) <= MAX_COOKIE:
            try:
                found = _signer().loads(raw, max_age=_max_age())
            except BadSignature:  # SignatureExpired too
                found = None
        ok = isinstance(found, dict) and isinstance(found.get("id"), str) and isinstance(found.get("users"), list)
        g.device_cookie = found if ok else None
    return g.device_cookie


def known(name: str) -> str | None:
    """This browser's id when `name` (exactly as typed) signed in from it within the last
    LOGIN_DEVICE_DAYS days, else None."""
    found = _read()
    return found["id"] if found is not None and name and name in found["users"] else None


def remember(response: Response, name: str) -> Response:
    """Mark this browser as one `name` just signed in from: set its device cookie on `response`
    (HttpOnly, SameSite=Lax, Secure where the session cookie is, sent to the sign-in page only),
    valid LOGIN_DEVICE_DAYS days from now, the browser's id kept, `name` last among at most
    MOST_USERS names. Returns `response`."""
    found = _read() or {"id": secrets.token_urlsafe(16), "users": []}
    users = [user for user in found["users"] if isinstance(user, str) and user != name][-(MOST_USERS - 1):]
    response.set_cookie(COOKIE, _signer().dumps({"id": found["id"], "users": [*users, name]}),
                        max_age=_max_age(), path=url_for("auth.login"), httponly=True, samesite="Lax",
                        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")))
    return response
