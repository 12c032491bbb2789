"""Ed25519 signing of desired-state documents."""

from __future__ import annotations

import os

import pytest

from edge.deploy.signing import (
    SignatureError,
    init_keys,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from edge.errors import UsageError
from edge.model.deployment import parse_signed

DOC = {"schema": 1, "thing": "pi01", "deployment_id": "d-1", "sequence": 5, "created_at": 1.0,
       "components": {}}  # fmt: skip


def test_init_writes_a_private_key_only_its_owner_can_read(tmp_path):
    private, public = init_keys(tmp_path / "keys")
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(UsageError, match="already exists"):
        init_keys(tmp_path / "keys")


def test_sign_and_verify_round_trip_through_the_wire_format(tmp_path):
    private, public = init_keys(tmp_path)
    signed = sign(DOC, load_private_key(private))
    again = parse_signed(signed.to_bytes(), source="t")
    verify(again, load_public_key(public), source="t")
    assert again.key_id == load_public_key(public).key_id


def test_altered_document_and_foreign_key_are_named(tmp_path):
    private, public = init_keys(tmp_path / "a")
    other, _ = init_keys(tmp_path / "b")
    key = load_public_key(public)
    signed = sign(DOC, load_private_key(private))
    altered = parse_signed(signed.to_bytes().replace(b'"sequence":5', b'"sequence":6'), source="t")
    with pytest.raises(SignatureError, match="does not verify"):
        verify(altered, key, source="t")
    with pytest.raises(SignatureError, match="this device trusts"):
        verify(sign(DOC, load_private_key(other)), key, source="t")


def test_an_open_private_key_is_refused(tmp_path):
    private, _ = init_keys(tmp_path)
    private.chmod(0o644)
    with pytest.raises(UsageError, match="too open"):
        load_private_key(private)
