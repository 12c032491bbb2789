"""``edge-agent``: the device daemon's entry point.

Standard library argparse only: the agent must not import typer, rich or
anything else the device does not need (a test checks ``sys.modules``).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, UsageError

log = logging.getLogger("edge.agent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="edge-agent", description="The edgectl device agent.")
    p.add_argument("--config", type=Path, help="the device file (devices/NAME.yaml)")
    p.add_argument("--data-dir", type=Path, help="where the agent keeps its state")
    p.add_argument(
        "--greengrass", action="store_true",
        help="host the components inside an AWS IoT Greengrass nucleus: local pub/sub over "
        "Greengrass IPC, device identity from the nucleus's environment",
    )
    p.add_argument(
        "--component", action="append", default=[], type=Path, metavar="PATH",
        help="a component folder to run (repeatable)",
    )
    p.add_argument("--broker", help="override the device file's broker.url")
    p.add_argument(
        "--mqtt-client", choices=("paho", "awsiot"),
        help="override the device file's broker.client: paho-mqtt, or awsiotsdk's MQTT 5 "
        "client (AWS IoT Core)",
    )
    p.add_argument(
        "--results-dir", type=Path,
        help="also write every result to this local directory (air-gapped use, tests)",
    )
    p.add_argument(
        "--durability", choices=("power", "process"), default="power",
        help="power: fsync each group commit (survives power loss; default); "
        "process: survives a crash of the agent but not of the machine",
    )
    p.add_argument("--heartbeat", type=float, default=30.0, help="status heartbeat, seconds")
    p.add_argument(
        "--sync-retry-max", type=float, default=30.0, metavar="SECONDS",
        help="longest wait between attempts to reach a failing sink (full jitter; default 30)",
    )
    iot = p.add_argument_group(
        "AWS IoT credentials provider",
        "exchange the device's X.509 certificate for temporary AWS credentials "
        "(instead of boto3's usual chain); refreshed before they expire",
    )
    iot.add_argument("--iot-credentials-endpoint", metavar="HOST[:PORT]",
                     help="the account's credentials provider endpoint")
    iot.add_argument("--iot-role-alias", metavar="ALIAS", help="the role alias to assume")
    iot.add_argument("--iot-cert", type=Path, metavar="FILE",
                     help="device certificate (default: the device file's broker.cert)")
    iot.add_argument("--iot-key", type=Path, metavar="FILE",
                     help="its private key (default: broker.key)")
    iot.add_argument("--iot-ca", type=Path, metavar="FILE",
                     help="CA bundle for the endpoint (default: the system's)")
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus metrics on http://BIND:PORT/metrics (off by default)",
    )
    p.add_argument(
        "--metrics-bind", default="127.0.0.1", metavar="ADDRESS",
        help="address of the metrics endpoint (default: loopback only)",
    )
    p.add_argument(
        "--log-dir", type=Path,
        help="per-component function log files (default: DATA_DIR/logs)",
    )
    p.add_argument(
        "--function-log-bytes", type=int, default=1 << 20, metavar="BYTES",
        help="rotate a component's function log file at this size (default 1 MiB)",
    )
    p.add_argument(
        "--function-log-total", type=int, default=10 << 20, metavar="BYTES",
        help="cap on one component's function log files together (default 10 MiB)",
    )
    p.add_argument(
        "--ggv1-port", type=int, default=0, metavar="PORT",
        help="loopback port of the Greengrass v1 daemon contract (default: any free one)",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    args = p.parse_args(argv)
    if not args.greengrass and (args.config is None or args.data_dir is None):
        p.error("--config and --data-dir are required (unless --greengrass)")
    if args.greengrass and not args.component:
        p.error("--greengrass needs at least one --component")
    return args


def greengrass_device(env: Mapping[str, str]) -> Any:
    """The device as a Greengrass nucleus describes it to a component's process."""
    import platform as host

    from edge.model.device import BrokerConfig, CloudConfig, DeviceConfig, OutboxConfig, Platform

    thing = env.get("AWS_IOT_THING_NAME", "")
    if not thing:
        raise EdgeError("--greengrass: AWS_IOT_THING_NAME is not set (is this run by a nucleus?)")
    return DeviceConfig(
        name=thing,
        device_class="generic-linux",
        platform=Platform(os="linux", architecture=host.machine()),
        thing_name=thing,
        groups=(),
        broker=BrokerConfig(url="mqtt://greengrass-ipc"),
        cloud=CloudConfig(region=env.get("AWS_REGION", "us-east-1")),
        outbox=OutboxConfig(),
        source="<greengrass>",
        path=Path.cwd(),
    )


