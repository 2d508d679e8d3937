"""The tests' harness, re-exported from the project's devstack package (shared with bench/ and scripts/)."""
from devstack import (
    BIN,
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    USERAPP,
    Process,
    Stack,
    add_users,
    free_port,
    sign_in,
    users_cli,
    wait_for,
)

__all__ = ["BIN", "CHROMIUM", "CHROMIUM_ARGS", "ROOT", "USERAPP", "Process", "Stack", "add_users", "free_port",
           "sign_in", "users_cli", "wait_for"]
