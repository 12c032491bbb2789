"""``edgectl build``: package a component as zip artifacts and a Greengrass recipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edge.build.builder import BuildOptions, BuildResult, build_component
from edge.build.platforms import parse_platforms
from edge.cli import render


def cache_dir() -> Path:
    """``$EDGECTL_CACHE_DIR`` or ``~/.cache/edgectl``: vendored trees survive between builds."""
    configured = os.environ.get("EDGECTL_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "edgectl"


def run_build(
    folder: Path, platforms: list[str], out: Path | None, refresh: bool, bucket: str | None,
    quiet: bool,
) -> BuildResult:  # fmt: skip
    options = BuildOptions(
        platforms=parse_platforms(platforms),
        out_dir=out,
        cache_dir=cache_dir(),
        refresh=refresh,
        bucket=bucket,
    )
    with render.progress_bar(not quiet) as progress:
        return build_component(folder, options, progress)


def show_build(result: BuildResult) -> None:
    rows = [
        (a.path, ", ".join(p.label for p in a.platforms), a.sha256[:16], a.size, a.pure)
        for a in result.artifacts
    ]
    note = " (unchanged, cached)" if result.cached else ""
    render.print_table(
        f"{result.manifest.name} {result.version}{note} in {result.seconds:.2f} s",
        ("artifact", "platforms", "sha256", "bytes", "pure"),
        rows,
    )
    render.stdout().print(f"recipe: {result.recipe_path} ({result.recipe_size} bytes)")


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        component_dir: Annotated[Path, typer.Argument(help="Folder holding component.yaml.")],
        platform: Annotated[
            list[str] | None,
            typer.Option(
                "--platform",
                help="raspberry-pi, snowball-edge, generic-linux, linux/aarch64, "
                "linux/armv7l, linux/amd64, linux-musl/<arch>; repeatable.",
            ),
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="Output folder (default COMPONENT_DIR/.edge/build).")
        ] = None,
        bucket: Annotated[
            str | None, typer.Option(help="Bucket to show in the local recipe's URIs.")
        ] = None,
        refresh: Annotated[
            bool, typer.Option(help="Re-run pip/npm and rewrite artifacts.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Build deterministic zip artifacts and a Greengrass v2 recipe."""
        result = run_build(component_dir, platform or [], out, refresh, bucket, as_json)
        if as_json:
            render.print_json(result.to_json())
        else:
            show_build(result)
