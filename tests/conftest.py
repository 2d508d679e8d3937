"""Fixtures shared by the integration and end-to-end tests: one real stack per session."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Stack

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """A private redis-server, a Celery worker (4 processes) and the web server, really started."""
    running = Stack(logdir=ARTIFACTS / "logs")
    try:
        running.start_redis()
        running.start_worker()
        running.start_web()
        yield running
    finally:
        running.stop()
