"""The direct backend's control-plane documents and topics (reference: docs/deploy.md).

Everything ``edgectl`` and a device say to each other about deployments is here,
so the CLI, the agent, the fleet view and simulated devices speak one
vocabulary:

* ``edge/<thing>/desired`` (retained, QoS 1, written by ``edgectl``): a
  ``SignedDesired`` envelope around a ``DesiredState``, the complete set of
  components the device must run. Retained, so a device that was offline gets
  the newest one when it reconnects; complete, so applying it twice changes
  nothing.
* ``edge/<thing>/deployment`` (retained, QoS 1, written by the agent): the
  ``DeploymentReport`` of the newest document the agent has seen, republished
  on every transition. The same report is embedded as ``deployment`` in the
  status document on ``edge/<thing>/status``.
* ``edgectl/artifacts/<sha256>/manifest`` and ``edgectl/artifacts/<sha256>/<n>``
  (retained, QoS 1, written by ``edgectl``): an artifact in chunks, for devices
  without an object store. Content-addressed, so one copy serves a whole fleet.

Parsing is strict and every fault is a one-line ``ValidationError`` naming the
topic, the dotted field and the value. Signing and verification live in
``edge.deploy.signing``; this module only defines the bytes that are signed
(``canonical_json``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from edge.errors import ValidationError
from edge.model._reader import Section, show

__all__ = [
    "ARTIFACT_PREFIX",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_HEALTH_WINDOW",
    "PHASES",
    "SCHEMA",
    "STATES",
    "TERMINAL_STATES",
    "ArtifactManifest",
    "ArtifactRef",
    "ComponentSpec",
    "DeploymentReport",
    "DesiredState",
    "RunningComponent",
    "S3Source",
    "SignedDesired",
    "SmokeEvent",
    "artifact_chunk_topic",
    "artifact_manifest_topic",
    "canonical_json",
    "deployment_topic",
    "desired_topic",
    "parse_artifact_manifest",
    "parse_desired",
    "parse_report",
    "parse_signed",
]

SCHEMA = 1
#: QUEUED: received, waiting for the deployment in flight to reach a safe point.
#: IN_PROGRESS: being applied (``phase`` says where). The other three are final.
STATES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "ROLLED_BACK")
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "ROLLED_BACK"})
#: The phases of IN_PROGRESS, in order.
PHASES = ("download", "unpack", "switch", "health")
DEFAULT_HEALTH_WINDOW = 10.0
DEFAULT_CHUNK_SIZE = 128 * 1024
ARTIFACT_PREFIX = "edgectl/artifacts"
SIGNATURE_ALGORITHM = "ed25519"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-zA-Z0-9\-_.]{1,128}")
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


# -- topics ---------------------------------------------------------------------------
def desired_topic(thing: str) -> str:
    return f"edge/{thing}/desired"


def deployment_topic(thing: str) -> str:
    return f"edge/{thing}/deployment"


def artifact_manifest_topic(sha256: str) -> str:
    return f"{ARTIFACT_PREFIX}/{sha256}/manifest"


def artifact_chunk_topic(sha256: str, index: int) -> str:
    return f"{ARTIFACT_PREFIX}/{sha256}/{index}"


def canonical_json(data: Any) -> bytes:
    """The exact bytes that are signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# -- the desired state ------------------------------------------------------------------
@dataclass(frozen=True)
class S3Source:
    """Where to fetch an artifact from an object store; ``url`` is a presigned GET."""

    bucket: str
    key: str
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"bucket": self.bucket, "key": self.key}
        if self.url is not None:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class ArtifactRef:
    """A zip addressed by its SHA-256. No ``s3``: it travels through the broker in chunks."""

    sha256: str
    size: int
    s3: S3Source | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.s3 is not None:
            data["s3"] = self.s3.to_json()
        return data


