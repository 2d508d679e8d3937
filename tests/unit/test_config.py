from __future__ import annotations

import pytest

from tasks import config as task_config
from web import config as web_config


def test_plain_redis_url_is_left_alone() -> None:
    assert task_config.redis_url("redis://h:6379/0") == "redis://h:6379/0"


def test_rediss_url_gets_cert_reqs_none_for_heroku() -> None:
    url = task_config.redis_url("rediss://:pw@h:25070/0")
    assert url == "rediss://:pw@h:25070/0?ssl_cert_reqs=none"


def test_rediss_url_keeps_an_explicit_choice() -> None:
    assert task_config.redis_url("rediss://h/0?ssl_cert_reqs=required").endswith("ssl_cert_reqs=required")


def test_empty_redis_url_means_local_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", " ")
    assert task_config.redis_url() == task_config.DEFAULT_REDIS_URL


def test_production_without_secret_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(web_config.ConfigError, match="SECRET_KEY"):
        web_config.from_env()


def test_heroku_dyno_counts_as_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("DYNO", "web.1")
    with pytest.raises(web_config.ConfigError):
        web_config.from_env()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "s3cret" * 6)
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("REDIS_URL", "rediss://example:6380/1")
    monkeypatch.setenv("ASYNC_MODE", "gevent")
    settings = web_config.from_env()
    assert settings["SECRET_KEY"] == "s3cret" * 6
    assert settings["PORT"] == 8123
    assert settings["REDIS_URL"].endswith("ssl_cert_reqs=none")
    assert settings["ASYNC_MODE"] == "gevent"


@pytest.mark.parametrize("name,value", [("PORT", "eighty"), ("ASYNC_MODE", "tornado")])
def test_bad_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=name):
        web_config.from_env()


def test_a_short_secret_key_is_refused_where_sign_in_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "change-me")
    monkeypatch.setenv("HOST", "0.0.0.0")
    with pytest.raises(web_config.ConfigError, match="SECRET_KEY has 9 characters"):
        web_config.from_env()


def test_without_secret_key_every_web_process_gets_the_one_kept_in_redis() -> None:
    import fakeredis

    server = fakeredis.FakeServer()
    first = web_config.shared_secret_key(fakeredis.FakeRedis(server=server))
    second = web_config.shared_secret_key(fakeredis.FakeRedis(server=server))
    assert first == second and len(first) == 64
    assert web_config.shared_secret_key(fakeredis.FakeRedis()) != first  # generated, never a fixed string
