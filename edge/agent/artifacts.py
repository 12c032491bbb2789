"""Getting a deployment's artifacts onto the device, and unpacking them safely.

Artifacts are zips addressed by their SHA-256. They come either through the
broker in retained chunks (the embedded default) or from an object store
(a presigned URL, or S3 with the device's credentials). Either way:

* bytes land in ``<cache>/<sha256>.part`` and a transfer interrupted by a
  disconnect or a crash resumes where it stopped (chunks already written are
  listed in ``<sha256>.have``; HTTP resumes with a ``Range`` request);
* the whole file's digest is checked before it is renamed to ``<sha256>.zip``,
  so a tampered artifact fails the deployment before anything is activated;
* ``extract_zip`` refuses absolute paths, ``..``, links and anything over a
  size cap, and unpacks into a temporary folder renamed into place, so a
  release folder either exists complete or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import stat
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from edge.errors import DeployError
from edge.model.deployment import (
    ArtifactManifest,
    ArtifactRef,
    artifact_manifest_topic,
    parse_artifact_manifest,
)
from edge.mqtt.bus import Bus, Message

log = logging.getLogger(__name__)

#: Unpacked size cap of one artifact (a zip bomb stops here).
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_FILES = 50_000
#: How long a transfer may go without a single new chunk before it fails.
STALL_TIMEOUT = 30.0

Progress = Callable[[int, int], None]
Pause = Callable[[str], None]


class ArtifactError(DeployError):
    """An artifact could not be fetched, did not verify, or is unsafe to unpack."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the folder: a power cut leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactCache:
    """``<root>/<sha256>.zip``: verified artifacts; ``.part``/``.have`` while fetching."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.zip"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def finish(self, ref: ArtifactRef, part: Path) -> Path:
        """Check ``part``'s size and digest; rename it into the cache or fail (and drop it)."""
        size = part.stat().st_size
        digest = sha256_file(part)
        if size != ref.size or digest != ref.sha256:
            part.unlink(missing_ok=True)
            (self.root / f"{ref.sha256}.have").unlink(missing_ok=True)
            raise ArtifactError(
                f"artifact {ref.sha256[:12]}: digest mismatch (got {digest[:12]}, "
                f"{size} bytes); nothing was activated"
            )
        final = self.path(ref.sha256)
        part.replace(final)
        fsync_dir(self.root)
        (self.root / f"{ref.sha256}.have").unlink(missing_ok=True)
        return final

    def prune(self, keep: set[str]) -> None:
        for path in self.root.iterdir():
            if path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)


# -- through the broker -------------------------------------------------------------------
class BrokerChunkFetcher:
    """Fetches retained chunks over a connection of its own (clean session), so every
    subscription gets the retained messages again and a resumed transfer sees them all."""

    def __init__(self, connect: Callable[[], Bus], *, stall_timeout: float = STALL_TIMEOUT) -> None:
        self._connect = connect
        self._stall = stall_timeout

    def fetch(
        self,
        ref: ArtifactRef,
        cache: ArtifactCache,
        *,
        progress: Progress,
        pause: Pause,
        cancelled: Callable[[], bool],
    ) -> Path:
        inbox: queue.Queue[Message] = queue.Queue()
        bus = self._connect()
        try:
            bus.subscribe(artifact_manifest_topic(ref.sha256), inbox.put, qos=1)
            manifest = self._manifest(ref, inbox)
            part = cache.root / f"{ref.sha256}.part"
            have_path = cache.root / f"{ref.sha256}.have"
            have = _load_have(have_path, manifest)
            if not have:
                part.unlink(missing_ok=True)
            with _open_part(part, manifest.size) as fd:
                done = sum(_chunk_len(manifest, i) for i in have)
                progress(done, manifest.size)
                if len(have) < len(manifest.chunks):
                    prefix = f"{artifact_manifest_topic(ref.sha256).rsplit('/', 1)[0]}/+"
                    bus.subscribe(prefix, inbox.put, qos=1)
                bad = 0
                written_now = 0
                while len(have) < len(manifest.chunks):
                    if cancelled():
                        raise ArtifactError("transfer cancelled")
                    try:
                        message = inbox.get(timeout=self._stall)
                    except queue.Empty:
                        detail = f"; {bad} chunk(s) failed their digest" if bad else ""
                        raise ArtifactError(
                            f"artifact {ref.sha256[:12]}: transfer stalled at "
                            f"{len(have)}/{len(manifest.chunks)} chunks{detail}"
                        ) from None
                    index = _chunk_index(message.topic)
                    if index is None or index in have or index >= len(manifest.chunks):
                        continue
                    data = message.payload
                    if (
                        len(data) != _chunk_len(manifest, index)
                        or hashlib.sha256(data).hexdigest() != manifest.chunks[index]
                    ):
                        bad += 1
                        log.warning("artifact %s: chunk %d refused (truncated or altered)",
                                    ref.sha256[:12], index)  # fmt: skip
                        continue
                    os.pwrite(fd, data, index * manifest.chunk_size)
                    have.add(index)
                    done += len(data)
                    written_now += 1
                    if written_now % 16 == 0 or len(have) == len(manifest.chunks):
                        os.fsync(fd)
                        write_atomic(have_path, _have_bytes(manifest, have))
                    progress(done, manifest.size)
                    if written_now == 1:
                        os.fsync(fd)
                        write_atomic(have_path, _have_bytes(manifest, have))
                        pause("download")
                os.fsync(fd)
        finally:
            with contextlib.suppress(Exception):
                bus.close()
        return cache.finish(ref, part)

    def _manifest(self, ref: ArtifactRef, inbox: queue.Queue[Message]) -> ArtifactManifest:
        topic = artifact_manifest_topic(ref.sha256)
        try:
            message = inbox.get(timeout=self._stall)
        except queue.Empty:
            raise ArtifactError(
                f"artifact {ref.sha256[:12]}: not on the broker (no retained {topic})"
            ) from None
        manifest = parse_artifact_manifest(message.payload, source=topic)
        if manifest.sha256 != ref.sha256 or manifest.size != ref.size:
            raise ArtifactError(
                f"{topic}: describes {manifest.sha256[:12]} ({manifest.size} bytes), "
                f"the deployment wants {ref.sha256[:12]} ({ref.size} bytes)"
            )
        return manifest


