"""The real parts, started on private ports for tests, benchmarks and screenshots: redis-server,
Celery workers, the web process and Flower (devstack.stack), and headless Chromium's path and flags.

    from devstack import Stack
    stack = Stack(logdir=Path("logs"))
    stack.start_redis(); stack.start_worker(); url = stack.start_web()
    flower, flower_url = stack.start_flower()
    ...
    stack.stop()   # every process it started, by its own pid
"""
from devstack.chromium import CHROMIUM, CHROMIUM_ARGS
from devstack.processes import BIN, ROOT, USERAPP, Process, free_port, wait_for
from devstack.stack import Stack, add_users, sign_in, users_cli

__all__ = ["BIN", "CHROMIUM", "CHROMIUM_ARGS", "ROOT", "USERAPP", "Process", "Stack", "add_users", "free_port",
           "sign_in", "users_cli", "wait_for"]
