"""Free loopback ports for the embedded services."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, timeout: float, alive: object = None) -> bool:
    """Poll until ``host:port`` accepts a TCP connection (a process's readiness has no
    event to wait on); ``alive`` is an optional callable that aborts when it turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False
