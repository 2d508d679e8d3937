"""Running a call in a thread of its own, for unit tests that start an asyncio loop."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def in_own_thread(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)`'s result (or its exception), run in a new thread. A Playwright page the same
    test process holds (pytest-xdist gives one process unit and browser tests both) keeps an event
    loop running in the main thread, where `asyncio.run` then raises RuntimeError."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call, *args).result()
