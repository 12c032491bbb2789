"""Real Mosquitto brokers for tests and benchmarks, one per test, on a free port.

Why a real broker: the agent's delivery guarantees (QoS 1 intake acknowledged
only after a durable write, persistent sessions across broker restarts, ACLs
keyed on a device's certificate) are broker behaviour; a fake would only prove
that the fake agrees with us. Mosquitto starts in a few milliseconds, so every
test can have its own and no test sees another's retained messages.

Why these config lines:

- ``set_tcp_nodelay true`` always: with Nagle on, a QoS 1 round trip on
  loopback takes ~88 ms instead of ~0.4 ms, which makes latency tests and
  benchmarks measure the kernel's delayed-ACK timer instead of our code.
- ``listener PORT 127.0.0.1`` explicitly, never 1883: a system broker may own
  the default port, and a test that quietly used it would prove nothing.
- ``max_queued_messages`` large: tests queue thousands of QoS 1 messages for
  offline persistent sessions and must not lose them to the default limit.

Fixtures: ``mosquitto`` (function scope), ``mosquitto_factory`` (function scope,
call it with options), ``mosquitto_session`` (session scope, for tests that only
need some broker: use unique topics and client ids there), ``mosquitto_ca``
(session-scoped test CA, so TLS tests do not regenerate keys).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.certs import Ca, CertPair, make_ca
from tests.harness.ports import free_port

HOST = "127.0.0.1"
# Where Debian puts the broker; /usr/sbin is not on a normal user's PATH.
_FALLBACK_BINARIES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_BIND_RETRIES = 3


class BrokerStartError(RuntimeError):
    """The broker process exited or never listened; the message carries its log tail."""


def find_mosquitto() -> str:
    """Locate the broker binary: ``$MOSQUITTO``, then PATH, then Debian's sbin."""
    candidates = [os.environ.get("MOSQUITTO", ""), shutil.which("mosquitto") or ""]
    candidates.extend(_FALLBACK_BINARIES)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerStartError(
        "mosquitto not found (set $MOSQUITTO or run `./tasks setup`, which installs it)"
    )


