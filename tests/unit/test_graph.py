"""``edgectl graph``: who is caused by whom, from manifests alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge import graph as g
from edge.errors import ToolMissing, UsageError, ValidationError

REPO = Path(__file__).resolve().parents[2]


def comp(root: Path, name: str, triggers: list[str], outputs: list[str], extra: str = "") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("def handler(event, context):\n    return event\n")
    trig = "".join(f"\n  - topic: {t}" for t in triggers) or " []"
    outs = "".join(f"\n  - topic: {t}" for t in outputs) or " []"
    (folder / "component.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\nruntime: python3.11\nhandler: app.handler\n"
        f"triggers:{trig}\noutputs:{outs}\n" + textwrap.dedent(extra)
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """camera -> Thumbs -> Index -> Ack -> back to Index (a cycle); Lonely emits to nobody."""
    root = tmp_path / "components"
    comp(root, "Thumbs", ["cameras/+/frames"], ["thumbs/{thing}/ready"])
    comp(root, "Index", ["thumbs/+/ready", "acks/{thing}/index"], ["index/{thing}/done"])
    comp(root, "Ack", ["index/{thing}/done"], ["acks/{thing}/index"])
    comp(root, "Lonely", [], ["lonely/out"])
    comp(root, "Watcher", ["edge/{thing}/Thumbs/errors"], [])
    return root


def test_links_findings_and_cycles(pipeline: Path) -> None:
    graph = g.build_graph(g.load_manifests(pipeline))
    assert graph.components == ["Ack", "Index", "Lonely", "Thumbs", "Watcher"]
    pairs = {(lk.producer, lk.topic, lk.consumer) for lk in graph.links}
    assert pairs == {
        ("Thumbs", "thumbs/{thing}/ready", "Index"),
        ("Index", "index/{thing}/done", "Ack"),
        ("Ack", "acks/{thing}/index", "Index"),
        ("Thumbs", "edge/{thing}/Thumbs/errors", "Watcher"),
    }
    assert graph.cycles == [["Ack", "acks/{thing}/index", "Index", "index/{thing}/done", "Ack"]]
    assert graph.unconsumed == [("Lonely", "lonely/out")]
    assert graph.unproduced == [("Thumbs", "cameras/+/frames")]
    warnings = graph.warnings()
    assert warnings[0].startswith("cycle: Ack -> acks/{thing}/index -> Index")
    assert "output nobody consumes: Lonely -> lonely/out" in warnings
    assert any(w.startswith("trigger nobody produces: cameras/+/frames -> Thumbs")
               for w in warnings)


def test_a_device_renders_thing(pipeline: Path) -> None:
    graph = g.build_graph(g.load_manifests(pipeline), thing="pi01")
    assert ("Thumbs", "thumbs/pi01/ready", "Index") in {
        (lk.producer, lk.topic, lk.consumer) for lk in graph.links
    }


def test_why_lists_every_chain_and_stops_at_cycles(pipeline: Path) -> None:
    graph = g.build_graph(g.load_manifests(pipeline))
    assert g.why(graph, "Ack") == [[
        "cameras/+/frames", "Thumbs", "thumbs/{thing}/ready", "Index",
        "index/{thing}/done", "Ack",
    ]]
    assert g.why(graph, "Lonely") == [["Lonely"]]
    assert g.why(graph, "Watcher") == [
        ["cameras/+/frames", "Thumbs", "edge/{thing}/Thumbs/errors", "Watcher"]
    ]
    with pytest.raises(UsageError, match=r"unknown component 'Acks'; did you mean 'Ack'\?"):
        g.why(graph, "Acks")


def test_why_reaches_a_component_fed_only_through_a_cycle(tmp_path: Path) -> None:
    comp(tmp_path, "A", ["b/out"], ["a/out"])
    comp(tmp_path, "B", ["a/out"], ["b/out"])
    graph = g.build_graph(g.load_manifests(tmp_path))
    assert g.why(graph, "A") == [["B", "b/out", "A"]]


def test_formats(pipeline: Path) -> None:
    graph = g.build_graph(g.load_manifests(pipeline))
    text = g.to_text(graph)
    assert "  <- thumbs/+/ready  (from Thumbs)" in text
    assert "  -> lonely/out  (to nobody)" in text
    mermaid = g.to_mermaid(graph)
    assert mermaid.startswith("flowchart LR\n")
    assert '(["thumbs/{thing}/ready"])' in mermaid and "-. matches .->" in mermaid
    dot = g.to_dot(graph)
    assert dot.startswith("digraph components {") and dot.rstrip().endswith("}")
    assert '"c:Thumbs" -> "t:thumbs/{thing}/ready";' in dot
    assert '"t:thumbs/{thing}/ready" -> "t:thumbs/+/ready" [style=dashed' in dot
    doc = graph.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["unconsumed_outputs"] == [{"component": "Lonely", "topic": "lonely/out"}]


def test_png_without_graphviz_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="graphviz's 'dot' is not installed"):
        g.render_png("digraph {}", str(tmp_path / "no-dot"))
    with pytest.raises(ToolMissing):
        g.render_png("digraph {}", None)


def test_png_through_an_injected_dot_binary(tmp_path: Path) -> None:
    """The plumbing (stdin, -Tpng, stdout, exit status) with a stand-in binary, so the
    test runs where graphviz is absent; the next test uses the real one when present."""
    fake = tmp_path / "dot"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "src = sys.stdin.read()\n"
        "assert sys.argv[1:] == ['-Tpng'], sys.argv\n"
        "if 'digraph' not in src:\n    print('syntax error in line 1', file=sys.stderr)\n"
        "    sys.exit(1)\n"
        "sys.stdout.buffer.write(b'\\x89PNG\\r\\n\\x1a\\n' + str(len(src)).encode())\n"
    )
    fake.chmod(0o755)
    assert g.render_png("digraph {}", str(fake)).startswith(b"\x89PNG")
    with pytest.raises(ToolMissing, match="failed: syntax error in line 1"):
        g.render_png("nonsense", str(fake))


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_png_through_the_real_graphviz(pipeline: Path) -> None:
    graph = g.build_graph(g.load_manifests(pipeline))
    png = g.render_png(g.to_dot(graph), shutil.which("dot"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_a_broken_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    comp(tmp_path, "Bad", ["a/{thng}/x"], [])
    with pytest.raises(ValidationError, match=r"triggers\[0\]\.topic: .*unknown placeholder"):
        g.load_manifests(tmp_path)


def test_duplicate_component_names_are_refused(tmp_path: Path) -> None:
    comp(tmp_path, "A", [], [])
    comp(tmp_path / "more", "A", [], [])
    shutil.move(str(tmp_path / "more" / "A"), str(tmp_path / "A2"))
    shutil.rmtree(tmp_path / "more")
    with pytest.raises(UsageError, match="name: 'A' is also the name of"):
        g.load_manifests(tmp_path)


def test_deployed_set() -> None:
    class M:
        def __init__(self, name: str) -> None:
            self.name = name

    found, missing = g.deployed_set(
        [M("a"), M("b")], {"components": {"a": {}, "zz": {}}}  # type: ignore[list-item]
    )
    assert [m.name for m in found] == ["a"] and missing == ["zz"]


# -- the CLI ------------------------------------------------------------------------


def edgectl(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "graph", *args], cwd=cwd,
        capture_output=True, text=True, timeout=60,
    )


def test_cli_on_the_sample_components() -> None:
    proc = edgectl()
    assert proc.returncode == 0, proc.stderr
    assert "com.example.StreamAggregator\n  <- telemetry/+/readings  (from outside)" in proc.stdout
    assert "edgectl: warning: output nobody consumes: com.example.Hello" in proc.stderr
    why = edgectl("--why", "com.example.ThresholdAlerts")
    assert why.stdout == (
        "telemetry/+/readings -> com.example.StreamAggregator -> aggregates/{thing}/minute"
        " -> com.example.ThresholdAlerts\n"
    )
    doc = json.loads(edgectl("--json").stdout)
    assert {c["name"] for c in doc["components"]} >= {
        "com.example.Hello", "com.example.Thumbnailer", "com.example.TableMirror",
        "com.example.StreamAggregator", "com.example.ThresholdAlerts",
    }


def test_cli_formats_and_files(tmp_path: Path) -> None:
    out = tmp_path / "g.mmd"
    proc = edgectl("--format", "mermaid", "--out", str(out))
    assert proc.returncode == 0 and out.read_text().startswith("flowchart LR")
    assert edgectl("--format", "dot").stdout.startswith("digraph components {")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        (("--format", "svg"), 2, "--format: 'svg' is not one of text, mermaid, dot, png"),
        (("--format", "png"), 2, "--format png: needs --out FILE"),
        (("--why", "nope"), 2, "--why: unknown component 'nope'"),
        (("--format", "png", "--out", str(tmp_path / "g.png"), "--dot", "/nonexistent/dot"),
         1, "graphviz's 'dot' is not installed"),
        (("--components", str(tmp_path / "none")), 2, "no such folder of components"),
    ]
    for args, code, message in cases:
        proc = edgectl(*args)
        assert proc.returncode == code, (args, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0], (args, proc.stderr)
    comp(tmp_path / "c", "Bad", ["a/{thng}/x"], [])
    bad = edgectl("--components", str(tmp_path / "c"))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown placeholder {thng}" in bad.stderr
