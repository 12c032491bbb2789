"""Build timings for issue 8's two targets, written to bench/results/build.md.

1. Rebuilding an unchanged component: no new artifact, target under 1 s.
2. Building a pure-Python component with one pure dependency for three
   platforms: the time (cold: empty vendor cache, so pip resolves and
   downloads for each platform; warm: vendor cache filled, sources changed)
   and the number of zips (target: one).

Run: ``.venv/bin/python -m bench.bench_build [--runs N]``. Cold builds need
the package index, as a user's first build does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import write_table
from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import DEFAULT_PLATFORMS

MANIFEST = """\
name: com.example.BenchPure
version: 1.0.0
runtime: python3.11
handler: app.handler
triggers:
  - topic: bench/+/in
outputs:
  - topic: bench/{thing}/out
"""


def make_component(root: Path) -> Path:
    folder = root / "component"
    folder.mkdir(parents=True)
    (folder / "component.yaml").write_text(MANIFEST)
    (folder / "app.py").write_text("import six\n\ndef handler(event, context):\n    return event\n")
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold: list[float] = []
    warm: list[float] = []
    rebuild: list[float] = []
    zips: set[int] = set()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            folder = make_component(root)
            options = BuildOptions(DEFAULT_PLATFORMS, cache_dir=root / "cache")
            started = time.perf_counter()
            result = build_component(folder, options)
            cold.append(time.perf_counter() - started)
            zips.add(len(result.artifacts))
            for _ in range(3):
                started = time.perf_counter()
                again = build_component(folder, options)
                rebuild.append(time.perf_counter() - started)
                assert again.cached and again.artifacts == result.artifacts
            (folder / "app.py").write_text(f"# run {run}\n" + (folder / "app.py").read_text())
            started = time.perf_counter()
            changed = build_component(folder, options)
            warm.append(time.perf_counter() - started)
            assert not changed.cached

    def row(name: str, samples: list[float], target: str) -> dict[str, object]:
        return {
            "measurement": name,
            "runs": len(samples),
            "median s": f"{statistics.median(samples):.3f}",
            "max s": f"{max(samples):.3f}",
            "target": target,
        }

    rows = [
        row("rebuild, unchanged component (cache hit, no new artifact)", rebuild, "< 1 s"),
        row("build, 1 pure dep (six), 3 platforms, cold vendor cache", cold, "report"),
        row("build, 1 pure dep, 3 platforms, warm vendor cache, source changed", warm, "report"),
    ]
    path = write_table(
        "build",
        rows,
        title="edgectl build: rebuild and three-platform build times",
        notes=[
            f"platforms: {', '.join(p.label for p in DEFAULT_PLATFORMS)}; "
            f"zips per build: {sorted(zips)} (target: one for a pure-Python component)",
            "cold: empty vendor cache, pip resolves/downloads once per platform, in parallel "
            "(pip's own HTTP cache stays warm after the first run)",
        ],
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
