"""The ``edgectl`` entry point: one place that maps errors to exit codes.

Each command module under ``edge.cli`` exposes ``register(app)``; commands stay
a few lines that parse options, call the core and hand the result to a
renderer. The core never imports this package.
"""

from __future__ import annotations

import importlib
import sys

import typer

from edge.errors import EdgeError

# Command modules, each with ``register(app: typer.Typer) -> None``. Imported
# lazily by name so a broken optional module cannot break unrelated commands
# at import time more than once, and so the list reads as the CLI's table of
# contents.
COMMAND_MODULES = [
    "edge.cli.cmd_invoke",
    "edge.cli.cmd_demo",
    "edge.cli.cmd_build",
    "edge.cli.cmd_publish",
    "edge.cli.cmd_deploy",
    "edge.cli.cmd_fleet",
    "edge.cli.cmd_device_show",
    "edge.cli.cmd_logs",
    "edge.cli.cmd_keys",
    "edge.cli.cmd_rollback",
    "edge.cli.cmd_remove",
    "edge.cli.cmd_device",
    "edge.cli.cmd_broker",
    "edge.cli.cmd_init",
    "edge.cli.cmd_generate",
    "edge.cli.cmd_graph",
    "edge.cli.cmd_dev",
    "edge.cli.cmd_sync",
]


#: Commands that scripts run in loops (``fleet status`` has a 2 s budget at 1,000
#: devices): when the first argument names one, only its modules are imported,
#: which saves the 0.2-0.3 s that importing every command module costs. A module
#: that adds a command to one of these groups must be listed here too.
FAST_PATHS: dict[str, tuple[str, ...]] = {
    "fleet": ("edge.cli.cmd_fleet",),
    "device": ("edge.cli.cmd_device", "edge.cli.cmd_device_show"),
    "logs": ("edge.cli.cmd_logs",),
}


def build_app(argv: list[str] | None = None) -> typer.Typer:
    app = typer.Typer(
        name="edgectl",
        help="Build, deploy and run Lambda-style functions on edge devices.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    first = argv[0] if argv else None
    modules = FAST_PATHS.get(first, COMMAND_MODULES) if first else COMMAND_MODULES
    if modules is not COMMAND_MODULES:
        # A typer app with a single command runs it without its name; a callback keeps
        # ``edgectl logs ...`` a group with one command.
        app.callback()(_group)
    for name in modules:
        importlib.import_module(name).register(app)
    return app


def _group() -> None:
    """Build, deploy and run Lambda-style functions on edge devices."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line and exit 2 (usage) or 1, bugs keep a traceback."""
    import logging

    # Library loggers stay quiet unless something needs the user's attention.
    logging.basicConfig(level=logging.WARNING, format="edgectl: %(levelname)s: %(message)s")
    app = build_app(sys.argv[1:] if argv is None else argv)
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of
        # raising it; dropping it would turn a failed command into exit 0.
        code = app(args=argv, prog_name="edgectl", standalone_mode=False)
        if isinstance(code, int):
            return code
    except EdgeError as exc:
        print(f"edgectl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgectl: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            print("edgectl: aborted", file=sys.stderr)
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
