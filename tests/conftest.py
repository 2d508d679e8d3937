"""Fixtures shared by the integration and end-to-end tests: one real stack per session."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Stack

# Logs, screenshots and figures of a run. Under pytest-xdist (make test) each process writes in a folder
# of its own (artifacts/gw0, ...): two stacks never share a log, and a stack's readiness check never
# reads another process's worker log. The figures gathered for the summary go to the main process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / (WORKER or "")
ARTIFACTS.mkdir(parents=True, exist_ok=True)


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this process's recovery times to the main process."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["recovery"] = json.dumps(RECOVERY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the main process under pytest-xdist: gather each worker's recovery times."""
    RECOVERY.update(json.loads(getattr(node, "workeroutput", {}).get("recovery", "{}")))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECOVERY:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "recovery.json").write_text(json.dumps(RECOVERY, indent=2))
    terminalreporter.section("time until the dashboard was right again")
    for name, seconds in RECOVERY.items():
        terminalreporter.write_line(f"{name}: {seconds:.1f} s")
