"""Integration settings, read from the environment once (the worker's and the publisher's)."""
from __future__ import annotations

import os


def number(name: str, default: float, minimum: float | None = None) -> float:
    """The float in environment variable `name`, or `default` when unset; RuntimeError if not a
    number, or below `minimum`."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        result = float(value)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {value!r}") from exc
    if minimum is not None and not result >= minimum:
        raise RuntimeError(f"{name} must be at least {minimum:g}, got {value!r}")
    return result


# Seconds between two progress reports of one task (0: every call); the final value is always sent.
PROGRESS_INTERVAL = number("PROGRESS_INTERVAL", 0.1, minimum=0)
# Seconds between two reports of one task stored in the result backend (every report's event is
# sent); the first report and the final value are always stored (celery_dashboard.reporting).
PROGRESS_STORE_INTERVAL = number("PROGRESS_STORE_INTERVAL", 1.0)

# Seconds a revocation is kept in Redis (celery_dashboard.revocations); 7 days by default.
REVOCATION_TTL = number("REVOCATION_TTL", 7 * 24 * 3600)
# The most revocations kept; past it, the ones expiring soonest are dropped first.
REVOCATION_LIMIT = int(number("REVOCATION_LIMIT", 100_000))
# Seconds between two checks, in each worker, for revocations made since it last loaded them.
REVOCATION_REFRESH = number("REVOCATION_REFRESH", 2.0)
# The most connections of the Redis client made for revocations when the result backend is not Redis.
REVOCATION_CONNECTIONS = int(number("REVOCATION_CONNECTIONS", 4))
# The most connections one process opens to one Redis for plain commands, shared by the result
# backend (celery_dashboard.backend), the index, revocations and the web's own reads and writes
# (celery_dashboard.connections); a command waits up to POOL_TIMEOUT seconds for a free one.
REDIS_CONNECTIONS = int(number("REDIS_CONNECTIONS", 2))
POOL_TIMEOUT = number("POOL_TIMEOUT", 10.0)
# Seconds between two `worker-beacon` events of a worker (celery_dashboard.beacon); 0 turns them off.
BEACON_INTERVAL = number("BEACON_INTERVAL", 2.0)
# Characters of a task's arguments (and, apart, of its keyword arguments) kept in its task object.
ARGUMENT_PREVIEW = int(number("ARGUMENT_PREVIEW", 1000))
# Argument names whose values are masked before a task object is stored or shown (comma separated,
# case-insensitive; a keyword argument or a dict key at any depth whose name contains one of them).
MASKED_ARGUMENTS = tuple(
    word.strip().lower().replace("-", "_")
    for word in os.environ.get("MASKED_ARGUMENTS",
                               "password,passwd,secret,token,api_key,apikey,authorization,private_key,credentials")
    .split(",") if word.strip())
