"""``edgectl broker config``: a Mosquitto TLS listener and ACL for the fleet.
``edgectl broker prune``: remove retained artifacts that no device needs any more."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge.cli import render
from edge.cli.options import BrokerOption, DevicesDirOption

if TYPE_CHECKING:
    from edge.deploy.direct import BrokerAccess
    from edge.deploy.prune import PruneResult


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

    @broker.command("prune")
    def prune_cmd(
        broker_url: BrokerOption = None,
        devices_dir: DevicesDirOption = Path("devices"),
        timeout: Annotated[float, typer.Option(min=1, help="Seconds to reach the broker.")] = 10.0,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List, remove nothing.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Remove the artifacts that deployments left retained on the broker and that no
        device's desired state names any more (a broker keeps every retained message in
        memory). Run it when no deployment is under way: an artifact uploaded by one that
        has not published its desired states yet would go too."""
        from edge.deploy.direct import connect
        from edge.deploy.prune import prune

        access = _access(devices_dir, broker_url)
        with render.progress_bar(not as_json) as progress:
            bus, _ = connect(access, timeout=timeout)
            try:
                result = prune(bus, dry_run=dry_run, timeout=timeout, progress=progress)
            finally:
                bus.close()
        if as_json:
            render.print_json(result.to_json())
        else:
            _print_prune(result)

    app.add_typer(broker, name="broker")


def _access(devices_dir: Path, explicit: str | None) -> BrokerAccess:
    """The broker of the device files (or ``--broker``), reached as deployments reach it."""
    from edge.deploy.direct import broker_access
    from edge.fleet.view import choose_broker, load_known
    from edge.model.device import load_inventory

    url = choose_broker(load_known(devices_dir), explicit)
    configs = load_inventory(devices_dir).values() if devices_dir.is_dir() else ()
    device = next((d for d in configs if d.broker.url == url), next(iter(configs), None))
    return broker_access(device, devices_dir.resolve().parent, url)


def _print_prune(result: PruneResult) -> None:
    rows = [(a.sha256[:12], f"{a.size:,}", a.chunks,
             "would remove" if result.dry_run else "removed", "-") for a in result.removed]
    rows += [(a.sha256[:12], f"{a.size:,}", a.chunks, "kept", ", ".join(a.needed_by))
             for a in result.kept]  # fmt: skip
    if rows:
        columns = ("artifact", "bytes", "chunks", "action", "needed by")
        render.print_table("Artifacts retained on the broker", columns, rows)
    verb = "would free" if result.dry_run else "freed"
    lines = [f"{len(result.removed)} removed{' (dry run)' if result.dry_run else ''}, "
             f"{len(result.kept)} kept; {verb} {result.freed_bytes:,} bytes"]  # fmt: skip
    lines += [f"left alone (does not parse): {t}" for t in result.unreadable]
    lines += [f"ignored (does not parse): {t}" for t in result.ignored_desired]
    render.print_lines(lines)
