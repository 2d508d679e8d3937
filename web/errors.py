"""One JSON shape for every HTTP error: {"error": message, ...}."""
from __future__ import annotations

import logging
import re
import time
from typing import Any

import redis
from flask import Flask, jsonify, make_response, render_template, request
from flask_limiter.errors import RateLimitExceeded
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from celery_dashboard import settings
from web.extensions import limiter

log = logging.getLogger(__name__)
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")  # what a browser's form posts
POOL_EXHAUSTED = "No connection available."  # redis-py 8's message (connection.py, BlockingConnectionPool)


class ApiError(Exception):
    """An error answered with `status` and a JSON body; `fields` lists offending inputs;
    `retry_after` (whole seconds) is sent as the Retry-After header."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.retry_after = retry_after


def error_body(message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """{"error": the message as a sentence (its first letter a capital; no full stop, which the page
    adds where it ends one), "fields": [{field, message}] when given}."""
    body: dict[str, Any] = {"error": message[:1].upper() + message[1:]}
    if fields:
        body["fields"] = fields
    return body


# A code point UTF-8 cannot encode: half of a UTF-16 surrogate pair, alone. A JSON escape can
# write one ("\\ud800"), and Python's JSON reader gives it back in a str (a whole pair becomes one
# character), but Redis, hashes and logs encode text as UTF-8 and fail on it.
SURROGATE = re.compile("[\ud800-\udfff]")


def not_text(value: Any) -> dict[str, str] | None:
    """The first place, depth first, in the decoded JSON `value` where a string (a value or an
    object's key) is not valid Unicode text (a lone surrogate), as a 422 field
    {"field": "params.message" | "params.tags[2]" | "body", "message": ...}; None when all is text.
    Walks with its own stack: the nesting is as deep as the JSON reader allowed."""
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            found = SURROGATE.search(item)
            if found:
                return {"field": where or "body",
                        "message": f"not valid Unicode text: it holds a lone surrogate (U+{ord(found.group()):04X})"}
        elif isinstance(item, dict):
            for key in item:
                found = SURROGATE.search(key) if isinstance(key, str) else None
                if found:
                    return {"field": where or "body", "message": "a name in it is not valid Unicode text: "
                            f"it holds a lone surrogate (U+{ord(found.group()):04X})"}
            todo.extend((f"{where}.{key}" if where else str(key), inner) for key, inner in reversed(item.items()))
        elif isinstance(item, list):
            todo.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(item))))
    return None


# What a rate limit counts, per endpoint or "endpoint:scope" (Flask-Limiter's scope of the limit):
# "You can {what} at most {n} {unit} {period}".
LIMITED = {"api.launch": ("launch", "task", "tasks"), "auth.login": ("try to sign in", "time", "times"),
           # web.auth: failed sign-ins per user name, from browsers new to it or from this one
           "auth.login:failures-new": ("fail to sign in as one user from new browsers", "time", "times"),
           "auth.login:failures-known": ("fail to sign in as one user from this browser", "time", "times")}


def rate_limit_sentence(endpoint: str | None, amount: int, multiples: int, granularity: str,
                        retry_after: int) -> str:
    """The 429's sentence: "You can launch at most 30 tasks a minute; try again in 12 s".

    `endpoint` is the endpoint, or "endpoint:scope" for a scoped limit (LIMITED),
    `granularity` the limit's period ("second", "minute", "hour", "day", ...), `multiples`
    how many of it (5 for "30 per 5 minutes"), `retry_after` whole seconds until it resets.
    """
    what, one, many = LIMITED.get(endpoint or "", ("send", "request", "requests"))
    article = "an" if granularity == "hour" else "a"
    period = f"{article} {granularity}" if multiples == 1 else f"every {multiples} {granularity}s"
    return f"You can {what} at most {amount} {one if amount == 1 else many} {period}; try again in {retry_after} s"


def _rate_limited(exc: RateLimitExceeded) -> Any:
    """The limit Flask-Limiter hit, said in a sentence, with the seconds to wait in Retry-After."""
    item = exc.limit.limit
    current = limiter.current_limit
    reset_at = current.reset_at if current is not None else time.time() + item.get_expiry()
    retry_after = max(1, int(reset_at - time.time()))  # as Flask-Limiter's own Retry-After counts
    scope = exc.limit.scope_for(request.endpoint or "", None)  # the endpoint, or "endpoint:scope"
    message = rate_limit_sentence(scope, item.amount, item.multiples, item.GRANULARITY.name, retry_after)
    return answer(message, 429, retry_after=retry_after)


def answer(message: str, status: int, fields: list[dict[str, str]] | None = None,
           retry_after: int | None = None) -> Any:
    """An error's response: error_body's JSON, or for a person at the sign-in form (a form POST to
    /login) the sign-in page again with the message; `retry_after` (whole seconds) as Retry-After."""
    if request.endpoint == "auth.login" and request.mimetype in FORMS:
        sentence = message[:1].upper() + message[1:]
        response = make_response(render_template("login.html", error=sentence.rstrip(".") + ".",
                                                 next=request.args.get("next", "")))
    else:
        response = jsonify(error_body(message, fields))
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def register(app: Flask) -> None:
    app.register_error_handler(RateLimitExceeded, _rate_limited)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return answer(exc.message, exc.status, exc.fields, exc.retry_after)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return answer(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def redis_down(exc: Exception) -> Any:
        if isinstance(exc, redis.ConnectionError) and str(exc) == POOL_EXHAUSTED:
            # redis-py's BlockingConnectionPool.get_connection: every connection stayed busy, because
            # Redis answers slowly or because the web has more to ask than its connections carry
            log.warning("no free Redis connection within POOL_TIMEOUT=%g s (REDIS_CONNECTIONS=%d)",
                        settings.POOL_TIMEOUT, settings.REDIS_CONNECTIONS)
            count = settings.REDIS_CONNECTIONS
            return answer(f"Redis is slow to answer or the web is busy: its {count} Redis "
                          f"connection{'' if count == 1 else 's'} (REDIS_CONNECTIONS) stayed busy for "
                          f"{settings.POOL_TIMEOUT:g} s; try again shortly", 503, retry_after=2)
        log.warning("Redis unavailable: %s", exc)
        return answer("Redis is unavailable; try again shortly", 503)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return jsonify(error_body("internal error")), 500
