"""Pure pieces of the runtime's device side: bounded function logs, the local shadow,
cgroup v2 slots (on a plain folder standing in for /sys/fs/cgroup), ARN parsing of
the v1 contract, and ``context.invoke_self``'s call to the agent."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.agent.cgroup import CgroupPool
from edge.agent.funclogs import FunctionLogs
from edge.agent.shadow import ShadowError, ShadowStore
from edge.agent.worker import GGV1_PATH
from edge.runtime.context import InvokeSelfError, LambdaContext


def test_function_logs_rotate_and_never_exceed_the_total_cap(tmp_path: Path) -> None:
    logs = FunctionLogs(tmp_path, file_bytes=1000, total_bytes=4000)
    for n in range(2000):
        logs.write("com.example.Noisy", f"req-{n}", "x" * 50, now=1795712789.5)
    files = logs.files("com.example.Noisy")
    assert [p.name for p in files] == [
        "com.example.Noisy.log", "com.example.Noisy.log.1",
        "com.example.Noisy.log.2", "com.example.Noisy.log.3",
    ]
    assert sum(p.stat().st_size for p in files) <= 4000
    assert all(p.stat().st_size <= 1000 for p in files)
    last = files[0].read_text().splitlines()[-1]
    assert last == "2026-11-26T17:06:29.500Z\treq-1999\t" + "x" * 50
    logs.close()


def test_one_huge_line_is_cut_to_the_file_size(tmp_path: Path) -> None:
    logs = FunctionLogs(tmp_path, file_bytes=100, total_bytes=100)
    logs.write("c", "r", "y" * 10_000)
    logs.write("c", "r", "z")
    assert [p.stat().st_size <= 100 for p in logs.files("c")] == [True]


def test_function_logs_refuse_a_cap_below_one_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file_bytes"):
        FunctionLogs(tmp_path, file_bytes=10, total_bytes=5)


def test_shadow_update_get_delta_version_and_delete(tmp_path: Path) -> None:
    store = ShadowStore(tmp_path, clock=lambda: 1000.0)
    with pytest.raises(ShadowError) as missing:
        store.get("pi01")
    assert missing.value.code == 404
    accepted, delta = store.update(
        "pi01", {"state": {"desired": {"led": "on", "fan": {"rpm": 5}}, "reported": {"led": "off"}}}
    )
    assert accepted["version"] == 1
    assert delta == {"state": {"led": "on", "fan": {"rpm": 5}}, "version": 1, "timestamp": 1000}
    store.update("pi01", {"state": {"reported": {"led": "on", "fan": {"rpm": 5}}}})
    doc = store.get("pi01")
    assert doc["version"] == 2 and "delta" not in doc["state"]
    assert doc["metadata"]["reported"]["fan"]["rpm"] == {"timestamp": 1000}
    store.update("pi01", {"state": {"desired": {"fan": None}}})
    assert store.get("pi01")["state"]["desired"] == {"led": "on"}
    with pytest.raises(ShadowError) as conflict:
        store.update("pi01", {"state": {"reported": {}}, "version": 1})
    assert conflict.value.code == 409
    with pytest.raises(ShadowError) as bad:
        store.update("pi01", {"state": {"wanted": {}}})
    assert bad.value.code == 400
    # Kept on disk: a new store (after a restart) sees the same document.
    assert ShadowStore(tmp_path).get("pi01")["version"] == 3
    assert store.delete("pi01")["version"] == 3
    with pytest.raises(ShadowError):
        store.get("pi01")


def fake_cgroup_fs(tmp_path: Path, controllers: str = "cpu memory pids") -> Path:
    mnt = tmp_path / "cgroup"
    own = mnt / "system.slice" / "edge-agent.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(
        f"30 23 0:26 / {mnt} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    )
    (proc / "cgroup").write_text("0::/system.slice/edge-agent.service\n")
    return proc


def test_cgroup_slots_under_the_agents_own_cgroup(tmp_path: Path) -> None:
    pool = CgroupPool.detect(proc=fake_cgroup_fs(tmp_path))
    assert pool is not None
    assert pool.base == tmp_path / "cgroup/system.slice/edge-agent.service/edge-workers"
    slot = pool.slot("com.example.Big", 64)
    assert slot is not None
    assert (slot.path / "memory.max").read_text() == f"{64 << 20}\n"
    slot.attach(4242)
    assert (slot.path / "cgroup.procs").read_text() == "4242\n"
    assert not slot.oom_killed()
    (slot.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert slot.oom_killed()


class NoInternalProcesses:
    """Writes cgroup files on the plain folder as the kernel would, with cgroup v2's
    "no internal processes" rule: a cgroup that holds processes may not hand a
    controller to its children (EBUSY). Knows which pids each cgroup holds."""

    def __init__(self, procs: dict[Path, set[int]]) -> None:
        self.procs = procs

    def __call__(self, path: Path, text: str) -> None:
        if path.name == "cgroup.subtree_control" and text.startswith("+") and (
            self.procs.get(path.parent)
        ):
            raise OSError(errno.EBUSY, "Device or resource busy")
        if path.name == "cgroup.procs":  # kept here: a cgroup with none is removable
            moved = int(text)
            for pids in self.procs.values():
                pids.discard(moved)
            self.procs.setdefault(path.parent, set()).add(moved)
            return
        path.write_text(text)


def test_a_delegated_agent_moves_into_a_leaf_of_its_own_first(tmp_path: Path) -> None:
    """systemd's ``Delegate=yes`` puts the agent in its service's own cgroup, which may
    not hand the memory controller on while the agent is in it."""
    proc = fake_cgroup_fs(tmp_path)
    service = tmp_path / "cgroup/system.slice/edge-agent.service"
    kernel = NoInternalProcesses({service: {77}})
    pool = CgroupPool.detect(proc=proc, write=kernel, pid=77)
    assert pool is not None
    assert kernel.procs[service] == set() and kernel.procs[service / "agent"] == {77}
    assert (service / "cgroup.subtree_control").read_text() == "+memory\n"
    assert (pool.base / "cgroup.subtree_control").read_text() == "+memory\n"


def test_an_agent_sharing_its_cgroup_moves_back_and_limits_with_rlimits(
    tmp_path: Path,
) -> None:
    """Not delegated: a shell's session cgroup holds the shell too, so the controller
    is refused even with the agent in a leaf; the agent goes back where it was."""
    proc = fake_cgroup_fs(tmp_path)
    session = tmp_path / "cgroup/system.slice/edge-agent.service"
    kernel = NoInternalProcesses({session: {77, 12}})  # 12: the shell
    assert CgroupPool.detect(proc=proc, write=kernel, pid=77) is None
    assert kernel.procs[session] == {77, 12}
    assert not (session / "agent").exists()


def test_no_cgroup_pool_without_a_memory_controller_or_cgroup2(tmp_path: Path) -> None:
    assert CgroupPool.detect(proc=fake_cgroup_fs(tmp_path / "a", "cpu pids")) is None
    proc = tmp_path / "v1"
    proc.mkdir()
    (proc / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (proc / "cgroup").write_text("4:memory:/user\n")
    assert CgroupPool.detect(proc=proc) is None


def test_v1_function_arn_fields() -> None:
    sys.path.insert(0, str(GGV1_PATH))
    try:
        from greengrass_common.function_arn_fields import FunctionArnFields
    finally:
        sys.path.remove(str(GGV1_PATH))
    fields = FunctionArnFields("arn:aws:lambda:us-east-1:123456789012:function:adder:3")
    assert (fields.name, fields.qualifier) == ("adder", "3")
    assert fields.unqualified_arn == "arn:aws:lambda:us-east-1:123456789012:function:adder"
    assert FunctionArnFields.build_function_arn(fields.unqualified_arn, "") == (
        fields.unqualified_arn
    )
    with pytest.raises(ValueError, match="function ARN"):
        FunctionArnFields("adder")


def test_invoke_self_numbers_its_calls_and_reports_a_refusal() -> None:
    calls: list[tuple[str, dict[str, Any], bytes]] = []
    answers = iter([{"ok": True}, {"ok": True}, {"ok": False, "error": "disk full"}])

    def call(op: str, fields: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        calls.append((op, fields, body))
        return next(answers), b""

    ctx = LambdaContext(function_name="f", function_version="1", aws_request_id="r",
                        deadline=10.0, clock=lambda: 9.5, call=call)
    assert ctx.get_remaining_time_in_millis() == 500
    ctx.invoke_self({"start": 5})
    ctx.invoke_self(b"\x00raw")
    assert calls == [
        ("invoke_self", {"index": 1, "encoding": "json"}, b'{"start":5}'),
        ("invoke_self", {"index": 2, "encoding": "binary"}, b"\x00raw"),
    ]
    with pytest.raises(InvokeSelfError, match="disk full"):
        ctx.invoke_self({})
    outside = LambdaContext(function_name="f", function_version="1", aws_request_id="r",
                            deadline=1.0)
    with pytest.raises(InvokeSelfError, match="only available"):
        outside.invoke_self({})
