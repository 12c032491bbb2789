"""Retained artifacts that no device needs any more: ``edgectl broker prune``.

A direct deployment leaves each component's zip on the broker as retained chunks
under ``edgectl/artifacts/<sha256>/`` (content-addressed, so one build is
uploaded once, and a device that comes back after days still finds it). A broker
keeps every retained message in memory and in its persistence file, so without
this each new build of a component would add its size there for good.

An artifact is needed while some device's retained desired state names it: that
device may not have fetched it yet. Every other one can go. A device's rollback
runs the versions installed on it, not the broker's copy; ``edgectl deploy``
uploads an artifact again when it finds it missing.

Order matters where a run is cut short: manifests are read before desired states
(an artifact uploaded after the manifests were read is not a candidate at all),
and an artifact's chunks are removed before its manifest, so a manifest that is
still there always leads the next run to whatever of its chunks is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import ValidationError
from edge.fleet.reader import read_retained
from edge.model.deployment import (
    ARTIFACT_PREFIX,
    artifact_chunk_topic,
    artifact_manifest_topic,
    parse_artifact_manifest,
    parse_desired,
    parse_signed,
)
from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

MANIFESTS = f"{ARTIFACT_PREFIX}/+/manifest"
DESIRED_STATES = "edge/+/desired"
# Wait for the broker's PUBACKs every this many removals (and after the last).
_ACK_EVERY = 64

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StoredArtifact:
    """One artifact retained on the broker, and the devices whose desired state names it."""

    sha256: str
    size: int
    chunks: int
    needed_by: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "chunks": self.chunks,
                "needed_by": list(self.needed_by)}  # fmt: skip


@dataclass(frozen=True)
class PruneResult:
    kept: tuple[StoredArtifact, ...]
    removed: tuple[StoredArtifact, ...]
    #: Manifest topics that do not parse: left alone (how many chunks is unknown).
    unreadable: tuple[str, ...]
    #: Desired-state topics that do not parse (no device accepts them either).
    ignored_desired: tuple[str, ...]
    dry_run: bool

    @property
    def freed_bytes(self) -> int:
        return sum(a.size for a in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [a.to_json() for a in self.removed],
            "kept": [a.to_json() for a in self.kept],
            "freed_bytes": self.freed_bytes,
            "unreadable_manifests": list(self.unreadable),
            "ignored_desired_states": list(self.ignored_desired),
        }


def _thing_of(topic: str) -> str:
    return topic.split("/")[1]


def survey(
    bus: Bus, timeout: float = 10.0
) -> tuple[list[StoredArtifact], list[str], list[str]]:
    """The artifacts on the broker (each with the devices that need it), the manifest
    topics that do not parse, and the desired-state topics that do not parse.

    Read as ``fleet status`` reads status documents (QoS 0 and an end-of-burst marker,
    ``edge.fleet.reader``): at QoS 1 a broker with Mosquitto's default queue limits
    drops retained messages beyond about a thousand, and a desired state missed here
    would cost its device the artifact it still needs."""
    manifests = read_retained(bus, [MANIFESTS], timeout=timeout)
    desired = read_retained(bus, [DESIRED_STATES], timeout=timeout)
    needed: dict[str, list[str]] = {}
    ignored: list[str] = []
    for topic, raw in sorted(desired.items()):
        try:
            state = parse_desired(parse_signed(raw, source=topic).document, source=topic)
        except ValidationError as exc:
            log.warning("ignoring %s: %s", topic, exc)
            ignored.append(topic)
            continue
        for spec in state.components.values():
            needed.setdefault(spec.artifact.sha256, []).append(_thing_of(topic))
    stored: list[StoredArtifact] = []
    unreadable: list[str] = []
    for topic, raw in sorted(manifests.items()):
        try:
            manifest = parse_artifact_manifest(raw, source=topic)
        except ValidationError as exc:
            log.warning("leaving %s alone: %s", topic, exc)
            unreadable.append(topic)
            continue
        if topic != artifact_manifest_topic(manifest.sha256):
            log.warning("leaving %s alone: it names artifact %s", topic, manifest.sha256)
            unreadable.append(topic)
            continue
        things = tuple(sorted(set(needed.get(manifest.sha256, ()))))
        stored.append(StoredArtifact(manifest.sha256, manifest.size, len(manifest.chunks),
                                     things))  # fmt: skip
    return stored, unreadable, ignored


def remove_artifact(bus: Bus, artifact: StoredArtifact) -> None:
    """Clear its retained chunks, then its manifest (an empty retained message removes one)."""
    topics = [artifact_chunk_topic(artifact.sha256, i) for i in range(artifact.chunks)]
    topics.append(artifact_manifest_topic(artifact.sha256))
    for index, topic in enumerate(topics):
        wait = index == len(topics) - 1 or index % _ACK_EVERY == _ACK_EVERY - 1
        bus.publish(topic, b"", qos=1, retain=True, timeout=30 if wait else None)


def prune(
    bus: Bus,
    *,
    dry_run: bool = False,
    timeout: float = 10.0,
    progress: Progress | None = None,
) -> PruneResult:
    """Remove every retained artifact that no retained desired state names."""
    stored, unreadable, ignored = survey(bus, timeout)
    kept = tuple(a for a in stored if a.needed_by)
    removed = tuple(a for a in stored if not a.needed_by)
    if not dry_run:
        if progress is not None:
            progress("prune", 0, len(removed))
        for done, artifact in enumerate(removed, 1):
            remove_artifact(bus, artifact)
            if progress is not None:
                progress("prune", done, len(removed))
    return PruneResult(kept, removed, tuple(unreadable), tuple(ignored), dry_run)
