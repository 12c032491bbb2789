"""A local MQTT broker: Mosquitto when the binary exists, else amqtt in-process.

Mosquitto is what devices run, so it is preferred; amqtt (a maintained pure
Python broker) keeps ``edgectl demo`` working on a laptop without it, at the
cost of Nagle's delay on its sockets, which amqtt does not let us disable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from edge.errors import ToolMissing
from edge.local.ports import free_port, wait_listening

log = logging.getLogger(__name__)

_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    for candidate in (os.environ.get("MOSQUITTO"), shutil.which("mosquitto"), *_MOSQUITTO_PATHS):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_config(port: int, *, persistence_dir: Path | None = None) -> str:
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Nagle turns a 0.4 ms QoS 1 round trip into 44-88 ms on loopback.
        "set_tcp_nodelay true",
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    return "\n".join(lines) + "\n"


class LocalBroker:
    """Start with ``start()``, stop with ``stop()``; ``url`` is the mqtt:// address."""

    def __init__(self, *, prefer: str = "auto", port: int | None = None) -> None:
        self.port = port or free_port()
        self.kind = ""
        self._prefer = prefer
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        binary = find_mosquitto() if self._prefer in ("auto", "mosquitto") else None
        if binary:
            self._start_mosquitto(binary, timeout)
        elif self._prefer == "mosquitto":
            raise ToolMissing("mosquitto not found (install it, e.g. apt-get install mosquitto)")
        else:
            self._start_amqtt(timeout)

    def _start_mosquitto(self, binary: str, timeout: float) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-broker-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(mosquitto_config(self.port))
        logf = (Path(self._tmp.name) / "mosquitto.log").open("wb")
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        proc = self._proc
        if not wait_listening("127.0.0.1", self.port, timeout, alive=lambda: proc.poll() is None):
            tail = (Path(self._tmp.name) / "mosquitto.log").read_text()[-500:]
            self.stop()
            raise ToolMissing(f"mosquitto did not start on port {self.port}: {tail.strip()}")
        self.kind = "mosquitto"

    def _start_amqtt(self, timeout: float) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise ToolMissing(
                "no MQTT broker: install mosquitto, or amqtt (pip install 'edgectl[cli]')"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 0},
            },
        }
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._amqtt = Broker(config, loop=loop)
            loop.run_until_complete(self._amqtt.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not wait_listening("127.0.0.1", self.port, timeout):
            raise ToolMissing(f"embedded broker did not start on port {self.port}")
        self.kind = "amqtt"

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._loop is not None and self._amqtt is not None:
            loop = self._loop
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
