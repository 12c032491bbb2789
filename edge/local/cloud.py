"""A local S3 and DynamoDB endpoint: moto's server mode, over real HTTP.

boto3 clients reach it unchanged through ``endpoint_url`` (or the standard
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_DYNAMODB`` variables for the
agent's process), with dummy credentials: no AWS account is involved.
"""

from __future__ import annotations

from typing import Any

from edge.errors import ToolMissing
from edge.local.ports import free_port, wait_listening

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "edge-local",
    "AWS_SECRET_ACCESS_KEY": "edge-local",
}


class LocalCloud:
    def __init__(self, *, region: str = "us-east-1", port: int | None = None) -> None:
        self.port = port or free_port()
        self.region = region
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ToolMissing(
                "the local S3/DynamoDB endpoint needs moto[server] (pip install 'edgectl[cli]')"
            ) from exc
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        if not wait_listening("127.0.0.1", self.port, timeout):
            raise ToolMissing(f"moto server did not start on port {self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def environment(self) -> dict[str, str]:
        """Environment for a process (the agent) that should use this endpoint."""
        return {
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.url,
        }

    def session(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
