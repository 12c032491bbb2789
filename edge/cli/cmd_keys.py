"""``edgectl keys init``: the fleet's Ed25519 signing key pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="The fleet signing key.", no_args_is_help=True)

    @keys.command("init")
    def init_cmd(
        keys_dir: Annotated[Path, typer.Option(help="Where to write the pair.")] = Path("keys"),
        force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Write keys/fleet.key (mode 600, stays here) and keys/fleet.pub (goes on devices)."""
        from edge.deploy.signing import init_keys, load_public_key

        private, public = init_keys(keys_dir, force=force)
        key_id = load_public_key(public).key_id
        if as_json:
            render.print_json({"private_key": private, "public_key": public, "key_id": key_id})
        else:
            render.stdout().print(f"wrote {private} (keep it here) and {public} (key id {key_id})")

    app.add_typer(keys, name="keys")
