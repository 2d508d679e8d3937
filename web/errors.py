"""One JSON shape for every HTTP error: {"error": message, ...}."""
from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

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


def register(app: Flask) -> None:
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
