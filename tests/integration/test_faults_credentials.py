"""The AWS IoT credentials provider against a local HTTPS server with its own CA that
requires the device's client certificate, as the real endpoint does: the exchange,
the refresh before expiry, and the failures (denied, untrusted endpoint)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge.aws.credentials import IotCredentialsConfig, IotCredentialsProvider, iot_session
from edge.aws.s3 import S3Client
from edge.aws.session import make_client
from edge.errors import AccessDenied, CloudError
from tests.harness.certs import CertPair, make_ca

pytestmark = pytest.mark.integration

LIFETIME = 3600.0


@dataclass
class Endpoint:
    url_host: str
    ca: Path
    device: CertPair
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    now: list[float] = field(default_factory=lambda: [1_800_000_000.0])


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    ca = make_ca(tmp_path / "ca", cn="iot endpoint test CA")
    server_pair = ca.issue("localhost", tmp_path / "ca", server=True)
    device = ca.issue("dev1", tmp_path / "device")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_pair.cert, server_pair.key)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, like the real endpoint
    ctx.load_verify_locations(ca.cert)
    state = Endpoint("", ca.cert, device)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            cn = dict(x[0] for x in peer["subject"])["commonName"]
            state.requests.append(
                {"path": self.path, "thing": self.headers["x-amzn-iot-thingname"], "cn": cn}
            )
            n = len(state.requests)
            if state.status != 200:
                body = json.dumps({"message": "Access Denied"}).encode()
            else:
                expiry = dt.datetime.fromtimestamp(state.now[0] + LIFETIME, dt.UTC)
                body = json.dumps({"credentials": {
                    "accessKeyId": f"ASIAKEY{n}", "secretAccessKey": f"secret{n}",
                    "sessionToken": f"token{n}",
                    "expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    state.url_host = f"localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def provider(endpoint: Endpoint, ca: Path | None = None) -> IotCredentialsProvider:
    return IotCredentialsProvider(IotCredentialsConfig(
        endpoint=endpoint.url_host, role_alias="edge-results", thing_name="dev1",
        cert=endpoint.device.cert, key=endpoint.device.key, ca=ca or endpoint.ca,
    ), timeout=5)


def test_the_certificate_is_exchanged_for_temporary_credentials(endpoint: Endpoint) -> None:
    creds = provider(endpoint).fetch()
    assert creds["access_key"] == "ASIAKEY1" and creds["token"] == "token1"
    assert creds["expiry_time"].endswith("Z")
    assert endpoint.requests == [
        {"path": "/role-aliases/edge-results/credentials", "thing": "dev1", "cn": "dev1"}
    ]


def test_credentials_are_refreshed_before_they_expire(
    endpoint: Endpoint, aws_env: None, moto_server: Any
) -> None:
    p = provider(endpoint)
    session = iot_session(p, "us-east-1", refresh_margin=300, clock=lambda: endpoint.now[0])
    assert p.fetches == 0  # nothing fetched until a request is signed
    creds = session.get_credentials()
    assert creds.get_frozen_credentials().access_key == "ASIAKEY1"
    endpoint.now[0] += LIFETIME - 600  # 10 minutes left: still good
    assert creds.get_frozen_credentials().access_key == "ASIAKEY1"
    endpoint.now[0] += 301  # inside the refresh margin, still before expiry
    assert creds.get_frozen_credentials().access_key == "ASIAKEY2"
    assert p.fetches == 2
    # And the session signs real requests with them.
    s3 = S3Client(make_client(session, "s3", endpoint_url=moto_server.url))
    s3.ensure_bucket("iot-creds-bucket", "us-east-1")
    s3.put_object("iot-creds-bucket", "k", b"v", content_type="text/plain")


def test_a_refused_certificate_is_access_denied(endpoint: Endpoint) -> None:
    endpoint.status = 403
    with pytest.raises(AccessDenied, match="HTTP 403 .*Access Denied.*thing 'dev1'"):
        provider(endpoint).fetch()


def test_an_endpoint_the_bundle_does_not_trust_is_not_retried(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    stranger = make_ca(tmp_path / "stranger").cert
    with pytest.raises(CloudError) as caught:
        provider(endpoint, ca=stranger).fetch()
    assert caught.value.retryable is False
    assert endpoint.requests == []
