"""The ports local servers get: free, never handed out twice, and out of the range outgoing
connections draw their source ports from (so none can take one before its server binds it)."""

from __future__ import annotations

import socket
from pathlib import Path

from localrun import ports
from localrun.ports import free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    given = [free_port() for _ in range(300)]
    assert len(set(given)) == len(given)
    assert all(1024 <= port < first_ephemeral for port in given)
    for port in given[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_a_listener_holds_is_never_given() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        held = listener.getsockname()[1]
        assert not ports._is_free(held)
    assert ports._is_free(held)
