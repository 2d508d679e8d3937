"""Security headers on every response: a strict Content-Security-Policy and friends."""
from __future__ import annotations

from flask import Flask, Response

CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "img-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
    "object-src 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def register(app: Flask) -> None:
    hsts = app.config.get("PRODUCTION", False)

    @app.after_request
    def secure(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if response.mimetype == "text/html" or response.mimetype == "application/json":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
