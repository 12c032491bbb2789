"""Deterministic zip archives.

The same files must give the same bytes, so an unchanged component hashes to
the same SHA-256 and is never uploaded or redeployed twice. Everything that
varies between machines or runs is pinned: entries sorted by their archive
path, every timestamp 1980-01-01 00:00 (the zip epoch), permissions 0644 for
files and 0755 for executables, a fixed compression level, no directory
entries, no extra fields, and paths relative to the archive root (never the
build machine's).
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
EXEC_MODE = 0o755

# Names that never belong in an artifact: caches, VCS data, build output.
# Excluded at any depth: caches and VCS data.
EXCLUDED_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
)
# Excluded only at a component's top level: build output, local installs, sample
# events. (A vendored package may well have a ``build/`` subpackage of its own.)
TOP_LEVEL_EXCLUDED = frozenset(
    {
        ".edge",
        ".venv",
        "venv",
        "node_modules",
        "build",
        "dist",
        "events",
        "tests",
        ".idea",
        ".vscode",
    }
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
EXCLUDED_FILES = frozenset({".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class Entry:
    """One file to archive: its path inside the zip and where its bytes are."""

    arcname: str
    source: Path
    executable: bool = False


def iter_tree(
    root: Path, prefix: str = "", *, top_level_excluded: frozenset[str] = frozenset()
) -> Iterator[Entry]:
    """Walk ``root`` and yield its files as entries under ``prefix``, skipping build debris.

    Symlinks to files are followed (the artifact holds content, not links);
    symlinked directories are skipped, which keeps a stray ``node_modules``
    link from pulling in the build machine.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        top = here == root
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in EXCLUDED_DIRS
            and not (top and d in top_level_excluded)
            and not (here / d).is_symlink()
        )
        for name in sorted(filenames):
            if name in EXCLUDED_FILES or name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = here / name
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            mode = path.stat().st_mode
            yield Entry(prefix + rel, path, bool(mode & stat.S_IXUSR))


def write_zip(entries: Iterable[Entry], dest: Path) -> str:
    """Write ``entries`` to ``dest`` deterministically and return its SHA-256 hex digest.

    The file is written beside ``dest`` and renamed into place so a reader
    never sees half an archive.
    """
    ordered = sorted(entries, key=lambda e: e.arcname)
    seen: set[str] = set()
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for entry in ordered:
            if entry.arcname in seen:
                continue
            seen.add(entry.arcname)
            info = zipfile.ZipInfo(entry.arcname, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr carries the mode
            mode = EXEC_MODE if entry.executable else FILE_MODE
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, entry.source.read_bytes(), compresslevel=6)
    tmp.replace(dest)
    return sha256_file(dest)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
