"""``edgectl device``: per-device commands (``provision``; ``show`` belongs to fleet status)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.cli.options import DevicesDirOption

#: The ``device`` sub-app; other modules may add commands to it (``device show``).
device_app = typer.Typer(help="One device: its certificate and its state.", no_args_is_help=True)


@device_app.command("provision")
def provision_cmd(
    name: Annotated[str, typer.Argument(help="Device name from devices/.")],
    devices_dir: DevicesDirOption = Path("devices"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Issue the device's client certificate (CN = its thing name), signed by the fleet
    CA in certs/ (created on first use)."""
    from edge.deploy.pki import provision
    from edge.model.device import find_device

    device = find_device(devices_dir, name)
    project = devices_dir.resolve().parent
    issued = provision(project, device)
    data = {"device": device.name, "cn": issued.cn, "cert": issued.cert, "key": issued.key,
            "ca": issued.ca, "created_ca": issued.created_ca}  # fmt: skip
    if as_json:
        render.print_json(data)
        return
    out = render.stdout()
    if issued.created_ca:
        out.print(f"created the fleet CA {issued.ca}")
    out.print(f"wrote {issued.cert} and {issued.key} (CN {issued.cn}); in {device.source} set "
              f"broker: {{url: mqtts://..., ca: {issued.ca}, cert: {issued.cert}, "
              f"key: {issued.key}}}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
