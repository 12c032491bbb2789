"""The Snowball Edge profile against an S3 endpoint served over TLS with its own CA.

The endpoint is the session's moto server behind a TLS-terminating proxy
(``TcpProxy(tls=...)``) whose certificate a test CA signed, as a Snowball
Edge's S3 on port 8443 presents the box's own certificate. The device file
names the endpoint, the CA bundle and ``region: snow``, and gives no DynamoDB
link, so DynamoDB results become import files in S3.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.aws.s3 import S3Client
from edge.aws.session import client_config, make_client
from edge.errors import CloudError
from edge.model.device import load_device
from edge.sync.factory import profile_for, snowball_s3_endpoint
from tests.harness.agent import Probe, write_component
from tests.harness.certs import make_ca
from tests.harness.moto import unique_name
from tests.harness.tcpproxy import TcpProxy
from tests.integration.faults import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def box(tmp_path: Path, moto_server: Any) -> Iterator[tuple[TcpProxy, Path]]:
    """moto behind TLS with a certificate from the box's own CA; yields (proxy, CA bundle)."""
    ca = make_ca(tmp_path / "box-ca", cn="snowball test CA")
    server = ca.issue("localhost", tmp_path / "box-ca", server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    with TcpProxy(moto_server.host, moto_server.port, tls=ctx) as proxy:
        yield proxy, ca.cert


def snowball_device(path: Path, broker_url: str, s3_endpoint: str, ca: Path) -> Path:
    path.write_text(
        "name: dev1\nclass: snowball-edge\nthing_name: dev1\ngroups: [snow]\n"
        f"broker:\n  url: {broker_url}\n"
        f"cloud:\n  region: snow\n  s3_endpoint: {s3_endpoint}\n  ca_bundle: {ca}\n"
    )
    return path


def test_results_and_dynamodb_import_files_reach_the_box_over_tls(
    tmp_path: Path, box: tuple[TcpProxy, Path], agent_factory: Any, probe: Probe,
    s3_client: Any,
) -> None:
    proxy, ca = box
    bucket, table = unique_name("snow"), "readings"
    s3_client.ensure_bucket(bucket, "us-east-1")
    comp = write_component(
        tmp_path / "c", "count",
        "def handler(event, context):\n    return {'n': event['n']}\n",
        manifest=f"""
            results:
              s3: {{bucket: {bucket}}}
              dynamodb: {{table: {table}}}
        """,
    )
    runner = agent_factory([comp])
    snowball_device(runner.config, runner.broker.url, proxy.url, ca)
    agent = runner.start()
    for n in range(10):
        probe.publish("in/count/x", json.dumps({"n": n}))

    def lines(prefix: str) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for key in s3_client.list_keys(bucket, prefix)
            for line in s3_client.get_object(bucket, key).splitlines()
        ]

    wait_until(lambda: len(lines("count/")) >= 10, 30, "results on the box")
    wait_until(lambda: len(lines("import/")) >= 10, 30, "DynamoDB import files on the box")
    assert sorted(line["result"]["n"] for line in lines("count/dev1/")) == list(range(10))
    items = [line["Item"] for line in lines(f"import/dynamodb/{table}/dev1/count/")]
    assert len(items) == 10
    assert {i["pk"]["S"] for i in items} == {"dev1#count"}
    assert sorted(int(i["result"]["M"]["n"]["N"]) for i in items) == list(range(10))
    assert proxy.connections > 0  # it went through TLS, not around it
    assert agent.alive()


def test_the_profile_fills_in_port_region_and_path_style(tmp_path: Path) -> None:
    device = load_device(
        snowball_device(tmp_path / "dev1.yaml", "mqtt://127.0.0.1:1", "https://10.0.0.5",
                        tmp_path / "ca.pem")
    )
    profile = profile_for(device)
    assert profile.s3_endpoint == "https://10.0.0.5:8443"
    assert (profile.s3_region, profile.s3_path_style, profile.dynamodb_in_s3) == (
        "snow", True, True,
    )
    assert snowball_s3_endpoint("https://box:9443") == "https://box:9443"
    assert snowball_s3_endpoint("http://box") == "http://box"


def test_a_box_certificate_the_bundle_does_not_trust_is_refused_and_not_retried(
    tmp_path: Path, box: tuple[TcpProxy, Path], boto_session: Any
) -> None:
    proxy, _ = box
    stranger = make_ca(tmp_path / "other-ca", cn="someone else").cert
    client = S3Client(
        make_client(boto_session, "s3", endpoint_url=proxy.url, ca_bundle=stranger,
                    region="snow", config=client_config(s3_path_style=True))
    )
    with pytest.raises(CloudError) as caught:
        client.put_object("any-bucket", "k", b"x", content_type="text/plain")
    assert caught.value.retryable is False
    assert "SSL" in str(caught.value)
