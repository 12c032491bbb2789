"""Serve the function log files (``edge.agent.funclogs``) over MQTT on request.

``edgectl logs --device pi01 [--component C] [--since 10m] [-f]`` publishes a
request on ``edge/<thing>/logs/request``; the agent answers on the request's
``reply_to`` topic (always under ``edgectl/logs/``, so a request cannot make
the agent publish anywhere else) with batches of lines, oldest first, and a
final batch with ``done: true``. A follow request keeps the session open: the
agent polls the files twice a second and sends what was appended, for as long
as the requester renews its lease (every ``LEASE / 3`` seconds); a requester
that vanishes costs the agent at most ``LEASE`` seconds of polling.

Request::

    {"schema": 1, "id": "9f2c...", "reply_to": "edgectl/logs/9f2c...",
     "component": "com.example.Hello" | null, "since": 1795712789.0 | null,
     "limit": 1000, "follow": false}
    {"schema": 1, "id": "9f2c...", "renew": true}      # keep a follow session alive
    {"schema": 1, "id": "9f2c...", "cancel": true}     # end it now

Reply (one or more)::

    {"schema": 1, "id": "9f2c...", "seq": 0, "done": false, "error": null,
     "lines": [{"ts": 1795712789.1, "component": "com.example.Hello",
                "request_id": "...", "text": "what the handler printed"}]}

Files: ``<logs dir>/<component>.log`` is the newest, ``.log.1`` ... ``.log.N``
are older (funclogs.py); each line is ``<ISO time>\\t<request id>\\t<text>``.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.mqtt.bus import Bus, Message

log = logging.getLogger(__name__)

SCHEMA = 1
REPLY_PREFIX = "edgectl/logs/"
LEASE = 30.0
POLL = 0.5
MAX_LIMIT = 10_000
MAX_FOLLOWERS = 8  # concurrent follow sessions (one polling thread each)
BATCH_BYTES = 64 * 1024
_REPLY = re.compile(r"edgectl/logs/[A-Za-z0-9_\-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def request_topic(thing: str) -> str:
    return f"edge/{thing}/logs/request"


@dataclass(frozen=True)
class LogLine:
    ts: float
    component: str
    request_id: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "component": self.component, "request_id": self.request_id,
                "text": self.text}  # fmt: skip


def parse_line(component: str, raw: str) -> LogLine | None:
    stamp, sep, rest = raw.partition("\t")
    if not sep:
        return None
    request_id, _, text = rest.partition("\t")
    try:
        whole, _, frac = stamp.rstrip("Z").partition(".")
        ts = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or 0}")
    except ValueError:
        return None
    return LogLine(ts, component, request_id, text)


def log_files(root: Path, component: str) -> list[Path]:
    """Oldest first: ``.log.N`` ... ``.log.1``, then ``.log``."""
    base = root / f"{_SAFE.sub('_', component)}.log"
    rotated = []
    for path in root.glob(base.name + ".*"):
        suffix = path.name[len(base.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), path))
    return [p for _, p in sorted(rotated, reverse=True)] + ([base] if base.exists() else [])


def read_lines(root: Path, component: str, since: float | None) -> list[LogLine]:
    out: list[LogLine] = []
    for path in log_files(root, component):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            line = parse_line(component, raw)
            if line is not None and (since is None or line.ts >= since):
                out.append(line)
    return out


@dataclass
class _Session:
    id: str
    reply_to: str
    components: tuple[str, ...]
    expires: float
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # component -> (inode, size)
    seq: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)


class LogServer:
    """Answers log requests for the components ``components()`` names."""

    def __init__(
        self,
        bus: Bus,
        thing: str,
        root: Path,
        components: Callable[[], list[str]],
        *,
        clock: Callable[[], float] = time.monotonic,
        lease: float = LEASE,
        poll: float = POLL,
    ) -> None:
        self._bus = bus
        self._root = root
        self._components = components
        self._clock = clock
        self._lease = lease
        self._poll = poll
        self.topic = request_topic(thing)
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._bus.subscribe(self.topic, self._on_request, qos=1)

    def stop(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.stopped.set()

    @property
    def following(self) -> int:
        with self._lock:
            return len(self._sessions)

    # -- requests ----------------------------------------------------------------------
    def _on_request(self, message: Message) -> None:
        self._bus.ack(message)
        try:
            req = json.loads(message.payload)
        except ValueError:
            log.info("log request ignored: not JSON")
            return
        if not isinstance(req, dict) or req.get("schema") != SCHEMA:
            log.info("log request ignored: not a schema %d request", SCHEMA)
            return
        ident = req.get("id")
        if not isinstance(ident, str) or not _ID.fullmatch(ident):
            log.info("log request ignored: bad id")
            return
        if req.get("renew") or req.get("cancel"):
            with self._lock:
                session = self._sessions.get(ident)
                if session is not None and req.get("cancel"):
                    del self._sessions[ident]
                    session.stopped.set()
                elif session is not None:
                    session.expires = self._clock() + self._lease
            return
        reply_to = req.get("reply_to")
        if not isinstance(reply_to, str) or not _REPLY.fullmatch(reply_to):
            log.info("log request ignored: reply_to must be %s<id>", REPLY_PREFIX)
            return
        if req.get("follow") and self.following >= MAX_FOLLOWERS:
            busy = f"{MAX_FOLLOWERS} log sessions are already following; try later"
            self._send(reply_to, ident, 0, [], done=True, error=busy)
            return
        threading.Thread(target=self._serve, args=(ident, reply_to, req), name="logserve",
                         daemon=True).start()  # fmt: skip

    def _serve(self, ident: str, reply_to: str, req: dict[str, Any]) -> None:
        try:
            known = sorted(self._components())
            component = req.get("component")
            if component is not None and component not in known:
                self._send(reply_to, ident, 0, [], done=True,
                           error=f"no component {component!r} on this device "
                                 f"(running: {', '.join(known) or 'none'})")  # fmt: skip
                return
            names = (component,) if isinstance(component, str) else tuple(known)
            since = req.get("since")
            since = float(since) if isinstance(since, int | float) else None
            limit = req.get("limit", 1000)
            limit = max(1, min(int(limit) if isinstance(limit, int) else 1000, MAX_LIMIT))
            follow = bool(req.get("follow"))
            session = _Session(ident, reply_to, names, self._clock() + self._lease)
            # Where following starts, taken before reading: a line appended in between
            # is sent twice rather than never.
            for name in names:
                for path in log_files(self._root, name)[-1:]:
                    st = path.stat()
                    session.offsets[name] = (st.st_ino, st.st_size)
            lines: list[LogLine] = []
            for name in names:
                lines.extend(read_lines(self._root, name, since))
            lines.sort(key=lambda line: line.ts)
            lines = lines[-limit:]
            session.seq = self._send_batches(session, lines, done=not follow)
            if not follow:
                return
            with self._lock:
                self._sessions[ident] = session
            self._follow(session)
        except Exception as exc:
            log.warning("log request %s failed: %s", ident, exc)
            self._send(reply_to, ident, 0, [], done=True, error=f"agent: {exc}")

    def _follow(self, session: _Session) -> None:
        while not session.stopped.wait(self._poll):
            if self._clock() > session.expires:
                with self._lock:
                    self._sessions.pop(session.id, None)
                log.info("log session %s expired (no renewal)", session.id)
                return
            fresh: list[LogLine] = []
            for name in session.components:
                fresh.extend(self._appended(session, name))
            if fresh:
                fresh.sort(key=lambda line: line.ts)
                session.seq = self._send_batches(session, fresh, done=False, start=session.seq)

    def _appended(self, session: _Session, component: str) -> Iterator[LogLine]:
        """Lines written since the last poll, across any number of rotations: find the
        file we were reading by its inode among ``.log.N`` ... ``.log``, finish it, then
        read every newer file whole."""
        files: list[tuple[Path, os.stat_result]] = []
        for path in log_files(self._root, component):
            try:
                files.append((path, path.stat()))
            except FileNotFoundError:
                continue  # rotated away while we looked
        if not files:
            return
        inode, offset = session.offsets.get(component, (None, 0))
        start = 0
        if inode is not None:
            found = [i for i, (_, st) in enumerate(files) if st.st_ino == inode]
            if found:
                start = found[0]
            else:
                offset = 0  # our file is gone (rotated out): everything left is new
        else:
            offset = 0  # no file when the session began: everything is new
        for index, (path, st) in enumerate(files[start:]):
            begin = offset if index == 0 else 0
            if st.st_size < begin:
                begin = 0  # truncated
            if st.st_size > begin:
                yield from self._read_from(path, component, begin, st.st_size)
            session.offsets[component] = (st.st_ino, st.st_size)

    def _read_from(
        self, path: Path, component: str, offset: int, end: int | None = None
    ) -> Iterator[LogLine]:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read() if end is None else f.read(end - offset)
        except OSError:
            return
        for raw in data.decode("utf-8", "replace").splitlines():
            line = parse_line(component, raw)
            if line is not None:
                yield line

    # -- replies -----------------------------------------------------------------------
    def _send_batches(
        self, session: _Session, lines: list[LogLine], *, done: bool, start: int = 0
    ) -> int:
        seq = start
        batch: list[LogLine] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line.text) + 100
            if size >= BATCH_BYTES:
                self._send(session.reply_to, session.id, seq, batch, done=False)
                seq, batch, size = seq + 1, [], 0
        if batch or done:
            self._send(session.reply_to, session.id, seq, batch, done=done)
            seq += 1
        return seq

    def _send(
        self, topic: str, ident: str, seq: int, lines: list[LogLine], *, done: bool,
        error: str | None = None,
    ) -> None:  # fmt: skip
        payload = json.dumps(
            {"schema": SCHEMA, "id": ident, "seq": seq, "done": done, "error": error,
             "lines": [line.to_json() for line in lines]},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        try:
            self._bus.publish(topic, payload, qos=1)
        except Exception as exc:
            log.info("log reply to %s not sent: %s", topic, exc)
