"""Flower entry point: refuses to serve beyond loopback without basic-auth credentials."""
from __future__ import annotations

import os
import sys

from tasks import config

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main() -> None:
    address = os.environ.get("FLOWER_ADDRESS", "")
    credentials = os.environ.get("FLOWER_BASIC_AUTH", "")
    if not credentials and address not in LOOPBACK:
        sys.exit("flower: set FLOWER_BASIC_AUTH=user:password (or FLOWER_ADDRESS=127.0.0.1); "
                 "Flower's control endpoints must not be open")
    port = os.environ.get("FLOWER_PORT", "5555")
    # The first app of CELERY_APP: Flower sees every worker and event on its broker, whichever app
    # they belong to. Flower reads FLOWER_BASIC_AUTH and FLOWER_ADDRESS from the environment itself.
    app = config.celery_apps()[0]
    os.execvp("celery", ["celery", "-A", app, "flower", f"--port={port}"])


if __name__ == "__main__":
    main()
