"""Artifacts on the device: chunk transfer with resume and refusal of bad chunks (over an
in-memory bus), digest checks, and safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from edge.agent.artifacts import ArtifactCache, ArtifactError, BrokerChunkFetcher, extract_zip
from edge.model.deployment import ArtifactManifest, ArtifactRef, artifact_manifest_topic
from edge.model.topics import matches
from edge.mqtt.bus import Message, MessageHandler


class RetainedBus:
    """A broker of retained messages only: a subscription gets what matches, at once."""

    def __init__(self, retained: dict[str, bytes]) -> None:
        self.retained = retained
        self.delivered: list[str] = []

    def connect(self, timeout: float = 10.0) -> None: ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        for topic, payload in sorted(self.retained.items()):
            if matches(topic_filter, topic):
                self.delivered.append(topic)
                handler(Message(topic, payload, qos=1, retain=True))

    def unsubscribe(self, topic_filter: str) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None,
                timeout: float | None = None, expiry: int | None = None) -> None: ...  # fmt: skip

    def ack(self, message: Message) -> None: ...

    def on_connection_change(self, handler: Callable[[bool], None]) -> None: ...

    def close(self) -> None: ...


def chunked(data: bytes, size: int) -> tuple[ArtifactRef, dict[str, bytes]]:
    sha = hashlib.sha256(data).hexdigest()
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    manifest = ArtifactManifest(sha, len(data), size,
                                tuple(hashlib.sha256(c).hexdigest() for c in chunks))  # fmt: skip
    retained = {artifact_manifest_topic(sha): json.dumps(manifest.to_json()).encode()}
    retained |= {f"edgectl/artifacts/{sha}/{i}": c for i, c in enumerate(chunks)}
    return ArtifactRef(sha, len(data)), retained


def fetch(bus: RetainedBus, ref: ArtifactRef, cache: ArtifactCache,
          pause: Callable[[str], None] = lambda p: None) -> Path:  # fmt: skip
    fetcher = BrokerChunkFetcher(lambda: bus, stall_timeout=0.2)
    return fetcher.fetch(ref, cache, progress=lambda d, t: None, pause=pause,
                         cancelled=lambda: False)  # fmt: skip


class Interrupted(Exception):
    pass


def test_transfer_resumes_from_the_chunks_already_written(tmp_path):
    data = bytes(range(256)) * 40  # 10240 bytes, 10 chunks
    ref, retained = chunked(data, 1024)
    cache = ArtifactCache(tmp_path)

    def crash(phase: str) -> None:
        raise Interrupted  # as if killed right after the first chunk was made durable

    with pytest.raises(Interrupted):
        fetch(RetainedBus(retained), ref, cache, crash)
    assert json.loads((tmp_path / f"{ref.sha256}.have").read_text())["have"] == [0]
    bus = RetainedBus(retained)
    path = fetch(bus, ref, cache)
    assert path.read_bytes() == data and not (tmp_path / f"{ref.sha256}.have").exists()


def test_truncated_chunk_is_refused_and_the_transfer_stalls_with_a_reason(tmp_path):
    ref, retained = chunked(b"x" * 3000, 1024)
    retained[f"edgectl/artifacts/{ref.sha256}/1"] = b"x" * 10
    with pytest.raises(ArtifactError, match=r"stalled at 2/3 chunks; 1 chunk\(s\) failed"):
        fetch(RetainedBus(retained), ref, ArtifactCache(tmp_path))


def test_missing_artifact_and_digest_mismatch(tmp_path):
    ref, retained = chunked(b"y" * 100, 64)
    with pytest.raises(ArtifactError, match="not on the broker"):
        fetch(RetainedBus({}), ref, ArtifactCache(tmp_path))
    wrong = ArtifactRef("0" * 64, 100)
    retained = {k.replace(ref.sha256, wrong.sha256): v for k, v in retained.items()}
    manifest = json.loads(retained[artifact_manifest_topic(wrong.sha256)])
    manifest["sha256"] = wrong.sha256
    retained[artifact_manifest_topic(wrong.sha256)] = json.dumps(manifest).encode()
    with pytest.raises(ArtifactError, match="digest mismatch"):
        fetch(RetainedBus(retained), wrong, ArtifactCache(tmp_path))
    assert not list(tmp_path.glob("*.part"))


def make_zip(entries: list[tuple[str, bytes, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf


def write(tmp_path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip(entries).getvalue())
    return path


REG = stat.S_IFREG | 0o644


def test_extracts_into_place_with_modes(tmp_path):
    archive = write(tmp_path, [("app.py", b"x=1", REG), ("bin/run", b"#!", stat.S_IFREG | 0o755)])
    dest = tmp_path / "release"
    extract_zip(archive, dest)
    assert (dest / "app.py").read_bytes() == b"x=1"
    assert (dest / "bin" / "run").stat().st_mode & 0o100
    assert not (tmp_path / "release.unpack").exists()


@pytest.mark.parametrize(
    ("name", "mode", "message"),
    [
        ("/etc/passwd", REG, "escapes the release folder"),
        ("../../evil.py", REG, "escapes the release folder"),
        ("a/../../evil.py", REG, "escapes the release folder"),
        ("link", stat.S_IFLNK | 0o777, "symbolic link"),
        ("c:\\evil", REG, "not a portable path"),
    ],
)
def test_unsafe_entries_are_refused_and_nothing_is_left(tmp_path, name, mode, message):
    archive = write(tmp_path, [("ok.py", b"1", REG), (name, b"/etc", mode)])
    with pytest.raises(ArtifactError, match=message):
        extract_zip(archive, tmp_path / "release")
    assert not (tmp_path / "release").exists() and not (tmp_path / "release.unpack").exists()


def test_zip_bomb_stops_at_the_cap(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 5_000_000)
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(buf.getvalue())
    assert archive.stat().st_size < 50_000
    with pytest.raises(ArtifactError, match="more than 1000000 bytes"):
        extract_zip(archive, tmp_path / "release", max_bytes=1_000_000)
