"""The Celery apps the dashboard shows, named by CELERY_APP, and the checks they must pass to be shown."""
from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from urllib.parse import urlsplit

from celery import Celery
from celery.app.backends import by_url
from celery.app.utils import find_app
from celery.backends.redis import RedisBackend
from kombu.utils.url import maybe_sanitize_url

from tasks import config as task_config
from web.config import ConfigError

# The listener reads Celery's events from Redis pub/sub, so only kombu's Redis transports will do.
REDIS_BROKER_SCHEMES = ("redis", "rediss", "redis+socket")
# The result backend as Celery resolves it: `redis://`, `rediss://`, and `redis+socket://` (which
# Celery hands to its Redis backend as `socket://`).
REDIS_BACKEND_SCHEMES = ("redis", "rediss", "socket")


def load(spec: str | None = None) -> list[Celery]:
    """Import every app in `spec` (CELERY_APP's form; None or blank = the demo app) and check it.

    Importing an app's module (and its `include`/`imports` modules) fills the catalog for the
    tasks marked `@launchable`. Raises ConfigError with one sentence when an app cannot be found,
    when its broker or result backend is not Redis, or when the apps do not share one broker.
    """
    apps: list[Celery] = []
    for name in task_config.celery_apps(spec):
        app = find(name)
        check_broker(app)
        try:
            app.loader.import_default_modules()  # the app's `include` and `imports`: the catalog
        except Exception as exc:
            raise ConfigError(f"CELERY_APP: importing the task modules of {name!r} failed with "
                              f"{_describe(exc)}") from exc
        if all(app is not seen for seen in apps):
            apps.append(app)
    check_shared_broker(apps)
    return apps


def find(name: str) -> Celery:
    """The Celery app `name` resolves to, as `celery -A name` would find it."""
    module = name.partition(":")[0]
    try:
        found = find_app(name)
    except ModuleNotFoundError as exc:
        if ":" in name and exc.name == name:  # the module imported; the attribute after ":" is missing
            raise ConfigError(f"CELERY_APP names {name!r}, but module {module!r} has no attribute "
                              f"{name.partition(':')[2]!r}") from exc
        parent, _, attribute = module.rpartition(".")
        if ":" not in name and exc.name == module and parent in sys.modules:  # `module.attribute` form
            raise ConfigError(f"CELERY_APP names {name!r}, but module {parent!r} has no attribute "
                              f"{attribute!r}") from exc
        if exc.name and _is_part_of(exc.name, name):
            raise ConfigError(f"CELERY_APP names {name!r}, which cannot be imported from {os.getcwd()}: "
                              "add the directory that holds it to PYTHONPATH") from exc
        raise ConfigError(f"CELERY_APP: importing {name!r} failed with {_describe(exc)}") from exc
    except AttributeError as exc:
        if module in sys.modules:  # imported fine; Celery found no app in it
            raise ConfigError(f"CELERY_APP names {name!r}, which has no Celery app: define "
                              "`app = Celery(...)` in it, or name the app as 'module:attribute'") from exc
        raise ConfigError(f"CELERY_APP: importing {name!r} failed with {_describe(exc)}") from exc
    except Exception as exc:  # the user's module ran and raised: say what and where
        raise ConfigError(f"CELERY_APP: importing {name!r} failed with {_describe(exc)}") from exc
    if not isinstance(found, Celery):
        raise ConfigError(f"CELERY_APP names {name!r}, which is not a Celery app: name the app itself, "
                          "as 'module' or 'module:attribute'")
    return found


def check_broker(app: Celery) -> None:
    """Refuse an app whose broker or result backend is not Redis, with one sentence saying what to do."""
    for url in broker_urls(app):
        scheme = _scheme(url)
        if scheme not in REDIS_BROKER_SCHEMES:
            raise ConfigError(
                f"Celery app {app.main!r} uses broker scheme {scheme}://, but the dashboard reads Celery's "
                "events from Redis pub/sub: set its broker to a redis:// (or rediss://) URL, such as REDIS_URL")
    backend = app.conf.result_backend
    if not backend:
        raise ConfigError(
            f"Celery app {app.main!r} has no result backend, but the dashboard reads results and states "
            "from one: give it backend= a redis:// (or rediss://) URL, such as REDIS_URL")
    if not _is_redis_backend(app, backend):
        scheme = _scheme(backend) if isinstance(backend, str) else getattr(backend, "__name__", "?")
        raise ConfigError(
            f"Celery app {app.main!r} uses result backend scheme {scheme}://, but the dashboard reads "
            "results and states from Redis: set its result backend to a redis:// (or rediss://) URL, such as REDIS_URL")


