"""A TCP proxy the test controls: put it between the agent and a cloud endpoint, then cut it.

``cut()`` resets every open connection and refuses new ones (they are accepted
and closed at once, which a client sees as a reset connection: an endpoint that
went away); ``restore()`` lets traffic through again. With ``tls`` set the
proxy terminates TLS with that server context and speaks plain TCP to the
target, which turns a plain HTTP moto server into an HTTPS endpoint with its
own CA (the Snowball Edge profile's S3 on port 8443).

``connections`` and ``refused`` count what happened, so a test can check that
the agent really tried while the endpoint was cut.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from tests.harness.ports import free_port


class TcpProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port()
        self._tls = tls
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self.refused = 0
        self._listener = socket.create_server((self.host, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="tcpproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore()``."""
        self._cut.set()
        with self._lock:
            socks = list(self._open)
            self._open.clear()
        for sock in socks:
            _reset(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._thread.join(2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                _reset(client)
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self._tls is not None:
                client.settimeout(10)
                client = self._tls.wrap_socket(client, server_side=True)
                client.settimeout(None)
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except (OSError, ssl.SSLError):
            _reset(client)
            return
        with self._lock:
            if self._cut.is_set():
                _reset(client)
                _reset(upstream)
                return
            self._open.update((client, upstream))
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), as a vanished endpoint or a cut link looks to a client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()


@pytest.fixture
def moto_proxy(moto_server: object) -> Iterator[TcpProxy]:
    """A cuttable TCP proxy in front of the session's moto server."""
    server = moto_server
    proxy = TcpProxy(server.host, server.port)  # type: ignore[attr-defined]
    yield proxy
    proxy.close()
