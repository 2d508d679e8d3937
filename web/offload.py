"""CPU-bound work of one request, run where it does not stop everyone else's.

The web serves every request, Socket.IO connection and push from one OS thread (eventlet's or
gevent's hub): a request that computes for a second stops all of them for that second. A fresh
user's review found six reads of an 8.7 MB result at once taking 13 s one after another while other
users' requests waited 12.7 s and live updates stopped for 7-11 s. `run` computes in a real
thread of the async library's pool (eventlet.tpool, gevent's hub threadpool), so the hub gets the
interpreter back at each switch interval (`sys.getswitchinterval()`, 5 ms); `turn` lets one such
job run at a time per process, so that two of them never share the hub's half and the memory they
hold stays one job's. `password_check` runs sign-ins' scrypt checks the same way, a few at a time.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from web.errors import ApiError

T = TypeVar("T")

WAIT_S = 30.0  # seconds a request waits for its turn before it is answered 503 with Retry-After
_turn = threading.Lock()  # green under serve.py's monkey patching: a waiting request yields


@contextlib.contextmanager
def turn() -> Iterator[None]:
    """Holds this process's one turn for heavy work while the block runs (its I/O stays on the hub:
    a socket of the hub's is never used from another thread). Raises ApiError 503 (with
    `retry_after`) when the turn did not come within WAIT_S seconds."""
    if not _turn.acquire(timeout=WAIT_S):
        raise ApiError(503, f"the web is busy serving other large results; try again in a few seconds "
                            f"(one at a time per web process, each waiting up to {WAIT_S:g} s)",
                       retry_after=5)
    try:
        yield
    finally:
        _turn.release()


def run(mode: str, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`'s value, computed in a real thread (`mode`: Flask-SocketIO's async mode,
    "eventlet", "gevent" or "threading"; in "threading" the request's own thread). `work` must be
    pure computation: no socket, lock or logging of the hub's. Raises what `work` raises. Call it
    within `turn()`."""
    if mode == "eventlet":
        from eventlet import tpool

        return tpool.execute(work, *args)
    if mode == "gevent":
        import gevent

        return gevent.get_hub().threadpool.apply(work, args)
    return work(*args)


HASHING_AT_ONCE = 2  # password checks computing at once per process; more wait their turn
_hashing = threading.BoundedSemaphore(HASHING_AT_ONCE)


def password_check(mode: str) -> Callable[[str, str], bool]:
    """werkzeug's check_password_hash(hash, password) run off the event loop (`run`), at most
    HASHING_AT_ONCE at a time per process, the others waiting their turn on the loop. scrypt takes
    0.14 s of CPU per check here with the interpreter released (hashlib): on the loop, a fresh
    user's review kept every request waiting 0.4-2 s with unknown names from 40 addresses, each
    within the sign-in limits."""
    from werkzeug.security import check_password_hash

    def check(hashed: str, password: str) -> bool:
        with _hashing:
            return run(mode, check_password_hash, hashed, password)

    return check
