"""A throwaway certificate authority for TLS brokers and clients in tests.

Devices authenticate to their broker with client certificates (the broker maps
the certificate's CN to a user for its ACL), so the TLS path has to be tested
with real certificates, not with ``tls_insecure``. Keys are EC P-256 because
generating them takes microseconds where RSA-2048 takes tens of milliseconds;
the session fixture in ``tests.harness.mosquitto`` creates one CA per test run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test run, short enough that a leaked key is useless.
_VALIDITY = dt.timedelta(days=7)
# Clock skew between this host and a broker in a VM should not fail a handshake.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write ``key`` readable by its owner only, as brokers warn about wider modes."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Ca:
    """A CA whose certificate is on disk (``cert``) and whose key stays in memory."""

    cert: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def issue(self, cn: str, directory: Path, *, server: bool = False) -> CertPair:
        """Issue a certificate for ``cn`` into ``directory`` as ``<cn>.crt`` / ``<cn>.key``.

        A server certificate carries SAN ``localhost`` and ``127.0.0.1`` because
        clients verify the host name and tests connect by IP; a client certificate
        carries only the CN, which the broker turns into the user name.
        """
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.private_key, hashes.SHA256())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cn)
        pair = CertPair(cert=directory / f"{safe}.crt", key=directory / f"{safe}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def make_ca(directory: Path, cn: str = "edgectl test CA") -> Ca:
    """Create a self-signed CA and write its certificate to ``directory/ca.crt``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / "ca.key")
    return Ca(cert=path, certificate=cert, private_key=key)
