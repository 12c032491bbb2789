"""Shared by the sample components' tests: copies with private resource names."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = REPO / "components"


def copy_component(name: str, dest: Path, replace: dict[str, str] | None = None) -> Path:
    """Copy ``components/<name>`` under ``dest``, renaming buckets/tables in its manifest
    (the moto server is shared by the whole session; each test uses its own names)."""
    folder = dest / name
    shutil.copytree(COMPONENTS / name, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = folder / "component.yaml"
    text = manifest.read_text()
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {manifest}"
        text = text.replace(old, new)
    manifest.write_text(text)
    return folder


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20) -> Any:
    """Poll a remote store (S3/DynamoDB have no change events to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
