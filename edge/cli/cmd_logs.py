"""``edgectl logs --device NAME [--component C] [--since 10m] [-f]``: function logs, served
by the device's agent over MQTT."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from edge.cli.options import BrokerOption, DevicesDirOption
from edge.errors import UsageError


def parse_since(value: str, now: float) -> float:
    """``10m``, ``2h``, ``90s``, ``1d`` ago, or an ISO 8601 time."""
    text = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since: {value!r} is not a duration (10m, 2h, 1d) or an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def register(app: typer.Typer) -> None:
    @app.command("logs")
    def logs_cmd(
        device: Annotated[str, typer.Option(help="Device name (devices/NAME.yaml) or thing.")],
        component: Annotated[str | None, typer.Option(help="Only this component.")] = None,
        since: Annotated[str | None, typer.Option(help="10m, 2h, 1d or an ISO time.")] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
        limit: Annotated[int, typer.Option(help="At most this many past lines.")] = 1000,
        broker: BrokerOption = None,
        devices_dir: DevicesDirOption = Path("devices"),
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the device.")] = 5.0,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Print a device's function logs (what handlers printed), oldest first."""
        from edge.fleet import reader
        from edge.fleet.document import check_name
        from edge.fleet.logs import LogQuery, fetch_logs
        from edge.fleet.view import choose_broker, load_known

        check_name(device)
        if component is not None:
            check_name(component, "component")
        if limit < 1:
            raise UsageError(f"--limit: {limit} is not a positive number")
        inventory = load_known(devices_dir)
        known = inventory.find(device)
        thing = known.thing if known else device
        url = choose_broker(inventory, broker)
        start = parse_since(since, time.time()) if since else None
        bus = reader.connect(url, timeout=timeout, ca=inventory.ca)
        try:
            query = LogQuery(thing, component, start, limit, follow)
            for line in fetch_logs(bus, query, timeout=timeout):
                if as_json:
                    sys.stdout.write(json.dumps(line) + "\n")
                else:
                    ts = datetime.fromtimestamp(float(line.get("ts", 0)), UTC)
                    sys.stdout.write(
                        f"{ts.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z  {line.get('component')}  "
                        f"{line.get('request_id')}  {line.get('text')}\n"
                    )
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            bus.close()
