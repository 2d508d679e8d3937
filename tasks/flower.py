"""Flower entry point: serves under /flower, never open beyond loopback, with few Redis connections."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from tasks import config

if TYPE_CHECKING:
    from celery import Celery

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Flower's pages and API live under this path, so the dashboard's /flower proxy passes them unchanged.
URL_PREFIX = "flower"


def check() -> tuple[str, str]:
    """The (address, port) Flower may bind; exit with one sentence when it would be open to anyone.

    Flower's control endpoints (revoke, shutdown, pool resize) need FLOWER_BASIC_AUTH unless Flower
    listens on loopback only. Flower reads FLOWER_BASIC_AUTH and FLOWER_ADDRESS itself.
    """
    address = os.environ.get("FLOWER_ADDRESS", "")
    if not os.environ.get("FLOWER_BASIC_AUTH", "") and address not in LOOPBACK:
        sys.exit("flower: set FLOWER_BASIC_AUTH=user:password (or FLOWER_ADDRESS=127.0.0.1); "
                 "Flower's control endpoints must not be open")
    port = os.environ.get("FLOWER_PORT", "5555").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"flower: FLOWER_PORT must be a port number, got {port!r}")
    # Flower's default address: every interface.
    config.check_port("flower", address or "0.0.0.0", port, "FLOWER_PORT", "FLOWER_ADDRESS")
    return address, port


def bound_connections(app: Celery, threads: int) -> None:
    """Bound the Redis connections Flower holds (measured, README: 21 with Flower's defaults, 7 with one thread).

    Flower runs every inspect, control command and result read in a thread pool (`Flower.max_workers`,
    unset: min(32, CPUs + 4) threads); each broadcast holds two connections of Celery's broker pool
    (`broker_pool_limit`, 10 by default) at once: one to publish, one for the replies. A pool smaller
    than twice the threads deadlocks (every thread holding one connection, waiting for a second).
    """
    from flower.app import Flower

    Flower.max_workers = threads
    app.conf.broker_pool_limit = 2 * threads


def main() -> None:
    _, port = check()
    try:
        threads = int(os.environ.get("FLOWER_THREADS", "").strip() or 1)
    except ValueError:
        threads = 0
    if threads < 1:
        sys.exit(f"flower: FLOWER_THREADS must be a whole number of at least 1, got {os.environ['FLOWER_THREADS']!r}")
    from celery.app.utils import find_app  # after the check: importing the app connects nowhere yet

    # The first app of CELERY_APP: Flower sees every worker and event on its broker, whichever app
    # they belong to.
    app = find_app(config.celery_apps()[0])
    bound_connections(app, threads)
    sys.exit(app.start(["flower", f"--port={port}", f"--url_prefix={URL_PREFIX}"]))


if __name__ == "__main__":
    main()
