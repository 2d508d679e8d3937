"""One JSON shape for every HTTP error: {"error": message, ...}."""
from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Flask, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from web.extensions import limiter

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with `status` and a JSON body; `fields` lists offending inputs."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


def error_body(message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return body


# What a rate limit counts, per endpoint: "You can {what} at most {n} {unit} {period}".
LIMITED = {"api.launch": ("launch", "task", "tasks"), "auth.login": ("try to sign in", "time", "times")}


def rate_limit_sentence(endpoint: str | None, amount: int, multiples: int, granularity: str,
                        retry_after: int) -> str:
    """The 429's sentence: "You can launch at most 30 tasks a minute; try again in 12 s".

    `granularity` is the limit's period ("second", "minute", "hour", "day", ...), `multiples`
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
    message = rate_limit_sentence(request.endpoint, item.amount, item.multiples, item.GRANULARITY.name, retry_after)
    response = jsonify(error_body(message))
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response


def register(app: Flask) -> None:
    app.register_error_handler(RateLimitExceeded, _rate_limited)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return jsonify(error_body(exc.message, exc.fields)), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error_body(exc.description or exc.name)), exc.code

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def redis_down(exc: Exception) -> Any:
        log.warning("Redis unavailable: %s", exc)
        return jsonify(error_body("Redis is unavailable; try again shortly")), 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return jsonify(error_body("internal error")), 500
