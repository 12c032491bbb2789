"""The direct backend's commands (deploy, rollback, remove) share their target options,
their live display and their exit codes; this module holds that part."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import typer

from edge.cli import render
from edge.errors import DeployError, UsageError
from edge.model.device import DeviceConfig, find_device, load_inventory


@dataclass(frozen=True)
class DirectOptions:
    component_dirs: tuple[Path, ...] = ()
    device: str | None = None
    group: str | None = None
    all_devices: bool = False
    remove: tuple[str, ...] = ()
    rollback: bool = False
    strategy: str = "all-at-once"
    batch: int | None = None
    canary: int | None = None
    max_failures: int = 1
    health_window: float | None = None
    timeout: float = 60.0
    broker: str | None = None
    devices_dir: Path = Path("devices")
    keys_dir: Path | None = None
    dry_run: bool = False
    as_json: bool = False


def select_devices(options: DirectOptions) -> tuple[DeviceConfig, ...]:
    chosen = sum(x for x in (options.device is not None, options.group is not None,
                             options.all_devices))  # fmt: skip
    if chosen != 1:
        raise UsageError("--device/--group/--all: give exactly one")
    if options.device is not None:
        return (find_device(options.devices_dir, options.device),)
    inventory = load_inventory(options.devices_dir)
    if options.all_devices:
        if not inventory:
            raise UsageError(f"no devices in {options.devices_dir}/")
        return tuple(inventory.values())
    members = tuple(d for d in inventory.values() if options.group in d.groups)
    if not members:
        groups = sorted({g for d in inventory.values() for g in d.groups})
        close = difflib.get_close_matches(options.group or "", groups, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown group {options.group!r} (known: {', '.join(groups) or 'none'})"
                         f"{hint}")  # fmt: skip
    return members


def run_direct_command(options: DirectOptions) -> None:
    from edge.deploy.direct import DirectRequest, broker_access, run_direct

    devices = select_devices(options)
    project = options.devices_dir.resolve().parent
    keys_dir = options.keys_dir or project / "keys"
    if not options.component_dirs and not options.remove and not options.rollback:
        raise UsageError("name at least one component folder (or --remove)")
    request = DirectRequest(
        devices=devices, component_dirs=options.component_dirs, remove=options.remove,
        rollback=options.rollback, strategy=options.strategy, batch=options.batch,
        canary=options.canary, max_failures=options.max_failures,
        health_window=options.health_window, timeout=options.timeout,
        key_path=keys_dir / "fleet.key",
        broker=broker_access(devices[0], project, options.broker),
        dry_run=options.dry_run,
    )  # fmt: skip
    show = not options.as_json
    with render.progress_bar(show) as progress:
        from edge.cli.render_deploy import live_devices, print_result

        with live_devices([d.name for d in devices], show) as on_device:
            by_thing = {d.thing_name: d.name for d in devices}

            def event(device: str, state: str, detail: str) -> None:
                on_device(by_thing.get(device, device), state, detail)

            plan, result = run_direct(request, progress=progress, on_device=event)
    if result is None:
        if options.as_json:
            render.print_json(plan.to_json())
        else:
            render.print_lines(plan.lines())
        return
    if options.as_json:
        render.print_json(result.to_json())
    else:
        print_result(result)
    if not result.ok:
        bad = [o for o in result.outcomes if o.state not in ("SUCCEEDED", "UNCHANGED")]
        first = bad[0] if bad else None
        what = f"{first.device}: {first.state}: {first.reason}" if first else "rollout halted"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        if options.as_json:
            raise typer.Exit(1)
        raise DeployError(what + more)
