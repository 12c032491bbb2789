"""A disk whose sync fails, under a real agent process: it stops taking messages,
says why in its status, exits 1 for its supervisor, and the message whose sync
failed is not lost (the broker delivers it again to the restarted agent).

The failure is real at the system-call boundary: a small ``LD_PRELOAD`` library
makes ``fdatasync`` and ``fsync`` return ``EIO`` once a trigger file exists, for
Python's ``os.fdatasync`` and SQLite's own syncs alike."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.agent import REPO, AgentRunner, Probe, write_component

pytestmark = pytest.mark.integration

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("EDGE_TEST_FAIL_SYNC");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
"""

ECHO = """
def handler(event, context):
    return {"n": event["n"]}
"""


@pytest.fixture(scope="module")
def failing_sync(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the LD_PRELOAD library")
    folder = tmp_path_factory.mktemp("failsync")
    (folder / "failsync.c").write_text(SHIM)
    library = folder / "failsync.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library),
                    str(folder / "failsync.c"), "-ldl"], check=True)  # fmt: skip
    return library


def results(probe: Probe) -> list[int]:
    return [json.loads(m.payload)["n"] for m in probe.on("out/echo")]


def test_a_failed_sync_stops_the_agent_with_exit_1_and_loses_nothing(
    tmp_path: Path,
    agent_factory: Callable[..., AgentRunner],
    probe: Probe,
    failing_sync: Path,
) -> None:
    component = write_component(tmp_path / "components", "echo", ECHO)
    agent = agent_factory([component])  # --durability power, the default
    trigger = tmp_path / "fail-syncs-now"
    agent.env.update(LD_PRELOAD=str(failing_sync), EDGE_TEST_FAIL_SYNC=str(trigger))
    probe.follow("out/#", "edge/dev1/status")
    agent.start()
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    probe.wait_for(lambda _: results(probe) == [1])

    trigger.touch()  # from now on the disk cannot promise anything
    probe.publish("in/echo/a", json.dumps({"n": 2}))
    assert agent.proc is not None
    code = agent.proc.wait(30)
    assert code == 1, agent.log_text()[-4000:]
    statuses = [json.loads(m.payload) for m in probe.on("edge/dev1/status") if m.payload]
    last = statuses[-1]
    assert last["state"] == "offline", last
    # Whichever failed first: the agent's own sync of a commit, or SQLite's in one.
    assert re.match(r"store (sync|commit) failed: .*(Input/output error|disk I/O error)",
                    last["fatal"]), last["fatal"]  # fmt: skip
    # The local results sink's own fsync failed too: a sink failure, not an internal error.
    assert "Traceback" not in agent.log_text()

    # The disk is back: the restarted agent gets the message whose sync failed again
    # (it was never acknowledged) and runs it.
    # (Its result may have gone out before the failed sync: a result no sink keeps
    # is published while the sync runs, and then goes out again, as after a crash.)
    seen = len(results(probe))
    trigger.unlink()
    del agent.env["LD_PRELOAD"]
    agent.start()
    probe.wait_for(lambda _: 2 in results(probe)[seen:])
    probe.publish("in/echo/a", json.dumps({"n": 3}))
    probe.wait_for(lambda _: 3 in results(probe)[seen:])
    assert results(probe)[0] == 1 and set(results(probe)) == {1, 2, 3}
    assert agent.alive()


STORE_SCRIPT = """
import json, sys, threading
from pathlib import Path
from edge.agent.store import Store

folder, trigger = Path(sys.argv[1]), Path(sys.argv[2])
# Commits that sync themselves (synchronous=FULL, no split sync): the disk fails
# inside SQLite's own COMMIT, on the writer thread.
store = Store(folder / "agent.db", fsync=True, writeback=False, inline_commits=False)
failed = threading.Event()
reasons = []
store.on_failure(lambda why: (reasons.append(why), failed.set()))
store.start()
recorded = threading.Event()
store.record(["c"], "in/a", b"{}", {}, lambda rows: recorded.set())
assert recorded.wait(10)
trigger.touch()
lost = threading.Event()
store.record(["c"], "in/a", b"{}", {}, lambda rows: lost.set())
assert failed.wait(10)
try:
    store.durable()
    durable = "returned"
except OSError as exc:
    durable = str(exc)
trigger.unlink()
store.record(["c"], "in/a", b"{}", {}, lambda rows: None)  # the writer is still there
alive = store._thread is not None and store._thread.is_alive()
store.close()
print(json.dumps({"reasons": reasons, "durable": durable, "alive": alive,
                  "sync_error": store.sync_error, "lost_done": lost.is_set()}))
"""


def test_a_commit_the_disk_fails_is_fatal_for_the_store_not_for_its_writer(
    tmp_path: Path, failing_sync: Path
) -> None:
    # Before, the ROLLBACK after SQLite's own failed COMMIT raised ("no transaction is
    # active": SQLite had rolled back already) and killed the writer thread: the agent
    # then neither took nor acknowledged anything, and never exited.
    trigger = tmp_path / "fail-syncs-now"
    env = {**os.environ, "LD_PRELOAD": str(failing_sync), "EDGE_TEST_FAIL_SYNC": str(trigger)}
    done = subprocess.run([sys.executable, "-c", STORE_SCRIPT, str(tmp_path), str(trigger)],
                          capture_output=True, text=True, timeout=60, env=env,
                          cwd=str(REPO))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert len(out["reasons"]) == 1 and "I/O error" in out["reasons"][0]
    assert "an earlier commit failed" in out["durable"]
    assert out["alive"] is True
    assert out["sync_error"] and "errno 5" in out["sync_error"]
    assert out["lost_done"] is False  # what the disk failed was not reported recorded
