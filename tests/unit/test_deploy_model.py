"""The direct backend's documents: round trips and one-line errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import ValidationError
from edge.model.deployment import (
    ArtifactManifest,
    ArtifactRef,
    ComponentSpec,
    DeploymentReport,
    DesiredState,
    RunningComponent,
    S3Source,
    SmokeEvent,
    parse_artifact_manifest,
    parse_desired,
    parse_report,
    parse_signed,
)

SHA = "a" * 64


def desired(**changes):
    base = DesiredState(
        thing="pi01", deployment_id="d-1", sequence=7, created_at=1.5,
        components={"c": ComponentSpec("c", "1.0.0", ArtifactRef(SHA, 10, S3Source("b", "k")),
                                       SmokeEvent("in/c/smoke", b'{"x":1}'))},
        previous={"c": ComponentSpec("c", "0.9.0", ArtifactRef("b" * 64, 9))},
        health_window=2.5, rollout="r-1",
    )  # fmt: skip
    return DesiredState(**{**base.__dict__, **changes})


def test_desired_state_round_trips():
    doc = desired()
    assert parse_desired(json.loads(json.dumps(doc.to_json())), source="x") == doc


@given(st.integers(min_value=1, max_value=2**53), st.floats(min_value=0, max_value=3600))
def test_sequence_and_window_round_trip(sequence, window):
    doc = desired(sequence=sequence, health_window=window)
    assert parse_desired(doc.to_json(), source="x") == doc


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"sequence": 0}, "document.sequence: 0 is not a positive integer"),
        ({"schema": 2}, "document.schema: 2 is not a supported schema"),
        ({"health": {"window_s": -1}}, "document.health.window_s: -1 is not a number of seconds"),
        ({"components": {"c": {"version": "1", "artifact": {"sha256": "x", "size": 1}}}},
         "document.components.c.artifact.sha256: 'x' is not a SHA-256 digest"),
        ({"extra": 1}, "unknown key"),
    ],
)  # fmt: skip
def test_desired_errors_are_one_line_and_name_the_field(patch, message):
    data = {**desired().to_json(), **patch}
    with pytest.raises(ValidationError) as info:
        parse_desired(data, source="edge/pi01/desired")
    text = str(info.value)
    assert "\n" not in text and message in text and text.startswith("edge/pi01/desired: ")


def test_envelope_errors():
    with pytest.raises(ValidationError, match="not JSON"):
        parse_signed(b"{", source="t")
    with pytest.raises(ValidationError, match="signature: required"):
        parse_signed(json.dumps({"schema": 1, "document": {}}).encode(), source="t")
    bad = {"schema": 1, "document": {},
           "signature": {"alg": "ed25519", "key_id": "0" * 16, "value": "AAAA"}}  # fmt: skip
    with pytest.raises(ValidationError, match="is 3 bytes"):
        parse_signed(json.dumps(bad).encode(), source="t")


def test_report_and_manifest_round_trip():
    report = DeploymentReport("pi01", "d-1", 7, "IN_PROGRESS", phase="download",
                              running={"c": RunningComponent("1", SHA)}, transfer=(1, 2))
    assert parse_report(json.loads(report.to_bytes()), source="x") == report
    manifest = ArtifactManifest(SHA, 300, 128, ("c" * 64, "c" * 64, "d" * 64))
    assert parse_artifact_manifest(json.dumps(manifest.to_json()).encode(), source="m") == manifest
    short = {**manifest.to_json(), "chunks": ["c" * 64]}
    with pytest.raises(ValidationError, match="needs 3"):
        parse_artifact_manifest(json.dumps(short).encode(), source="m")


def test_same_components_compares_versions_and_digests():
    a = desired()
    assert a.same_components(desired(deployment_id="d-2", sequence=9))
    other = {"c": ComponentSpec("c", "1.0.0", ArtifactRef("f" * 64, 10))}
    assert not a.same_components(desired(components=other))


def test_device_artifacts_and_trust_keys(tmp_path):
    from edge.model.device import parse_device

    path = tmp_path / "project" / "devices" / "pi01.yaml"
    base = {"name": "pi01", "class": "raspberry-pi", "broker": {"url": "mqtt://b"}}
    plain = parse_device(base, source="pi01.yaml", path=path)
    assert plain.artifacts is None
    assert plain.trusted_key == tmp_path / "project" / "keys" / "fleet.pub"
    full = parse_device(
        {**base, "artifacts": {"s3": {"bucket": "fleet-art"}},
         "trust": {"fleet_public_key": "/etc/edgectl/fleet.pub"}},
        source="pi01.yaml", path=path,
    )  # fmt: skip
    assert full.artifacts is not None and full.artifacts.prefix == "edgectl/artifacts/"
    assert str(full.trusted_key) == "/etc/edgectl/fleet.pub"
    with pytest.raises(ValidationError, match="artifacts.s3.bucket: 'No_Caps'"):
        parse_device({**base, "artifacts": {"s3": {"bucket": "No_Caps"}}}, source="pi01.yaml",
                     path=path)  # fmt: skip


def test_peek_identity_reads_a_claimed_id_without_trusting_the_payload() -> None:
    from edge.model.deployment import peek_identity

    assert peek_identity(b'{"document": {"deployment_id": "d-1", "sequence": 7}}') == ("d-1", 7)
    assert peek_identity(b'{"document": {"deployment_id": "' + b"x" * 300 + b'"}}')[0] == "x" * 128
    assert peek_identity(b"not json") == ("unknown", 0)
    assert peek_identity(b'["a list"]') == ("unknown", 0)
    assert peek_identity(b'{"document": {"sequence": "seven"}}') == ("unknown", 0)
