from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.utils.collections import LimitedSet

from celery_dashboard import revocations, settings, signals

DAY = 24 * 3600.0


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def r(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def test_a_revocation_lasts_its_ttl_and_no_longer(r: Any) -> None:
    revocations.revoke(r, "t1", ttl=60, now=1000)
    assert revocations.is_revoked(r, "t1", now=1000)
    assert revocations.is_revoked(r, "t1", now=1059.9)
    assert not revocations.is_revoked(r, "t1", now=1060)
    assert not revocations.is_revoked(r, "other", now=1000)


def test_the_default_ttl_is_seven_days(r: Any) -> None:
    assert settings.REVOCATION_TTL == 7 * DAY
    revocations.revoke(r, "t1", now=1000)
    assert revocations.is_revoked(r, "t1", now=1000 + 7 * DAY - 1)
    assert not revocations.is_revoked(r, "t1", now=1000 + 7 * DAY)


def test_revoking_again_extends_and_never_shortens(r: Any) -> None:
    revocations.revoke(r, "t1", ttl=100, now=1000)
    revocations.revoke(r, "t1", ttl=10, now=1010)   # would end at 1020: the 1100 stays
    assert revocations.is_revoked(r, "t1", now=1050)
    revocations.revoke(r, "t1", ttl=500, now=1050)  # ends at 1550
    assert revocations.is_revoked(r, "t1", now=1500)


def test_expired_revocations_are_pruned_when_another_is_written(r: Any) -> None:
    revocations.revoke(r, "old", ttl=10, now=1000)
    revocations.revoke(r, "current", ttl=100, now=1000)
    revocations.revoke(r, "new", ttl=10, now=1020)
    assert sorted(m.decode() for m in r.zrange(revocations.KEY, 0, -1)) == ["current", "new"]


def test_the_set_is_cut_to_its_limit_keeping_the_latest_to_expire(r: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(settings, "REVOCATION_LIMIT", 3)
    for n in range(5):
        revocations.revoke(r, f"t{n}", ttl=100, now=1000 + n)
    assert r.zcard(revocations.KEY) == 3
    assert revocations.revoked_ids(r, now=1000) == ["t4", "t3", "t2"]


def test_revoked_ids_lists_the_unexpired_latest_first_up_to_a_limit(r: Any) -> None:
    revocations.revoke(r, "a", ttl=10, now=1000)   # ends 1010
    revocations.revoke(r, "b", ttl=50, now=1000)   # ends 1050
    revocations.revoke(r, "c", ttl=30, now=1000)   # ends 1030
    assert revocations.revoked_ids(r, now=1005) == ["b", "c", "a"]
    assert revocations.revoked_ids(r, now=1010) == ["b", "c"]
    assert revocations.revoked_ids(r, now=1005, limit=2) == ["b", "c"]
    assert revocations.revoked_ids(r, now=2000) == []


def test_ids_come_back_as_text_whatever_the_client_decodes(r: Any, server: Any) -> None:
    revocations.revoke(r, "t1", ttl=10, now=1000)
    text = fakeredis.FakeRedis(server=server, decode_responses=True)
    assert revocations.revoked_ids(r, now=1000) == revocations.revoked_ids(text, now=1000) == ["t1"]


@pytest.mark.parametrize("task_id,ttl", [("", None), (None, None), ("t1", 0), ("t1", -5)])
def test_bad_revocations_are_refused_and_nothing_is_written(r: Any, task_id: Any, ttl: Any) -> None:
    with pytest.raises(ValueError):
        revocations.revoke(r, task_id, ttl=ttl)
    assert r.zcard(revocations.KEY) == 0


def test_a_worker_copies_new_revocations_into_its_revoked_set(r: Any) -> None:
    revoked = LimitedSet(maxlen=1000, expires=3600)  # Celery's own type for celery.worker.state.revoked
    refresher = signals.Refresher(r, revoked, interval=1)
    revocations.revoke(r, "t1")
    assert refresher.refresh() == 1 and "t1" in revoked
    assert refresher.refresh() == 0  # nothing new: the counter did not move
    revocations.revoke(r, "t2")
    assert refresher.refresh() == 1 and "t2" in revoked and "t1" in revoked


def test_a_worker_keeps_the_latest_revocations_when_its_set_is_smaller(r: Any) -> None:
    revoked = LimitedSet(maxlen=2)
    for n in range(4):
        revocations.revoke(r, f"t{n}", ttl=100 + n)
    signals.Refresher(r, revoked, interval=1).refresh()
    assert "t3" in revoked and "t2" in revoked and "t0" not in revoked


def test_the_revocations_client_is_the_redis_result_backends_made_once() -> None:
    app = Celery("a", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/3", set_as_current=False)
    client = revocations.client_for(app)
    assert client is app.backend.client and revocations.client_for(app) is client


def test_without_a_redis_backend_the_brokers_redis_is_used_with_bounded_connections() -> None:
    app = Celery("b", broker="redis://127.0.0.1:1/2", backend="cache+memory://", set_as_current=False)
    client = revocations.client_for(app)
    assert client.connection_pool.connection_kwargs["db"] == 2
    assert client.connection_pool.max_connections == settings.REVOCATION_CONNECTIONS


def test_without_any_redis_revocations_are_off(caplog: Any) -> None:
    app = Celery("c", broker="amqp://127.0.0.1:1//", backend="rpc://", set_as_current=False)
    assert revocations.client_for(app) is None
    assert "not kept" in caplog.text


# A real Celery worker (in this process, solo pool, in-memory broker and results) running tasks
# whose revocation is in an in-memory Redis it never received through Celery.

RAN: list[str] = []


@pytest.fixture(scope="module")
def worker_server() -> Iterator[fakeredis.FakeServer]:
    """The in-memory Redis the worker's revocation checks read, for the whole module."""
    server = fakeredis.FakeServer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(revocations, "_client", fakeredis.FakeRedis(server=server))
        yield server


@pytest.fixture(scope="module")
def worker_app(worker_server: fakeredis.FakeServer) -> Iterator[Celery]:
    app = Celery("revocations_test", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(task_track_started=True, worker_hijack_root_logger=False,
                    broker_transport_options={"polling_interval": 0.01})

    @app.task(bind=True, name="revocations_test.work")
    def work(self: Any) -> str:
        RAN.append(self.request.id)
        return "done"

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield app


@pytest.fixture
def worker(worker_app: Celery, worker_server: fakeredis.FakeServer) -> Iterator[Celery]:
    RAN.clear()
    worker_server.connected = True
    yield worker_app
    worker_server.connected = True


@pytest.fixture
def wr() -> fakeredis.FakeRedis:
    return revocations._client


def test_a_task_revoked_in_redis_is_stopped_before_its_body_runs(worker: Celery, wr: Any) -> None:
    revocations.revoke(wr, "revoked-1")
    result = worker.tasks["revocations_test.work"].apply_async(task_id="revoked-1")
    with pytest.raises(Exception) as raised:
        result.get(timeout=10, interval=0.02)
    assert type(raised.value).__name__ == "TaskRevokedError"
    assert result.state == "REVOKED"  # stored after Celery's STARTED, never overwritten
    assert "revoked-1" not in RAN


def test_a_task_that_is_not_revoked_runs(worker: Celery, wr: Any) -> None:
    revocations.revoke(wr, "someone-else")
    result = worker.tasks["revocations_test.work"].apply_async(task_id="fine-1")
    assert result.get(timeout=10, interval=0.02) == "done"
    assert RAN == ["fine-1"]


def test_without_redis_a_task_runs_as_it_would_without_the_dashboard(worker: Celery,
                                                                      worker_server: Any) -> None:
    worker_server.connected = False
    result = worker.tasks["revocations_test.work"].apply_async(task_id="fine-2")
    assert result.get(timeout=10, interval=0.02) == "done"