def _sink_factory(
    device: Any, results_dir: Path | None, args: argparse.Namespace | None = None
) -> Any:
    """Builds each component's sinks for the device's class (see ``edge.sync.factory``),
    with credentials from the AWS IoT credentials provider when it is configured."""
    from edge.sync.factory import SinkFactory

    session = None
    if args is not None and args.iot_credentials_endpoint:
        from edge.aws.credentials import IotCredentialsConfig, IotCredentialsProvider, iot_session

        cert = args.iot_cert or device.broker.cert
        key = args.iot_key or device.broker.key
        if not args.iot_role_alias or cert is None or key is None:
            raise UsageError(
                "--iot-credentials-endpoint needs --iot-role-alias and a certificate and key "
                "(--iot-cert/--iot-key, or broker.cert/broker.key in the device file)"
            )
        provider = IotCredentialsProvider(
            IotCredentialsConfig(
                endpoint=args.iot_credentials_endpoint, role_alias=args.iot_role_alias,
                thing_name=device.thing_name, cert=cert, key=key, ca=args.iot_ca,
            )
        )

        def session(region: str) -> Any:
            return iot_session(provider, region)

    return SinkFactory(device, results_dir=results_dir, session=session)


def run(args: argparse.Namespace) -> int:
    from edge.agent import logs
    from edge.agent.agent import Agent
    from edge.agent.services import RuntimeOptions
    from edge.agent.status import offline_will, status_topic
    from edge.model.component import load_component
    from edge.model.device import BrokerConfig, load_device
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus, Will

    bus: Any
    if args.greengrass:
        from edge.mqtt.ipc_bus import IpcBus

        device = greengrass_device(os.environ)
        logs.configure(device.name, args.log_level, args.log_format)
        bus = IpcBus()
        data_dir = args.data_dir or Path.cwd() / "edge-data"
    else:
        device = load_device(args.config)
        logs.configure(device.name, args.log_level, args.log_format)
        if args.broker:
            device = replace(device, broker=replace(device.broker, url=args.broker))
        if args.mqtt_client:
            device = replace(device, broker=replace(device.broker, client=args.mqtt_client))
        broker: BrokerConfig = device.broker
        will = Will(status_topic(device.thing_name), offline_will(device.name, device.thing_name))
        adapter: Any = PahoBus
        if broker.client == "awsiot":
            from edge.mqtt.iotcore_bus import IotCoreBus

            adapter = IotCoreBus  # imported only when asked for: awscrt is heavy
        bus = adapter(
            BrokerAddress.parse(broker.url, ca=broker.ca, cert=broker.cert, key=broker.key),
            client_id=f"edge-agent-{device.thing_name}",
            persistent=True,
            manual_ack=True,
            will=will,
        )
        data_dir = args.data_dir
    components = [load_component(path) for path in args.component]
    if not args.greengrass:
        # What the deployer made current last time: runs before the broker answers.
        from edge.agent.deploy_host import restored_components

        components += restored_components(data_dir, skip={m.name for m in components})
    agent = Agent(
        device,
        components,
        bus=bus,
        data_dir=data_dir,
        sink_factory=_sink_factory(device, args.results_dir, args),
        fsync=args.durability == "power",
        heartbeat=args.heartbeat,
        sync_retry_max=args.sync_retry_max,
        runtime=RuntimeOptions(
            log_dir=args.log_dir,
            log_file_bytes=args.function_log_bytes,
            log_total_bytes=args.function_log_total,
            ggv1_port=args.ggv1_port,
        ),
        # The main thread waits on the stop signals; a fatal error is one more.
        on_fatal=lambda reason: os.kill(os.getpid(), signal.SIGTERM),
    )
    from edge.agent.observe import Observability

    observe = Observability(
        agent, bus, data_dir=data_dir, metrics_port=args.metrics_port,
        metrics_bind=args.metrics_bind,
    )
    deployer = None
    if not args.greengrass:
        from edge.agent.deploy_host import attach_deployer

        deployer = attach_deployer(agent, bus, device, data_dir)
    from edge.agent.signals import StopSignals

    signals = StopSignals()
    # ``kill -USR1`` writes every thread's stack to stderr (the log), from C, so it works
    # even when Python code is stuck: how a hang in the field gets diagnosed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Every subscription is made before the bus connects (paho makes them all on
    # connect), so the "online" status, which waits for their SUBACKs, promises that a
    # request published after it (a trigger, a deployment, a log request) is received.
    if args.greengrass:
        bus.connect()  # IPC subscriptions need the connection first
        agent.start()
        observe.start()
    else:
        agent.start()
        if deployer is not None:
            deployer.start()
        observe.start()
        bus.start()
    log.info(
        "agent started: %d component(s), bus %s",
        len(components), "greengrass-ipc" if args.greengrass else bus.address.url,
        extra={"stream": "agent"},
    )
    received = signals.wait()
    log.info("received %s; stopping", received.name if received else "a stop")
    # Whatever was accepted is on disk, so a stop that hangs can end as a crash would:
    # with every thread's stack in the log, and a non-zero exit for the supervisor.
    faulthandler.dump_traceback_later(agent.stop_budget(), exit=True)
    observe.stop()
    if deployer is not None:
        deployer.stop()
    agent.stop()
    bus.close()
    faulthandler.cancel_dump_traceback_later()
    if agent.fatal is not None:
        log.error("agent stopped after: %s; exit 1, for the supervisor to restart it",
                  agent.fatal)
        return 1
    log.info("agent stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except EdgeError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
