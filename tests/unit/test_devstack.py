"""devstack's port choice: the tests run in two processes (make test), each starting real servers."""
from __future__ import annotations

import socket
from pathlib import Path

from devstack.processes import free_port


def test_a_free_port_is_bindable_and_never_one_an_outgoing_connection_could_take() -> None:
    """A port in the kernel's ephemeral range can be taken by any client's connection between the
    choice and the server's bind (one of the other test process's hundreds of connections)."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(200)}
    assert len(ports) > 150  # spread at random, not one port handed to every caller
    assert not any(low <= port <= high for port in ports)
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
