"""``edgectl broker config``: a Mosquitto TLS listener and ACL for the fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.cli.options import DevicesDirOption


def register(app: typer.Typer) -> None:
    broker = typer.Typer(help="The fleet's MQTT broker.", no_args_is_help=True)

    @broker.command("config")
    def config_cmd(
        devices_dir: DevicesDirOption = Path("devices"),
        components_dir: Annotated[Path, typer.Option(help="Component folders.")] = Path(
            "components"
        ),
        port: Annotated[int, typer.Option(min=1, max=65535)] = 8883,
        host: Annotated[
            list[str] | None, typer.Option(help="Broker host names for its certificate.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Write broker/mosquitto.conf and broker/acl (each device reads only its own
        desired state, writes only its own status and results), the broker's and the
        operator's certificates (certs/broker.*, certs/edgectl.*)."""
        from edge.deploy.pki import broker_config
        from edge.model.component import load_component
        from edge.model.device import load_inventory

        devices = list(load_inventory(devices_dir).values())
        components = []
        if components_dir.is_dir():
            components = [
                load_component(p.parent) for p in sorted(components_dir.glob("*/component.y*ml"))
            ]
        project = devices_dir.resolve().parent
        files = broker_config(project, devices, components, port=port,
                              hosts=tuple(host or ("localhost", "127.0.0.1")))  # fmt: skip
        data = {"conf": files.conf, "acl": files.acl, "operator_cert": files.operator.cert,
                "broker_cert": files.server.cert, "devices": len(devices)}  # fmt: skip
        if as_json:
            render.print_json(data)
        else:
            render.stdout().print(f"wrote {files.conf} and {files.acl} ({len(devices)} devices); "
                                  f"run: mosquitto -c {files.conf}")  # fmt: skip

    app.add_typer(broker, name="broker")
