"""Unit-test fixtures: the app on an in-memory Redis, with Celery's network calls replaced."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from web import create_app


@pytest.fixture(autouse=True, scope="session")
def _one_scrypt_hash_per_password() -> Iterator[None]:
    """werkzeug's scrypt hash, really computed, once per password for the whole unit run: every
    test makes its accounts anew, and a hash costs ~0.15 s (20 s of the run). The hash is salted,
    so accounts sharing a password share a hash here; check_password_hash still verifies it."""
    import functools

    from web import users

    real = users.generate_password_hash
    users.generate_password_hash = functools.lru_cache(maxsize=64)(real)
    try:
        yield
    finally:
        users.generate_password_hash = real


class FakeResults:
    """Stands in for the result backend: task id -> backend metadata."""

    def __init__(self) -> None:
        self.metas: dict[str, dict[str, Any]] = {}

    def __call__(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: self.metas[i] for i in task_ids if i in self.metas}


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def results() -> FakeResults:
    return FakeResults()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, redis_server: fakeredis.FakeServer) -> list[dict[str, Any]]:
    """Records apply_async and revoke calls instead of sending them to a broker; a "sent" task
    is registered in the (in-memory) index as publishing does."""
    from celery.app.task import Task
    from celery.signals import before_task_publish
    from kombu.exceptions import OperationalError

    from celery_dashboard import index, revocations
    from tasks.celery_app import celery_app

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(index, "_client", fakeredis.FakeRedis(server=redis_server))
    monkeypatch.setattr(revocations, "_client", fakeredis.FakeRedis(server=redis_server))

    def apply_async(self: Task, args: Any = None, kwargs: Any = None, **opts: Any) -> None:
        if not redis_server.connected:  # the broker is the same Redis
            raise OperationalError("Error 111 connecting to the broker")
        before_task_publish.send(sender=self.name, body=(tuple(args or ()), dict(kwargs or {}), {}),
                                 headers={"id": opts.get("task_id"), "retries": 0, **opts.get("headers", {})})
        calls.append({"task": self.name, "kwargs": kwargs, **opts})

    monkeypatch.setattr(Task, "apply_async", apply_async)
    monkeypatch.setattr(celery_app.control, "revoke",
                        lambda task_id, **opts: calls.append({"revoke": task_id, **opts}))
    return calls


def make_app(redis_server: fakeredis.FakeServer, results: FakeResults, **config: Any) -> Any:
    """The app on the in-memory Redis; AUTH_REQUIRED off (a local run) unless given."""
    return create_app({
        "TESTING": True,
        "ASYNC_MODE": "threading",
        "REDIS_CLIENT": fakeredis.FakeRedis(server=redis_server),
        "READ_RESULTS": results,
        "RATELIMIT_STORAGE_URI": "memory://",
        "AUTH_REQUIRED": False,
        "CONTROL": None,  # no workers to ask
        "QUEUES": None,   # no broker queues to read
        **config,
    })


@pytest.fixture
def app(redis_server: fakeredis.FakeServer, results: FakeResults, sent: list) -> Iterator[Any]:
    yield make_app(redis_server, results)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def dash(app: Any) -> Any:
    return app.extensions["dashboard"]