def check_shared_broker(apps: list[Celery]) -> None:
    """Refuse apps on different brokers (or Redis databases): one listener reads one broker's events."""
    if not apps:
        return
    first, first_url = apps[0], broker_urls(apps[0])[0]
    for app in apps[1:]:
        url = broker_urls(app)[0]
        if _server(url) != _server(first_url):
            raise ConfigError(
                f"The Celery apps in CELERY_APP must share one broker, but {first.main!r} uses "
                f"{maybe_sanitize_url(first_url)} and {app.main!r} uses {maybe_sanitize_url(url)}: "
                "point them at the same Redis URL, such as REDIS_URL")


def check_index_redis(apps: list[Celery], redis_url: str) -> None:
    """Refuse apps whose broker is not the Redis (and database) in REDIS_URL: the dashboard keeps
    its task index there, and a web process that cannot hear the workers of the tasks in that
    index would judge them (another web process on the same index shows them flapping)."""
    if not apps:
        return
    url = broker_urls(apps[0])[0]
    if _server(url) != _server(redis_url):
        raise ConfigError(
            f"Celery app {apps[0].main!r} uses the broker {maybe_sanitize_url(url)}, but REDIS_URL is "
            f"{maybe_sanitize_url(redis_url)}: set REDIS_URL to the app's broker URL, so the dashboard "
            "keeps its index where the workers' events are")


def broker_urls(app: Celery) -> list[str]:
    """The app's broker URLs (several for failover); Celery's default when unset is amqp."""
    raw = app.conf.broker_url
    urls = raw if isinstance(raw, list | tuple) else str(raw or "").split(";")
    return [url.strip() for url in urls if url and url.strip()] or ["amqp://"]


def _scheme(url: str) -> str:
    return url.partition("://")[0] if "://" in url else url


def _is_redis_backend(app: Celery, backend: object) -> bool:
    if not isinstance(backend, str):
        return isinstance(backend, type) and issubclass(backend, RedisBackend)
    scheme = _scheme(backend)
    # `prefix+scheme://`: a backend class (or alias) before the "+", e.g. `redis+socket://` or a
    # `module:Class+redis://` subclass; only the scheme Celery passes on names the server.
    if scheme.rpartition("+")[2] not in REDIS_BACKEND_SCHEMES:
        return False
    try:
        cls, url = by_url(backend, app.loader)
    except Exception:  # an alias or class that does not import is not a Redis backend
        return False
    return isinstance(cls, type) and issubclass(cls, RedisBackend) and _scheme(url or "") in REDIS_BACKEND_SCHEMES


def _server(url: str) -> tuple[str, str, int, str]:
    """Where a Redis URL's events go: kombu names its channels after the database, so it counts."""
    parts = urlsplit(url)
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    if parts.scheme == "redis+socket":
        return "socket", parts.path, 0, (query.get("virtual_host") or query.get("db") or "0").strip("/")
    host = (parts.hostname or "localhost").lower()
    host = "localhost" if host in ("127.0.0.1", "::1") else host
    return host, "", parts.port or 6379, (parts.path.strip("/") or query.get("db") or "0")


def _is_part_of(missing: str, name: str) -> bool:
    """True when the module that is missing is `name`'s own module or one of its packages."""
    path = name.partition(":")[0]
    return path == missing or path.startswith(f"{missing}.")


_LIBRARY_PATHS = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def _describe(exc: BaseException) -> str:
    """`KeyError: 'REDIS_URL' (mytasks.py, line 5)`: the error and the line of the user's code it came from."""
    if isinstance(exc, SyntaxError):  # its text already names the file and line
        return f"{type(exc).__name__}: {exc}"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<") and not frame.filename.startswith(_LIBRARY_PATHS)]
    where = f" ({os.path.basename(frames[-1].filename)}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
