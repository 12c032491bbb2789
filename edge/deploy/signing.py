"""Ed25519 signing of desired-state documents.

``edgectl keys init`` writes ``keys/fleet.key`` (PKCS#8 PEM, mode 600, never
sent anywhere) and ``keys/fleet.pub`` (SubjectPublicKeyInfo PEM). ``edgectl
deploy`` signs ``canonical_json(document)`` with the private key; the agent
verifies with the public key its device file trusts and applies only what
verifies.

``cryptography`` is imported inside the functions, so importing this module
costs the agent nothing until a document arrives.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import UsageError, ValidationError
from edge.model.deployment import SignedDesired, canonical_json

PRIVATE_KEY_NAME = "fleet.key"
PUBLIC_KEY_NAME = "fleet.pub"


class SignatureError(ValidationError):
    """A document does not verify against the trusted key."""


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # 32 bytes
    path: Path

    @property
    def key_id(self) -> str:
        return key_id(self.raw)


@dataclass(frozen=True)
class PrivateKey:
    raw: bytes  # 32-byte seed
    public: bytes
    path: Path

    @property
    def key_id(self) -> str:
        return key_id(self.public)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def init_keys(folder: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Create ``folder/fleet.key`` (mode 600) and ``folder/fleet.pub``; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    if not force and (private_path.exists() or public_path.exists()):
        raise UsageError(
            f"{private_path}: a fleet key already exists; devices trust it "
            "(use --force to replace it, then reinstall fleet.pub on every device)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = private_path.with_name(private_path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    tmp.replace(private_path)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: Path) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no fleet signing key (run `edgectl keys init`)") from None
    if path.stat().st_mode & 0o077:
        raise UsageError(f"{path}: mode {path.stat().st_mode & 0o777:o} is too open (chmod 600)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise ValidationError(f"not a PEM private key ({exc})", source=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError("not an Ed25519 private key", source=str(path))
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return PrivateKey(raw, public, path)


def load_public_key(path: Path) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValidationError("no such public key file", source=str(path)) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValidationError(f"not a PEM public key ({exc})", source=str(path)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationError("not an Ed25519 public key", source=str(path))
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, path)


def sign(document: Mapping[str, Any], key: PrivateKey) -> SignedDesired:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(key.raw)
    return SignedDesired(
        document=dict(document),
        key_id=key.key_id,
        signature=private.sign(canonical_json(document)),
    )


def verify(signed: SignedDesired, key: PublicKey, *, source: str) -> None:
    """Raise ``SignatureError`` unless ``signed`` carries a valid signature by ``key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = Ed25519PublicKey.from_public_bytes(key.raw)
    try:
        public.verify(signed.signature, signed.signed_bytes)
    except InvalidSignature:
        if signed.key_id != key.key_id:
            raise SignatureError(
                f"signed by key {signed.key_id}, but this device trusts {key.key_id}",
                source=source, field="signature",
            ) from None  # fmt: skip
        raise SignatureError(
            "signature does not verify (document altered after signing)",
            source=source, field="signature",
        ) from None  # fmt: skip
