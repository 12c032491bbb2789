"""Wires the deployer to the agent: the ``Host`` the deployer drives, and its setup.

The host swaps component runners through ``Agent.add_component`` /
``remove_component``, reads their failure counters for the health gate, and
runs a preflight worker of a new version (start + smoke event) while the old
version keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge.agent.agent import Agent
from edge.agent.artifacts import HttpFetcher
from edge.agent.component import ComponentRunner, Finished
from edge.agent.deployer import Deployer, DeployState, Health
from edge.agent.worker import Outcome, Worker, WorkerDied
from edge.errors import EdgeError
from edge.model.component import ComponentManifest, load_component
from edge.model.deployment import SmokeEvent
from edge.model.device import DeviceConfig
from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

PREFLIGHT_START_TIMEOUT = 30.0


class AgentHost:
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def add_component(self, manifest: ComponentManifest) -> None:
        self._agent.add_component(manifest)

    def remove_component(self, name: str) -> bool:
        return self._agent.remove_component(name)

    def health(self, name: str) -> Health | None:
        runner = self._agent.runners.get(name)
        if runner is None:
            return None
        c = runner.counters
        return Health(runner.state == "RUNNING", c.errors, c.timeouts, c.worker_restarts)

    def preflight(self, manifest: ComponentManifest, smoke: SmokeEvent | None) -> str | None:
        agent = self._agent

        def discard(runner: ComponentRunner, done: Finished) -> None:
            return None

        runner = ComponentRunner(
            manifest, device=agent.device.name, thing=agent.thing, epoch=agent.epoch,
            on_finished=discard,
            environment={
                "AWS_REGION": agent.device.cloud.region,
                "AWS_DEFAULT_REGION": agent.device.cloud.region,
                "EDGE_STATE_DIR": str(agent.data_dir / "state" / manifest.name),
            },
        )  # fmt: skip
        worker = Worker(runner.spec, on_log=lambda line: log.info("%s [preflight]", line))
        try:
            try:
                worker.start(timeout=PREFLIGHT_START_TIMEOUT)
            except WorkerDied as died:
                return f"worker did not start: {_describe(died.outcome)}"
            if smoke is None:
                return None
            encoding = runner.encoding_for(smoke.topic)
            try:
                outcome = worker.invoke(
                    request_id=f"smoke-{manifest.name}-{manifest.version}",
                    topic=smoke.topic, payload=smoke.payload, encoding=encoding,
                    timeout=manifest.limits.timeout,
                )  # fmt: skip
            except WorkerDied as died:
                outcome = died.outcome
            return None if outcome.ok else f"smoke event failed: {_describe(outcome)}"
        finally:
            worker.stop()

    def changed(self) -> None:
        self._agent.status.changed()


def _describe(outcome: Outcome) -> str:
    err = outcome.error or {}
    message = str(err.get("errorMessage", "")).splitlines()[0:1]
    return f"{err.get('errorType', 'Error')}: {message[0] if message else ''}"[:300]


def restored_components(data_dir: Path, *, skip: set[str]) -> list[ComponentManifest]:
    """The deployed components to run at boot (``--component`` ones take precedence)."""
    state = DeployState.load(data_dir / "deploy" / "state.json")
    manifests = []
    for name, item in sorted(state.current.items()):
        if name in skip:
            continue
        try:
            manifests.append(load_component(item.folder))
        except EdgeError as exc:
            log.error("cannot restore %s %s: %s", name, item.version, exc)
    return manifests


def attach_deployer(agent: Agent, bus: Bus, device: DeviceConfig, data_dir: Path) -> Deployer:
    """A deployer for ``agent``; its report becomes the status document's ``deployment``."""
    from edge.deploy.signing import load_public_key, verify

    key_path = device.trusted_key

    def check_signature(signed: Any, source: str) -> None:
        verify(signed, load_public_key(key_path), source=source)

    def connect_download() -> Bus:
        broker = device.broker
        client_id = f"edge-agent-{device.thing_name}-artifacts"
        download: Bus
        if broker.client == "awsiot":
            from edge.mqtt.iotcore_bus import BrokerAddress, IotCoreBus

            endpoint = BrokerAddress.parse(
                broker.url, ca=broker.ca, cert=broker.cert, key=broker.key
            )
            download = IotCoreBus(endpoint, client_id=client_id)
        else:
            from edge.mqtt.paho_bus import BrokerAddress, PahoBus

            address = BrokerAddress.parse(broker.url, ca=broker.ca, cert=broker.cert,
                                          key=broker.key)  # fmt: skip
            download = PahoBus(address, client_id=client_id)
        download.connect(timeout=10)
        return download

    import os

    stall = float(os.environ.get("EDGE_ARTIFACT_TIMEOUT", "30"))
    deployer = Deployer(
        thing=agent.thing,
        host=AgentHost(agent),
        bus=bus,
        data_dir=data_dir,
        verify=check_signature,
        connect_download=connect_download,
        stall_timeout=stall,
        http=HttpFetcher(timeout=stall, ca_bundle=device.cloud.ca_bundle),
        s3_url=_s3_presigner(device),
    )
    agent.status_extras["deployment"] = deployer.report_json
    return deployer


def _s3_presigner(device: DeviceConfig) -> Any:
    """Artifacts in S3 without a usable presigned URL: presign locally with the device's
    own credentials (the usual chain) against ``cloud.s3_endpoint``; no request is made."""
    client: Any = None

    def presign(bucket: str, key: str) -> str:
        nonlocal client
        from edge.agent.artifacts import ArtifactError

        try:
            if client is None:
                from edge.aws.session import client_config, make_client, make_session

                cloud = device.cloud
                client = make_client(
                    make_session(cloud.region), "s3", endpoint_url=cloud.s3_endpoint,
                    ca_bundle=cloud.ca_bundle, region=cloud.region,
                    config=client_config(s3_path_style=cloud.s3_endpoint is not None),
                )  # fmt: skip
            url: str = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900
            )
        except Exception as exc:  # botocore: no credentials, bad endpoint
            raise ArtifactError(f"cannot sign a GET of s3://{bucket}/{key}: {exc}") from exc
        return url

    return presign
