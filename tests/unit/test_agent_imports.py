"""The device side stays lean: the agent never loads the workstation's libraries, and
the worker bootstrap loads nothing beyond the standard library before user code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

AGENT_MODULES = [
    "edge.agent.main",
    "edge.agent.agent",
    "edge.agent.component",
    "edge.agent.store",
    "edge.agent.syncer",
    "edge.agent.worker",
    "edge.mqtt.paho_bus",
    "edge.sync.sinks",
]
WORKSTATION_ONLY = ["typer", "rich", "click", "moto", "jsonschema", "cryptography"]
NOT_IN_BOOTSTRAP = ["boto3", "botocore", "paho", "yaml"]


def loaded_after(
    modules: list[str], watch: list[str], *, site: bool = True
) -> dict[str, list[str]]:
    """Import ``modules`` in a fresh interpreter (``site=False``: without ``site``, whose
    imports, such as an editable install's finder, are not the modules'); which of
    ``watch`` (or their submodules) ended up in ``sys.modules``."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"watch = {watch!r}\n"
        "print(json.dumps({w: sorted(m for m in sys.modules"
        " if m == w or m.startswith(w + '.')) for w in watch}))\n"
    )
    proc = subprocess.run(
        [sys.executable, *([] if site else ["-S"]), "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    found: dict[str, list[str]] = json.loads(proc.stdout)
    return {name: mods for name, mods in found.items() if mods}


def test_agent_loads_no_workstation_library() -> None:
    assert loaded_after(AGENT_MODULES, WORKSTATION_ONLY) == {}


def test_the_check_sees_a_loaded_module() -> None:
    # The detector itself works: the CLI does load typer.
    found = loaded_after(["edge.cli.main"], ["typer", "moto"])
    assert set(found) == {"typer"}


def test_worker_bootstrap_loads_no_third_party_library() -> None:
    assert loaded_after(["edge.runtime.bootstrap"], NOT_IN_BOOTSTRAP + WORKSTATION_ONLY) == {}


def test_worker_bootstrap_loads_no_other_edge_module() -> None:
    found = loaded_after(["edge.runtime.bootstrap"], ["edge"])
    assert set(found["edge"]) == {
        "edge",
        "edge.runtime",
        "edge.runtime.bootstrap",
        "edge.runtime.context",
        "edge.runtime.protocol",
    }


# Standard modules a worker's cold start does without (each costs 1-5 ms to import):
# annotations, error records and one lock do not need them.
NOT_AT_WORKER_START = ["typing", "traceback", "threading", "contextlib", "dataclasses", "inspect"]


def test_worker_bootstrap_starts_without_heavy_standard_modules() -> None:
    assert loaded_after(["edge.runtime.bootstrap"], NOT_AT_WORKER_START, site=False) == {}


def test_the_check_without_site_sees_a_loaded_standard_module() -> None:
    found = loaded_after(["edge.runtime.bootstrap", "dataclasses"], NOT_AT_WORKER_START,
                         site=False)
    assert "dataclasses" in found and "inspect" in found
