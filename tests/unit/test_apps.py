"""CELERY_APP: the apps are found as `celery -A` finds them, and refused with one sentence when unusable."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_dashboard.catalog import CATALOG
from web.apps import check_broker, check_shared_broker, load
from web.config import ConfigError

USERAPP = Path(__file__).resolve().parents[1] / "userapp"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """User modules come and go with each test; the catalog is left as it was (with the demo tasks)."""
    from tasks.celery_app import celery_app

    celery_app.loader.import_default_modules()
    monkeypatch.setenv("REDIS_URL", REDIS)
    monkeypatch.syspath_prepend(str(USERAPP))
    catalog, modules = dict(CATALOG), set(sys.modules)
    yield
    CATALOG.clear()
    CATALOG.update(catalog)
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "")).startswith((str(USERAPP), str(tmp_path))):
            del sys.modules[name]


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Write a module the test imports through CELERY_APP; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        return name

    return write


def refusal(spec: str) -> str:
    with pytest.raises(ConfigError) as error:
        load(spec)
    return str(error.value)


def one_sentence(text: str) -> bool:
    return "\n" not in text and "Traceback" not in text and len(text) < 400


# Finding the apps


@pytest.mark.parametrize("spec", [None, "", " ", "tasks.celery_app", "tasks.celery_app:celery_app",
                                  "tasks.celery_app.celery_app"])
def test_the_demo_app_by_default_and_in_every_celery_a_form(spec: str | None) -> None:
    from tasks.celery_app import celery_app

    assert load(spec) == [celery_app]
    assert {"steps", "long"} <= set(CATALOG)  # its `include` modules were imported


def test_a_tutorial_module_is_found_by_its_module_name() -> None:
    [app] = load("mytasks")
    assert app.main == "mytasks"
    assert "mytasks.add" in app.tasks


def test_a_list_loads_every_app_in_order_once_and_fills_the_catalog() -> None:
    apps = load("mytasks, myapp_launchable,mytasks:app")
    assert [app.main for app in apps] == ["mytasks", "myapp_launchable"]
    assert {"user_count", "user_progress_down"} <= set(CATALOG)


def test_the_demo_app_and_a_user_app_together() -> None:
    apps = load("tasks.celery_app,myapp_launchable")
    assert [app.main for app in apps] == ["tasks", "myapp_launchable"]
    assert {"steps", "user_count"} <= set(CATALOG)


def test_a_module_that_is_not_on_the_path_is_refused_with_what_to_do() -> None:
    text = refusal("no_such_module_here")
    assert "'no_such_module_here'" in text and "PYTHONPATH" in text and one_sentence(text)


def test_a_module_whose_import_fails_says_why_and_where(module: Callable[[str, str], str]) -> None:
    name = module("needs_setting", 'import os\nBROKER = os.environ["NOT_SET_ANYWHERE"]\n')
    text = refusal(name)
    assert "KeyError" in text and "NOT_SET_ANYWHERE" in text and "needs_setting.py, line 2" in text
    assert one_sentence(text)


def test_a_missing_dependency_is_named(module: Callable[[str, str], str]) -> None:
    text = refusal(module("uses_missing", "import not_installed_anywhere\n"))
    assert "ModuleNotFoundError" in text and "not_installed_anywhere" in text and "PYTHONPATH" not in text


def test_a_syntax_error_is_named(module: Callable[[str, str], str]) -> None:
    text = refusal(module("broken_syntax", "def f(:\n"))
    assert "SyntaxError" in text and "broken_syntax.py" in text and one_sentence(text)


def test_a_module_without_a_celery_app_is_refused(module: Callable[[str, str], str]) -> None:
    text = refusal(module("no_app_here", "VALUE = 1\n"))
    assert "no Celery app" in text and "'no_app_here'" in text and one_sentence(text)


def test_a_missing_attribute_is_named() -> None:
    text = refusal("mytasks:application")
    assert "no attribute 'application'" in text and one_sentence(text)
    assert "no attribute 'nope'" in refusal("tasks.celery_app.nope")


def test_something_that_is_not_an_app_is_refused() -> None:
    text = refusal("mytasks:add")
    assert "not a Celery app" in text and one_sentence(text)


# The broker and the result backend


def app(broker: str | None = REDIS, backend: str | None = REDIS, name: str = "mine") -> Celery:
    return Celery(name, broker=broker, backend=backend, set_as_current=False)


@pytest.mark.parametrize("broker", ["redis://localhost:6379/0", "rediss://:secret@example.com:6380/1",
                                    "redis+socket:///run/redis.sock", "redis://a:6379/0;redis://b:6379/0"])
@pytest.mark.parametrize("backend", ["redis://localhost:6379/0", "rediss://example.com:6380/1",
                                     "redis+socket:///run/redis.sock",
                                     "celery_dashboard.backend:ResultBackend+redis://localhost/0"])
def test_redis_brokers_and_backends_are_accepted(broker: str, backend: str) -> None:
    check_broker(app(broker, backend))


@pytest.mark.parametrize("broker", ["amqp://guest@localhost//", "pyamqp://guest:secret@rabbit//", "sqs://",
                                    "memory://", "sentinel://localhost:26379", "redis://a;amqp://b", None])
def test_a_broker_that_is_not_redis_is_refused_with_one_sentence(broker: str | None) -> None:
    with pytest.raises(ConfigError) as error:
        check_broker(app(broker))
    text = str(error.value)
    scheme = (broker or "amqp://").split(";")[-1].partition("://")[0]  # unset: Celery's default, amqp
    assert f"{scheme}://" in text and "'mine'" in text and "Redis pub/sub" in text and "redis://" in text
    assert "secret" not in text and one_sentence(text)


@pytest.mark.parametrize("backend", ["rpc://", "db+sqlite:///results.db", "cache+memcached://127.0.0.1:11211/",
                                     "sentinel://localhost:26379", "mongodb://localhost/", "disabled://"])
def test_a_result_backend_that_is_not_redis_is_refused_with_one_sentence(backend: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_broker(app(backend=backend))
    text = str(error.value)
    assert f"{backend.partition('://')[0]}://" in text and "result backend" in text and "'mine'" in text
    assert one_sentence(text)


def test_an_app_without_a_result_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no result backend") as error:
        check_broker(app(backend=None))
    assert one_sentence(str(error.value))


def test_load_refuses_an_amqp_app_before_anything_else(module: Callable[[str, str], str]) -> None:
    name = module("on_rabbit", 'from celery import Celery\napp = Celery("on_rabbit", broker="amqp://guest@rabbit//",'
                                ' backend="redis://localhost/0")\n')
    text = refusal(name)
    assert "'on_rabbit'" in text and "amqp://" in text and one_sentence(text)


def test_apps_on_one_redis_database_share_a_broker() -> None:
    check_shared_broker([app("redis://localhost:6379/0", name="a"), app("redis://127.0.0.1", name="b"),
                         app("redis://:pw@localhost:6379/0", name="c")])


def test_apps_on_different_brokers_are_refused_without_their_passwords() -> None:
    with pytest.raises(ConfigError) as error:
        check_shared_broker([app("redis://:hunter2@localhost:6379/0", name="a"),
                             app("redis://localhost:6379/1", name="b")])
    text = str(error.value)
    assert "share one broker" in text and "'a'" in text and "'b'" in text and "hunter2" not in text
    assert one_sentence(text)


def test_load_refuses_apps_on_different_brokers(module: Callable[[str, str], str]) -> None:
    name = module("other_db", 'from celery import Celery\napp = Celery("other_db", broker="redis://localhost/5",'
                              ' backend="redis://localhost/5")\n')
    assert "share one broker" in refusal(f"mytasks,{name}")


def test_an_app_on_another_redis_than_redis_url_is_refused() -> None:
    from celery import Celery

    from web.apps import check_index_redis
    from web.config import ConfigError

    app = Celery("elsewhere", broker="redis://localhost:6379/3", backend="redis://localhost:6379/3")
    check_index_redis([app], "redis://127.0.0.1:6379/3")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        check_index_redis([app], "redis://localhost:6379/0")
