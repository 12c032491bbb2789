"""``edgectl fleet status`` (direct or greengrass backend) and ``edgectl fleet simulate``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli.options import BrokerOption, DevicesDirOption
from edge.errors import UsageError
from edge.model.status import DEVICE_STATES, FleetStatus

BACKENDS = ("direct", "greengrass")
COALESCE = 0.25  # seconds between two redraws of --watch


def _greengrass(
    devices_dir: Path,
    group: str | None,
    region: str,
    profile: str | None,
    system: bool,
    progress_enabled: bool,
) -> FleetStatus:
    from edge.cli import render
    from edge.deploy.greengrass import fleet_status, make_clients
    from edge.model.device import load_inventory

    inventory = {}
    if devices_dir.is_dir():
        inventory = {n: d.thing_name for n, d in load_inventory(devices_dir).items()}
    clients = make_clients(region, profile=profile)
    group_arn = clients.iot.thing_group_arn(group) if group else None
    with render.progress_bar(progress_enabled) as progress:
        return fleet_status(
            clients.greengrass,
            now=datetime.now(UTC),
            inventory=inventory,
            thing_group_arn=group_arn,
            include_system=system,
            progress=progress,
        )


def register(app: typer.Typer) -> None:
    fleet = typer.Typer(help="Look at the whole fleet.", no_args_is_help=True)

    @fleet.command("status")
    def status_cmd(
        backend: Annotated[str, typer.Option(help="direct (the broker) or greengrass.")] = "direct",
        group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
        state: Annotated[
            list[str] | None,
            typer.Option(
                help="Only devices in this state (repeatable): " + ", ".join(DEVICE_STATES)
            ),
        ] = None,
        broker: BrokerOption = None,
        devices_dir: DevicesDirOption = Path("devices"),
        timeout: Annotated[float, typer.Option(help="Seconds to reach the broker.")] = 5.0,
        watch: Annotated[bool, typer.Option("--watch", help="Refresh live (Ctrl-C ends).")] = False,
        all_rows: Annotated[bool, typer.Option("--all", help="Every row, not one screen.")] = False,
        region: Annotated[str, typer.Option(envvar="AWS_REGION")] = "us-east-1",
        profile: Annotated[str | None, typer.Option()] = None,
        system: Annotated[bool, typer.Option(help="Include aws.greengrass.* components.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Device state, components, errors and backlog, one row per device, those that need
        attention first. Exit 0 when every device shown is online, 1 otherwise."""
        states = tuple(state or ())
        for value in states:
            if value not in DEVICE_STATES:
                raise UsageError(f"--state: {value!r} is not one of {', '.join(DEVICE_STATES)}")
        if backend not in BACKENDS:
            raise UsageError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "greengrass":
            if watch:
                raise UsageError("--watch: the greengrass backend has no live status")
            status = _greengrass(devices_dir, group, region, profile, system, not as_json)
            if states:
                status = FleetStatus(
                    status.backend,
                    status.generated_at,
                    tuple(d for d in status.devices if d.state in states),
                )
            status = status.by_attention()
        else:
            from edge.fleet import reader
            from edge.fleet.view import choose_broker, fleet_view, load_known

            inventory = load_known(devices_dir)
            url = choose_broker(inventory, broker)
            bus = reader.connect(url, timeout=timeout, ca=inventory.ca)
            try:
                feed = reader.StatusFeed(bus)
                feed.open(timeout)

                parsed: dict[str, Any] = {}

                def build() -> FleetStatus:
                    samples = feed.snapshot()
                    payloads = {t: s.payload for t, s in samples.items()}
                    mono = time.monotonic()
                    held = {t: (s.expiry, mono - s.received) for t, s in samples.items()}
                    return fleet_view(
                        payloads,
                        cache=parsed,
                        held=held,
                        now=time.time(),
                        inventory=inventory.devices,
                        group=group,
                        states=states,
                    )

                if watch:
                    seen = [feed.version]
                    last = [time.monotonic()]

                    def wait(timeout_s: float) -> bool:
                        # At most one redraw per COALESCE seconds: 1,000 devices send ~33
                        # heartbeats a second, and a redraw per message cost a quarter of
                        # a core; a change still shows within COALESCE plus one build.
                        pause = COALESCE - (time.monotonic() - last[0])
                        if pause > 0:
                            time.sleep(pause)
                        new = feed.wait_change(seen[0], timeout_s)
                        changed = new != seen[0]
                        seen[0] = new
                        last[0] = time.monotonic()
                        return changed

                    from edge.cli import render_fleet

                    status = render_fleet.watch(build, wait, as_json=as_json, all_rows=all_rows)
                    raise typer.Exit(0 if status.healthy else 1)
                status = build()
            finally:
                bus.close()
        if as_json:
            # Not through edge.cli.render: rich costs 0.1 s to import, and scripts
            # that poll --json should not pay for tables they never draw.
            sys.stdout.write(json.dumps(status.to_json(), indent=2, default=str) + "\n")
        else:
            from edge.cli import render_fleet

            render_fleet.show_fleet(status, all_rows=all_rows)
        raise typer.Exit(0 if status.healthy else 1)

    @fleet.command("simulate")
    def simulate_cmd(
        devices: Annotated[int, typer.Option(help="How many devices.")],
        broker: BrokerOption = None,
        fail_rate: Annotated[
            float, typer.Option(help="Chance that a deployment fails its health gate.")
        ] = 0.0,
        heartbeat: Annotated[float, typer.Option(help="Status heartbeat, seconds.")] = 30.0,
        prefix: Annotated[str, typer.Option(help="Thing names are PREFIX-0001...")] = "sim",
        group: Annotated[list[str] | None, typer.Option(help="Groups (repeatable).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic metrics.")] = 0,
        step: Annotated[float, typer.Option(help="Seconds per deployment phase.")] = 0.2,
        trust: Annotated[
            Path | None, typer.Option(help="Public key to verify deployments (keys/fleet.pub).")
        ] = None,
        duration: Annotated[
            float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
        ] = None,
        devices_dir: DevicesDirOption = Path("devices"),
    ) -> None:
        """Run N simulated devices in this process: status, heartbeats, last wills, and
        answers to deployments, as real agents give them."""
        import threading

        from edge.fleet.document import check_name
        from edge.fleet.simulate import SimOptions, Simulator, load_verifier
        from edge.fleet.view import choose_broker, load_known
        from edge.mqtt.paho_bus import BrokerAddress

        check_name(prefix, "--prefix")
        url = broker or choose_broker(load_known(devices_dir), None)
        _reachable(url)
        address = BrokerAddress.parse(url)
        if trust is None and Path("keys/fleet.pub").is_file():
            trust = Path("keys/fleet.pub")
        verify = load_verifier(trust) if trust is not None else None
        options = SimOptions(
            devices=devices,
            prefix=prefix,
            heartbeat=heartbeat,
            fail_rate=fail_rate,
            seed=seed,
            groups=tuple(group or ("simulated",)),
            step=step,
        )
        sim = Simulator(address.host, address.port, options, verify=verify)
        sim.start()
        typer.echo(
            f"simulating {devices} devices ({options.thing(1)}..{options.thing(devices)}) on "
            f"{address.url}; deployments "
            f"{'verified with ' + str(trust) if trust else 'NOT verified'}; Ctrl-C stops",
            err=True,
        )
        typer.echo(f"ready: {sim.connected} devices connected", err=False)
        stop = threading.Event()
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()

    app.add_typer(fleet, name="fleet")


def _reachable(url: str) -> None:
    """Fail fast with the reason when the broker is not there."""
    from edge.fleet import reader

    reader.connect(url, timeout=5.0).close()
