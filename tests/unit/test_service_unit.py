"""The systemd unit shipped in docs/ starts the agent the way docs/agent.md says:
its command line is one ``edge-agent`` accepts, and the directives the agent's
stop, restart and memory limits rely on are there."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from edge.agent.main import parse_args

UNIT = Path(__file__).resolve().parents[2] / "docs" / "edge-agent.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_runs_an_agent_command_line_that_edge_agent_accepts() -> None:
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "edge-agent"
    args = parse_args(argv[1:])
    assert args.component == []  # direct deployments: it runs what was deployed to it
    assert args.durability == "power"
    # The data dir is the one systemd creates for the service's user.
    assert args.data_dir == Path("/var/lib") / service["StateDirectory"]


def test_the_unit_lets_the_agent_stop_restart_and_limit_memory_its_own_way() -> None:
    service = _unit()["Service"]
    assert service["KillMode"] == "mixed"  # SIGTERM to the agent, not to its workers
    assert service["Restart"] == "on-failure"  # exit 1 after a failed disk sync
    assert service["Delegate"] == "yes"  # cgroup v2 memory.max per worker
    assert int(service["TimeoutStopSec"]) >= 30  # a stop's budget: timeouts + 12 s
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"
