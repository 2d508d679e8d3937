"""Fixtures shared by the integration and end-to-end tests: one real stack per session."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


RECOVERY: dict[str, float] = {}


@pytest.fixture(scope="session")
def recovery() -> dict[str, float]:
    """Seconds each fault took until the dashboard was right again, reported after the run."""
    return RECOVERY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECOVERY:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "recovery.json").write_text(json.dumps(RECOVERY, indent=2))
    terminalreporter.section("time until the dashboard was right again")
    for name, seconds in RECOVERY.items():
        terminalreporter.write_line(f"{name}: {seconds:.1f} s")