@dataclass(frozen=True)
class SmokeEvent:
    """An event the agent runs through a new version before switching to it."""

    topic: str
    payload: bytes

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "payload_b64": base64.b64encode(self.payload).decode()}


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    version: str
    artifact: ArtifactRef
    smoke: SmokeEvent | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": self.version, "artifact": self.artifact.to_json()}
        if self.smoke is not None:
            data["smoke"] = self.smoke.to_json()
        return data

    @property
    def key(self) -> tuple[str, str]:
        """What makes two specs the same deployment of a component."""
        return (self.version, self.artifact.sha256)


@dataclass(frozen=True)
class DesiredState:
    """Everything device ``thing`` must run. ``sequence`` only grows: a document with a
    lower sequence than one already accepted is a replay and is rejected."""

    thing: str
    deployment_id: str
    sequence: int
    created_at: float
    components: Mapping[str, ComponentSpec]
    health_window: float = DEFAULT_HEALTH_WINDOW
    #: What ``edgectl rollback`` returns to: the components this document replaced.
    previous: Mapping[str, ComponentSpec] = field(default_factory=dict)
    rollout: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "thing": self.thing,
            "deployment_id": self.deployment_id,
            "sequence": self.sequence,
            "created_at": self.created_at,
            "components": {n: c.to_json() for n, c in sorted(self.components.items())},
            "health": {"window_s": self.health_window},
            "previous": {n: c.to_json() for n, c in sorted(self.previous.items())},
        }
        if self.rollout is not None:
            data["rollout"] = self.rollout
        return data

    def same_components(self, other: DesiredState | None) -> bool:
        if other is None or set(self.components) != set(other.components):
            return False
        return all(c.key == other.components[n].key for n, c in self.components.items())


@dataclass(frozen=True)
class SignedDesired:
    """The envelope on ``edge/<thing>/desired``: the document and its Ed25519 signature
    over ``canonical_json(document)``. ``key_id``: the first 16 hex digits of the
    SHA-256 of the raw 32-byte public key."""

    document: Mapping[str, Any]
    key_id: str
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        return canonical_json(self.document)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "document": dict(self.document),
            "signature": {
                "alg": SIGNATURE_ALGORITHM,
                "key_id": self.key_id,
                "value": base64.b64encode(self.signature).decode(),
            },
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


def parse_signed(payload: bytes, *, source: str) -> SignedDesired:
    """The envelope (not yet verified, document not yet parsed)."""
    data = _json(payload, source)
    doc = Section.of(data, source=source, field="", keys=("schema", "document", "signature"))
    _schema(doc)
    document = doc.required("document")
    if not isinstance(document, dict):
        doc.fail("document", f"{show(document)} is not an object", document)
    sig = doc.required_section("signature", ("alg", "key_id", "value"))
    sig.choice("alg", (SIGNATURE_ALGORITHM,))
    key_id = sig.matching("key_id", _KEY_ID, "16 lowercase hex digits")
    value = sig.string("value")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        sig.fail("value", "is not base64", value[:20])
    if len(raw) != 64:
        sig.fail("value", f"is {len(raw)} bytes, an Ed25519 signature is 64", value[:20])
    return SignedDesired(document=document, key_id=key_id, signature=raw)


def peek_identity(payload: bytes) -> tuple[str, int]:
    """The deployment id and sequence a desired-state payload claims, read without
    trusting it: a rejected document is still reported under the id it carries."""
    try:
        document = json.loads(payload).get("document", {})
        return str(document.get("deployment_id", "unknown"))[:128], int(
            document.get("sequence", 0)
        )
    except (ValueError, AttributeError, TypeError):
        return "unknown", 0