def tcp_nodelay(client: mqtt.Client) -> mqtt.Client:
    """Disable Nagle on every socket ``client`` opens, reconnects included.

    ``on_socket_open`` is paho 2.x's hook that runs right after the TCP (and TLS)
    socket exists and before CONNECT is sent, so the very first packets already
    go out unbatched. It replaces any ``on_socket_open`` set earlier.
    """

    def _on_socket_open(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = _on_socket_open
    return client


class MosquittoBroker:
    """One ``mosquitto -c <conf>`` subprocess with its config, log and data in ``workdir``.

    The port is chosen once and kept across ``restart()``, and so is the
    persistence directory, so a restart looks to clients exactly like a broker
    reboot. The log file is appended to across restarts so a failing test can
    show the whole history with ``log_text()``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        tls: bool = False,
        acl: str | None = None,
        persistence: bool = False,
        ca: Ca | None = None,
        port: int | None = None,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 100,
        verbose: bool = False,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.acl = acl
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.verbose = verbose
        self.extra_config = tuple(extra_config)
        self.host = HOST
        self._port = port
        self._port_fixed = port is not None
        self._ca = ca
        self._server: CertPair | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.data_dir = workdir / "data"

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The listener port; chosen on first ``start()`` and kept afterwards."""
        if self._port is None:
            raise BrokerStartError("broker has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://`` or ``mqtts://`` URL, the form device files and the CLI accept."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- TLS material ----------------------------------------------------------

    @property
    def ca(self) -> Ca:
        """The CA that signs the server and client certificates (made on demand)."""
        if self._ca is None:
            self._ca = make_ca(self.workdir / "ca")
        return self._ca

    def client_cert(self, cn: str) -> CertPair:
        """Issue a client certificate whose CN becomes the MQTT user name (for ACLs)."""
        return self.ca.issue(cn, self.workdir / "clients")

    def paho_client(
        self, client_id: str = "", *, cn: str | None = None, userdata: Any = None
    ) -> mqtt.Client:
        """A paho MQTT 5 client for this broker: TCP_NODELAY, and TLS with a cert for ``cn``.

        Not connected: callers set callbacks first, then ``connect(b.host, b.port)``.
        On a TLS broker ``cn`` defaults to ``client_id``; pass ``cn=""`` to connect
        without a client certificate (which the broker must refuse).
        """
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            userdata=userdata,
        )
        tcp_nodelay(client)
        if self.tls:
            name = client_id if cn is None else cn
            if name:
                pair = self.client_cert(name)
                client.tls_set(
                    ca_certs=str(self.ca.cert), certfile=str(pair.cert), keyfile=str(pair.key)
                )
            else:
                client.tls_set(ca_certs=str(self.ca.cert))
        return client

    # -- config ------------------------------------------------------------------

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with (also written to ``conf_path``)."""
        lines = [
            "# written by tests/harness/mosquitto.py",
            "per_listener_settings false",
            # Stay root when started as root; otherwise mosquitto drops to the
            # `mosquitto` user, which cannot write this test's temp folder.
            f"user {getpass.getuser()}",
            "set_tcp_nodelay true",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            "log_dest stderr",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        lines += (
            ["log_type all"]
            if self.verbose
            else [
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
            ]
        )
        if self.persistence:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lines += [
                "persistence true",
                # mosquitto requires the trailing slash on the location.
                f"persistence_location {self.data_dir}/",
                "persistence_file mosquitto.db",
                # Seconds between saves: small, so a SIGKILL loses at most ~1 s.
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        lines.append(f"allow_anonymous {'false' if self.tls else 'true'}")
        lines.append(f"listener {self.port} {self.host}")
        if self.tls:
            if self._server is None:
                self._server = self.ca.issue("localhost", self.workdir / "server", server=True)
            lines += [
                f"cafile {self.ca.cert}",
                f"certfile {self._server.cert}",
                f"keyfile {self._server.key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        lines += list(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker and return once its port accepts connections.

        When the port was picked by us (not passed in) and another process took
        it between ``free_port()`` and the bind, try again on a new port.
        """
        if self.running:
            return self
        for attempt in range(_BIND_RETRIES):
            if self._port is None:
                self._port = free_port(self.host)
            try:
                self._spawn(timeout)
                return self
            except BrokerStartError as exc:
                first_bind = not self._port_fixed and attempt + 1 < _BIND_RETRIES
                if first_bind and "Address already in use" in str(exc):
                    self._port = None
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, timeout: float) -> None:
        self.conf_path.write_text(self.config_text())
        log = self.log_path.open("ab")
        log.write(f"=== harness: starting on port {self.port} ===\n".encode())
        log.flush()
        self._log = log
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                # Doubles as the poll interval and as the "did it die?" check.
                code = self._proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._close_log()
                self._proc = None
                raise BrokerStartError(
                    f"mosquitto exited with {code} on port {self.port}:\n{self.log_tail()}"
                )
            if self._accepts_connections():
                self._port_fixed = True  # a restart must come back on the same port
                return
            if time.monotonic() > deadline:
                self.stop(graceful=False)
                raise BrokerStartError(
                    f"mosquitto did not listen on {self.port} within {timeout}s:\n{self.log_tail()}"
                )

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return self.running
        except OSError:
            return False

    def stop(self, timeout: float = 5.0, *, graceful: bool = True) -> None:
        """Stop the broker: SIGTERM (which also saves persistence), SIGKILL if it hangs.

        ``graceful=False`` sends SIGKILL straight away, which is how tests model a
        power cut: only what autosave already wrote survives.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None
        self._close_log()

    def kill(self) -> None:
        """Stop without letting the broker save: a crash or a power cut."""
        self.stop(graceful=False)

    def restart(self, timeout: float = 10.0, *, graceful: bool = True) -> MosquittoBroker:
        """Stop and start again on the same port with the same persistence directory."""
        self.stop(graceful=graceful)
        return self.start(timeout)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- diagnostics -------------------------------------------------------------

    def log_text(self) -> str:
        """The whole broker log, across restarts, for assertions and failure reports."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        port = self._port if self._port is not None else "?"
        return f"MosquittoBroker({self.host}:{port}, tls={self.tls}, {state})"

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MosquittoFactory:
    """What the ``mosquitto_factory`` fixture returns: call it to get a started broker.

    Every broker it made is stopped at teardown, so a failing test cannot leak a
    process into the next one.
    """

    def __init__(self, base: Path, ca: Ca) -> None:
        self._base = base
        self._ca = ca
        self.brokers: list[MosquittoBroker] = []

    def __call__(
        self,
        *,
        tls: bool = False,
        acl: str | None = None,
        persistence: bool = False,
        start: bool = True,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 100,
        verbose: bool = False,
        extra_config: Sequence[str] = (),
    ) -> MosquittoBroker:
        broker = MosquittoBroker(
            self._base / f"mosquitto-{len(self.brokers)}",
            tls=tls,
            acl=acl,
            persistence=persistence,
            ca=self._ca,
            max_queued_messages=max_queued_messages,
            max_inflight_messages=max_inflight_messages,
            verbose=verbose,
            extra_config=extra_config,
        )
        self.brokers.append(broker)
        return broker.start() if start else broker

    def stop_all(self) -> None:
        for broker in self.brokers:
            broker.stop()


@pytest.fixture(scope="session")
def mosquitto_ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    """One test CA per run: key generation is cheap, but not free in every test."""
    return make_ca(tmp_path_factory.mktemp("mqtt-ca"))


@pytest.fixture
def mosquitto(tmp_path: Path, mosquitto_ca: Ca) -> Iterator[MosquittoBroker]:
    """A plain (no TLS, anonymous) broker of this test's own."""
    broker = MosquittoBroker(tmp_path / "mosquitto", ca=mosquitto_ca)
    with broker:
        yield broker


@pytest.fixture
def mosquitto_factory(tmp_path: Path, mosquitto_ca: Ca) -> Iterator[MosquittoFactory]:
    """Start brokers with options (``tls``, ``acl``, ``persistence``, ...); all stopped after."""
    factory = MosquittoFactory(tmp_path, mosquitto_ca)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def mosquitto_session(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_ca: Ca
) -> Iterator[MosquittoBroker]:
    """A plain broker shared by the whole run; use unique topics and client ids on it."""
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto-session"), ca=mosquitto_ca)
    with broker:
        yield broker
