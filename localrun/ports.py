"""Free loopback ports for the servers that tests and benchmarks start.

A port found free by binding port 0 comes from the kernel's ephemeral range, the same range
every outgoing connection takes its source port from. Between that check and the server's own
bind, one of those connections (a RabbitMQ node dialling epmd or a peer, a client) can take the
port, and the server dies with eaddrinuse: CI saw a node's prometheus listener fail so. Ports
are therefore drawn from below the ephemeral range, where only a listener can hold one, and
none is handed out twice by this process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # clear of the well-known and commonly configured ports
_given: set[int] = set()


def _first_ephemeral_port() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port no listener holds and no outgoing connection will take."""
    first_ephemeral = _first_ephemeral_port()
    if first_ephemeral - _LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(_LOWEST, first_ephemeral)
            if port not in _given and _is_free(port):
                _given.add(port)
                return port
    # A kernel whose ephemeral range leaves no room below it: the kernel's own choice.
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = int(sock.getsockname()[1])
    _given.add(port)
    return port
