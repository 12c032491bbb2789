"""The ``gate`` handler's other end (``tests/unit/fixtures/workers/app.py``): a test
sees each invocation of it start, with its worker's pid, and says when it may
return."""

from __future__ import annotations

import socket

WAIT = 10.0


class Gate:
    """A localhost socket the ``gate`` handler connects to: the test sees each handler
    start (with its pid) and decides when it may return."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(WAIT)
        self.port = self._server.getsockname()[1]
        self._open: list[socket.socket] = []

    def arrived(self, timeout: float = WAIT) -> int:
        """Wait for one handler to start; its worker's pid."""
        self._server.settimeout(timeout)
        conn, _ = self._server.accept()
        conn.settimeout(WAIT)
        self._open.append(conn)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(64)
            assert chunk, "handler hung up"
            data += chunk
        return int(data)

    def release_all(self) -> None:
        for conn in self._open:
            conn.sendall(b"go")
            conn.close()
        self._open.clear()

    def close(self) -> None:
        self.release_all()
        self._server.close()
