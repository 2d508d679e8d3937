"""Integration settings, read from the environment once (the worker's and the publisher's)."""
from __future__ import annotations

import os


def number(name: str, default: float) -> float:
    """The float in environment variable `name`, or `default` when unset; RuntimeError if not a number."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {value!r}") from exc


# Seconds between two progress reports of one task; the final value is always sent.
PROGRESS_INTERVAL = number("PROGRESS_INTERVAL", 0.1)
