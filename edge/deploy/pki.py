"""The fleet's transport identity: a CA, device and operator certificates, and the
Mosquitto configuration and ACL that make a certificate's CN the device's identity.

``provision(project, name)`` creates ``certs/ca.{crt,key}`` on first use and issues
``certs/devices/<name>.{crt,key}`` with CN = the device's thing name. ``broker_config``
writes ``broker/mosquitto.conf`` (a TLS listener with ``require_certificate`` and
``use_identity_as_username``) and ``broker/acl``, in which each device may read only its
own desired state (and the shared artifact chunks) and write only its own status,
deployment report, error records and its components' outputs. Keys are EC P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UsageError
from edge.model.component import ComponentManifest
from edge.model.deployment import ARTIFACT_PREFIX
from edge.model.device import DeviceConfig
from edge.model.topics import render

OPERATOR_CN = "edgectl"
CA_VALIDITY = dt.timedelta(days=3650)
CERT_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    cn: str
    cert: Path
    key: Path
    ca: Path
    created_ca: bool


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_ca(certs: Path) -> tuple[Path, bool]:
    """``certs/ca.crt`` and its key, made on first use. Returns (cert path, created)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = certs / "ca.crt", certs / "ca.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgectl fleet CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, True


def issue(certs: Path, cn: str, dest: Path, *, server: bool = False,
          hosts: Sequence[str] = ()) -> Issued:  # fmt: skip
    """Issue a certificate for ``cn`` signed by the fleet CA into ``dest.{crt,key}``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_path, created = ensure_ca(certs)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{certs / 'ca.key'}: not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )  # fmt: skip
    if server:
        names: list[x509.GeneralName] = []
        for host in hosts or ("localhost", "127.0.0.1"):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = dest.with_suffix(".crt"), dest.with_suffix(".key")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cn, cert_path, key_path, ca_path, created)


def provision(project: Path, device: DeviceConfig) -> Issued:
    return issue(project / "certs", device.thing_name,
                 project / "certs" / "devices" / device.name)  # fmt: skip


def acl_text(devices: Iterable[DeviceConfig], components: Iterable[ComponentManifest]) -> str:
    """One ``user`` section per device (its CN is its thing name), and the operator's."""
    comps = list(components)
    lines = [
        "# Written by `edgectl broker config`; the user is the client certificate's CN.",
        f"user {OPERATOR_CN}",
        "topic readwrite edge/#",
        f"topic readwrite {ARTIFACT_PREFIX}/#",
        "topic readwrite edgectl/#",
        "",
    ]
    for device in sorted(devices, key=lambda d: d.thing_name):
        thing = device.thing_name
        lines += [
            f"user {thing}",
            f"topic read edge/{thing}/desired",
            f"topic write edge/{thing}/status",
            f"topic write edge/{thing}/deployment",
            f"topic write edge/{thing}/+/errors",
            f"topic read {ARTIFACT_PREFIX}/#",
        ]
        for manifest in comps:
            for trigger in manifest.triggers:
                topic = render(trigger.topic, thing=thing, component=manifest.name)
                lines.append(f"topic read {topic}")
            for output in manifest.outputs:
                topic = render(output.topic, thing=thing, component=manifest.name)
                lines.append(f"topic write {topic}")
            errors = render(manifest.errors_topic, thing=thing, component=manifest.name)
            if not errors.startswith(f"edge/{thing}/"):
                lines.append(f"topic write {errors}")
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(broker_dir: Path, certs: Path, port: int) -> str:
    return "\n".join([
        "# Written by `edgectl broker config`.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {broker_dir / 'acl'}",
        f"listener {port}",
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'broker.crt'}",
        f"keyfile {certs / 'broker.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        "",
    ])  # fmt: skip


@dataclass(frozen=True)
class BrokerFiles:
    conf: Path
    acl: Path
    operator: Issued
    server: Issued


def broker_config(
    project: Path, devices: Sequence[DeviceConfig], components: Sequence[ComponentManifest],
    *, port: int = 8883, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
) -> BrokerFiles:  # fmt: skip
    certs, out = project / "certs", project / "broker"
    out.mkdir(parents=True, exist_ok=True)
    operator = issue(certs, OPERATOR_CN, certs / OPERATOR_CN)
    server = issue(certs, hosts[0], certs / "broker", server=True, hosts=hosts)
    acl = out / "acl"
    acl.write_text(acl_text(devices, components))
    conf = out / "mosquitto.conf"
    conf.write_text(mosquitto_conf(out, certs, port))
    return BrokerFiles(conf, acl, operator, server)