def parse_desired(data: object, *, source: str) -> DesiredState:
    doc = Section.of(
        data,
        source=source,
        field="document",
        keys=(
            "schema", "thing", "deployment_id", "sequence", "created_at", "components",
            "health", "previous", "rollout",
        ),
    )  # fmt: skip
    _schema(doc)
    thing = doc.matching("thing", _NAME, "a thing name")
    deployment_id = doc.matching("deployment_id", _ID, "a deployment id")
    sequence = doc.integer("sequence", 0, minimum=1)
    if not doc.has("sequence"):
        doc.fail("sequence", "required")
    created = doc.get("created_at")
    if not isinstance(created, int | float) or isinstance(created, bool):
        doc.fail("created_at", f"{show(created)} is not a timestamp", created)
    window = DEFAULT_HEALTH_WINDOW
    health = doc.section("health", ("window_s",))
    if health is not None:
        raw = health.get("window_s")
        if raw is not None:
            if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 <= raw <= 3600:
                health.fail("window_s", f"{show(raw)} is not a number of seconds (0-3600)", raw)
            window = float(raw)
    rollout = doc.get("rollout")
    if rollout is not None and not (isinstance(rollout, str) and _ID.fullmatch(rollout)):
        doc.fail("rollout", f"{show(rollout)} is not a rollout id", rollout)
    return DesiredState(
        thing=thing,
        deployment_id=deployment_id,
        sequence=sequence,
        created_at=float(created),
        components=_components(doc, "components"),
        health_window=window,
        previous=_components(doc, "previous"),
        rollout=rollout,
    )


def _components(doc: Section, key: str) -> dict[str, ComponentSpec]:
    raw = doc.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        doc.fail(key, f"{show(raw)} is not an object of components", raw)
    result: dict[str, ComponentSpec] = {}
    for name, body in sorted(raw.items()):
        field_name = f"{key}.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            doc.fail(key, f"{show(name)} is not a component name", name)
        item = Section.of(
            body, source=doc.source, field=doc.at(field_name), keys=("version", "artifact", "smoke")
        )
        version = item.string("version")
        art = item.required_section("artifact", ("sha256", "size", "s3"))
        sha = art.matching("sha256", _SHA256, "a SHA-256 digest (64 lowercase hex digits)")
        size = art.integer("size", 0, minimum=1)
        if not art.has("size"):
            art.fail("size", "required")
        s3 = None
        s3_section = art.section("s3", ("bucket", "key", "url"))
        if s3_section is not None:
            url = s3_section.optional_string("url")
            if url is not None and not url.startswith(("https://", "http://")):
                s3_section.fail("url", f"{show(url)} is not an http(s) URL", url)
            s3 = S3Source(s3_section.string("bucket"), s3_section.string("key"), url)
        smoke = None
        smoke_section = item.section("smoke", ("topic", "payload_b64"))
        if smoke_section is not None:
            text = smoke_section.string("payload_b64")
            try:
                payload = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                smoke_section.fail("payload_b64", "is not base64", text[:20])
            smoke = SmokeEvent(smoke_section.string("topic"), payload)
        result[name] = ComponentSpec(name, version, ArtifactRef(sha, size, s3), smoke)
    return result


# -- artifacts through the broker ----------------------------------------------------------
@dataclass(frozen=True)
class ArtifactManifest:
    """Retained on ``edgectl/artifacts/<sha256>/manifest``; chunk ``n`` is retained on
    ``edgectl/artifacts/<sha256>/<n>`` and holds bytes ``[n*chunk_size, (n+1)*chunk_size)``
    of the zip. ``chunks`` lists each chunk's SHA-256, so a truncated or altered chunk
    is refused on its own and fetched again."""

    sha256: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "sha256": self.sha256,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
        }


def parse_artifact_manifest(payload: bytes, *, source: str) -> ArtifactManifest:
    doc = Section.of(
        _json(payload, source), source=source, field="",
        keys=("schema", "sha256", "size", "chunk_size", "chunks"),
    )  # fmt: skip
    _schema(doc)
    sha = doc.matching("sha256", _SHA256, "a SHA-256 digest")
    size = doc.integer("size", 0, minimum=1)
    chunk_size = doc.integer("chunk_size", 0, minimum=1)
    raw = doc.required("chunks")
    if not isinstance(raw, list):
        doc.fail("chunks", f"{show(raw)} is not a list", raw)
    chunks: list[str] = []
    for index, digest in enumerate(raw):
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            doc.fail(f"chunks[{index}]", f"{show(digest)} is not a SHA-256 digest", digest)
        chunks.append(digest)
    expected = (size + chunk_size - 1) // chunk_size
    if len(chunks) != expected:
        doc.fail("chunks", f"has {len(chunks)} entries; size/chunk_size needs {expected}")
    return ArtifactManifest(sha, size, chunk_size, tuple(chunks))