def _chunk_index(topic: str) -> int | None:
    last = topic.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else None


def _chunk_len(manifest: ArtifactManifest, index: int) -> int:
    start = index * manifest.chunk_size
    return min(manifest.chunk_size, manifest.size - start)


def _have_bytes(manifest: ArtifactManifest, have: set[int]) -> bytes:
    return json.dumps({"chunk_size": manifest.chunk_size, "have": sorted(have)}).encode()


def _load_have(path: Path, manifest: ArtifactManifest) -> set[int]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("chunk_size") != manifest.chunk_size:
        return set()
    return {i for i in data.get("have", []) if isinstance(i, int) and 0 <= i < len(manifest.chunks)}


@contextlib.contextmanager
def _open_part(part: Path, size: int) -> Iterator[int]:
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        yield fd
    finally:
        os.close(fd)


# -- from an object store --------------------------------------------------------------------
class _Retry(Exception):
    """A transient failure of one GET: resume with ``Range`` from what is on disk."""


class HttpFetcher:
    """GET a (presigned) URL into the cache, resuming a partial file with ``Range``.

    A connection that breaks mid-body (or a 5xx, or a refused connection) is retried
    from the bytes already on disk until ``timeout`` seconds pass without a new byte.
    A 400/403 on the presigned URL (expired, or the clock is off) switches once to
    ``own_url()``, a GET signed with the device's own credentials, when one is given.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        ca_bundle: Path | None = None,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self._timeout = timeout
        self._ca = ca_bundle
        self._wait = wait

    def fetch(
        self,
        ref: ArtifactRef,
        cache: ArtifactCache,
        url: str,
        *,
        progress: Progress,
        pause: Pause,
        cancelled: Callable[[], bool],
        own_url: Callable[[], str] | None = None,
    ) -> Path:
        part = cache.root / f"{ref.sha256}.part"
        last_byte = time.monotonic()
        delay = 0.1
        paused = False
        while True:
            if cancelled():
                raise ArtifactError("transfer cancelled")
            have = part.stat().st_size if part.exists() else 0
            if have > ref.size:
                part.unlink()
                have = 0
            try:
                before = have
                have, paused = self._get(ref, part, url, have, progress, pause, paused, cancelled)
                break
            except _Expired as exc:
                if own_url is None:
                    raise ArtifactError(f"artifact {ref.sha256[:12]}: GET failed: {exc}") from None
                log.info("artifact %s: presigned GET refused (%s); using the device's "
                         "credentials", ref.sha256[:12], exc)  # fmt: skip
                url, own_url = own_url(), None
                continue
            except _Retry as exc:
                now_have = part.stat().st_size if part.exists() else 0
                if now_have > before:
                    last_byte = time.monotonic()
                    delay = 0.1
                if time.monotonic() - last_byte > self._timeout:
                    raise ArtifactError(
                        f"artifact {ref.sha256[:12]}: transfer stalled at {now_have}/{ref.size} "
                        f"bytes: {exc}"
                    ) from None
                log.warning("artifact %s: download interrupted at %d/%d bytes (%s); resuming",
                            ref.sha256[:12], now_have, ref.size, exc)  # fmt: skip
                self._wait(delay)
                delay = min(delay * 2, 2.0)
        return cache.finish(ref, part)

    def _get(
        self,
        ref: ArtifactRef,
        part: Path,
        url: str,
        have: int,
        progress: Progress,
        pause: Pause,
        paused: bool,
        cancelled: Callable[[], bool],
    ) -> tuple[int, bool]:
        """One GET from byte ``have``; returns the bytes on disk when the body ended."""
        import http.client
        import ssl
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url)  # noqa: S310 - http(s) only, checked by the model
        if have:
            request.add_header("Range", f"bytes={have}-")
        context = ssl.create_default_context(cafile=str(self._ca)) if self._ca else None
        try:
            response = urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=context
            )
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                if have == ref.size:
                    return have, paused
                part.unlink(missing_ok=True)  # not the object we started: start over
                raise _Retry("HTTP 416 for the partial file") from None
            if exc.code in (400, 403):
                raise _Expired(f"HTTP {exc.code}") from None
            if exc.code == 404:
                raise ArtifactError(
                    f"artifact {ref.sha256[:12]}: not in the object store (HTTP 404)"
                ) from None
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Retry(f"HTTP {exc.code}") from None
            raise ArtifactError(
                f"artifact {ref.sha256[:12]}: GET failed: HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retry(str(getattr(exc, "reason", exc)) or type(exc).__name__) from None
        with response:
            if have and (response.status != 206
                         or not str(response.headers.get("Content-Range", "")).startswith(
                             f"bytes {have}-")):  # fmt: skip
                have = 0  # the server ignored the range: start over
            with part.open("ab" if have else "wb") as out:
                progress(have, ref.size)
                try:
                    while True:
                        if cancelled():
                            raise ArtifactError("transfer cancelled")
                        block = response.read(64 * 1024)
                        if not block:
                            break
                        out.write(block)
                        have += len(block)
                        if have > ref.size:
                            break
                        progress(have, ref.size)
                        if not paused:
                            out.flush()
                            os.fsync(out.fileno())
                            paused = True
                            pause("download")
                except (OSError, http.client.HTTPException) as exc:
                    out.flush()
                    os.fsync(out.fileno())
                    raise _Retry(f"{type(exc).__name__}: {exc}") from None
                out.flush()
                os.fsync(out.fileno())
        return have, paused


class _Expired(Exception):
    """The presigned URL was refused (expired, or signed for another clock)."""


# -- unpacking -------------------------------------------------------------------------------
def extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_files: int = MAX_FILES,
    pause: Pause | None = None,
) -> None:
    """Unpack ``archive`` into ``dest`` (which must not exist) or raise ``ArtifactError``.

    The tree is built in ``dest.unpack`` and renamed into place at the end.
    """
    work = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    total = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_files:
                raise ArtifactError(f"{archive.name}: {len(infos)} entries (limit {max_files})")
            for count, info in enumerate(infos):
                rel = _safe_name(archive, info)
                target = work.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                mode = (info.external_attr >> 16) & 0o777
                with zf.open(info) as src, target.open("wb") as out:
                    while True:
                        block = src.read(1 << 16)
                        if not block:
                            break
                        total += len(block)
                        if total > max_bytes:
                            raise ArtifactError(
                                f"{archive.name}: unpacks to more than {max_bytes} bytes "
                                "(zip bomb?)"
                            )
                        out.write(block)
                target.chmod(0o755 if mode & 0o100 else 0o644)
                if count == 0 and pause is not None:
                    pause("unpack")
        _fsync_tree(work)
        if dest.exists():
            shutil.rmtree(dest)
        work.replace(dest)
        fsync_dir(dest.parent)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ArtifactError(f"{archive.name}: not a zip archive ({exc})") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _safe_name(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise ArtifactError(f"{archive.name}: {name!r} is a symbolic link; links are refused")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArtifactError(f"{archive.name}: {name!r} is not a regular file")
    if "\\" in name or "\x00" in name:
        raise ArtifactError(f"{archive.name}: {name!r} is not a portable path")
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise ArtifactError(f"{archive.name}: {name!r} escapes the release folder")
    if path.parts[0].endswith(":"):
        raise ArtifactError(f"{archive.name}: {name!r} escapes the release folder")
    return path


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def wait_for_file(path: Path, poll: float = 0.05) -> None:
    """Test hook: block until ``path`` exists (see ``EDGE_TEST_PAUSE_AT``)."""
    while not path.exists():
        time.sleep(poll)
