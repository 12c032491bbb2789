"""Free TCP ports for brokers and servers that tests start.

Every test starts its own broker on its own port so tests (and engineers on the
same machine) never share one; port 1883 is deliberately never handed out,
because a system Mosquitto may already own it and a test that silently talked to
that broker would prove nothing.
"""

from __future__ import annotations

import socket

# Ports a test must never use: a system broker may be listening there.
RESERVED_PORTS = frozenset({1883, 8883})


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free on ``host`` a moment ago.

    The kernel picks the port (bind to 0), so two parallel callers do not race
    on a guessed number. There is still a small window between closing the probe
    socket and the server binding; ``MosquittoBroker`` retries with a new port
    when its first bind fails, which closes that window in practice.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