# -- the deployment report ----------------------------------------------------------------
@dataclass(frozen=True)
class RunningComponent:
    version: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class DeploymentReport:
    """What the agent says about the newest desired document it has seen.

    ``running`` is what the device runs at the time of the report (after a
    rollback: the old versions). ``applied`` is the deployment id that ``running``
    came from (the last SUCCEEDED one). ``transfer`` is ``[bytes done, bytes total]``
    while downloading.
    """

    thing: str
    deployment_id: str
    sequence: int
    state: str
    reason: str = ""
    phase: str | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    running: Mapping[str, RunningComponent] = field(default_factory=dict)
    applied: str | None = None
    transfer: tuple[int, int] | None = None
    rollout: str | None = None

    @property
    def final(self) -> bool:
        return self.state in TERMINAL_STATES

    def evolve(self, **changes: Any) -> DeploymentReport:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "thing": self.thing,
            "deployment_id": self.deployment_id,
            "sequence": self.sequence,
            "state": self.state,
            "reason": self.reason,
            "phase": self.phase,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "running": {n: c.to_json() for n, c in sorted(self.running.items())},
            "applied": self.applied,
            "transfer": list(self.transfer) if self.transfer is not None else None,
            "rollout": self.rollout,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def parse_report(data: object, *, source: str) -> DeploymentReport:
    doc = Section.of(
        data, source=source, field="",
        keys=(
            "schema", "thing", "deployment_id", "sequence", "state", "reason", "phase",
            "started_at", "updated_at", "running", "applied", "transfer", "rollout",
        ),
    )  # fmt: skip
    _schema(doc)
    phase = doc.get("phase")
    if phase is not None and phase not in PHASES:
        doc.fail("phase", f"{show(phase)} is not one of {', '.join(PHASES)}", phase)
    running: dict[str, RunningComponent] = {}
    raw = doc.get("running") or {}
    if not isinstance(raw, dict):
        doc.fail("running", f"{show(raw)} is not an object", raw)
    for name, body in raw.items():
        item = Section.of(body, source=source, field=doc.at(f"running.{name}"),
                          keys=("version", "sha256"))  # fmt: skip
        running[str(name)] = RunningComponent(item.string("version"), item.string("sha256"))
    transfer = doc.get("transfer")
    pair: tuple[int, int] | None = None
    if transfer is not None:
        if not (isinstance(transfer, list) and len(transfer) == 2
                and all(isinstance(v, int) for v in transfer)):  # fmt: skip
            doc.fail("transfer", f"{show(transfer)} is not [done, total]", transfer)
        pair = (transfer[0], transfer[1])
    applied = doc.get("applied")
    rollout = doc.get("rollout")
    reason = doc.get("reason")
    return DeploymentReport(
        thing=doc.string("thing"),
        deployment_id=doc.string("deployment_id"),
        sequence=doc.integer("sequence", 0, minimum=0),
        state=doc.choice("state", STATES),
        reason=reason if isinstance(reason, str) else "",
        phase=phase if isinstance(phase, str) else None,
        started_at=_number(doc, "started_at"),
        updated_at=_number(doc, "updated_at"),
        running=running,
        applied=applied if isinstance(applied, str) else None,
        transfer=pair,
        rollout=rollout if isinstance(rollout, str) else None,
    )


# -- helpers ------------------------------------------------------------------------------
def _json(payload: bytes, source: str) -> object:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"not JSON ({exc.__class__.__name__})", source=source) from None


def _schema(doc: Section) -> None:
    value = doc.get("schema")
    if value != SCHEMA:
        doc.fail("schema", f"{show(value)} is not a supported schema (this agent speaks {SCHEMA})",
                 value)  # fmt: skip


def _number(doc: Section, key: str) -> float:
    value = doc.get(key)
    if value is None:
        return 0.0
    if not isinstance(value, int | float) or isinstance(value, bool):
        doc.fail(key, f"{show(value)} is not a number", value)
    return float(value)
