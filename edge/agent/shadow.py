"""A local device shadow per thing, kept by the agent for Greengrass v1 functions.

Follows the AWS IoT device shadow document: ``state.desired`` and
``state.reported``, a ``delta`` of desired keys that differ from reported, a
``version`` that grows by one per update, per-leaf ``metadata`` timestamps,
optimistic locking with a request ``version`` (409 on conflict), ``null``
deleting a key. Each thing's document is one JSON file written atomically, so
it survives restarts and power loss.

Errors are returned as shadow error documents (``{"code", "message"}``), which
is what ``greengrasssdk`` looks for in the response payload.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_THING = re.compile(r"[A-Za-z0-9:_\-]{1,128}")


class ShadowError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def document(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "timestamp": int(time.time())}


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
            if not into[key]:
                del into[key]
        elif isinstance(value, dict):
            fresh: dict[str, Any] = {}
            _merge(fresh, value)
            if fresh:
                into[key] = fresh
        else:
            into[key] = value


def _stamp(value: Any, ts: int) -> Any:
    if isinstance(value, dict):
        return {k: _stamp(v, ts) for k, v in value.items()}
    return {"timestamp": ts}


def _delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = _delta(want, have)
            if sub:
                out[key] = sub
        elif want != have:
            out[key] = want
    return out


class ShadowStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self._clock = clock
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, thing: str) -> Path:
        if not _THING.fullmatch(thing):
            raise ShadowError(400, f"invalid thing name: {thing!r}")
        return self.root / f"{thing}.json"

    def _load(self, thing: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self._path(thing).read_text())
        except FileNotFoundError:
            return None
        return doc

    def _save(self, thing: str, doc: dict[str, Any] | None) -> None:
        path = self._path(thing)
        if doc is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def get(self, thing: str) -> dict[str, Any]:
        with self._lock:
            stored = self._load(thing)
        if stored is None:
            raise ShadowError(404, f"No shadow exists with name: '{thing}'")
        state = stored["state"]
        view: dict[str, Any] = {"state": json.loads(json.dumps(state))}
        delta = _delta(state.get("desired", {}), state.get("reported", {}))
        if delta:
            view["state"]["delta"] = delta
        view.update(metadata=stored["metadata"], version=stored["version"],
                    timestamp=int(self._clock()))
        return view

    def update(self, thing: str, request: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Apply an update request; the accepted document and the delta (if any)."""
        if not isinstance(request, dict) or not isinstance(request.get("state"), dict):
            raise ShadowError(400, "Missing required node: state")
        patch = request["state"]
        unknown = set(patch) - {"desired", "reported"}
        if unknown:
            raise ShadowError(400, f"State contains an invalid node: '{sorted(unknown)[0]}'")
        ts = int(self._clock())
        with self._lock:
            stored = self._load(thing) or {"state": {}, "metadata": {}, "version": 0}
            want = request.get("version")
            if want is not None and want != stored["version"]:
                raise ShadowError(409, "Version conflict")
            for part in ("desired", "reported"):
                if part in patch:
                    section = patch[part]
                    if section is None:
                        stored["state"].pop(part, None)
                        stored["metadata"].pop(part, None)
                        continue
                    if not isinstance(section, dict):
                        raise ShadowError(400, f"Invalid JSON: {part} must be an object")
                    current = stored["state"].setdefault(part, {})
                    _merge(current, section)
                    meta = stored["metadata"].setdefault(part, {})
                    _merge(meta, _stamp({k: v for k, v in section.items() if v is not None}, ts))
                    for key, value in section.items():
                        if value is None:
                            meta.pop(key, None)
            stored["version"] += 1
            self._save(thing, stored)
        accepted = {
            "state": patch,
            "metadata": _stamp({k: v for k, v in patch.items() if v is not None}, ts),
            "version": stored["version"],
            "timestamp": ts,
        }
        delta = _delta(stored["state"].get("desired", {}), stored["state"].get("reported", {}))
        return accepted, ({"state": delta, "version": stored["version"], "timestamp": ts}
                          if delta else None)

    def delete(self, thing: str) -> dict[str, Any]:
        with self._lock:
            stored = self._load(thing)
            if stored is None:
                raise ShadowError(404, f"No shadow exists with name: '{thing}'")
            self._save(thing, None)
        return {"version": stored["version"], "timestamp": int(self._clock())}
