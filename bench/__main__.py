"""``python -m bench [NAME ...]``: run benchmarks and say where their tables went.

A benchmark is a module ``bench/bench_<name>.py`` with ``run() -> None`` (or
``main()``); with no names every one found runs, in name order.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from bench.common import BENCH_DIR, RESULTS_DIR


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def _snapshot() -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in RESULTS_DIR.glob("*")} if RESULTS_DIR.exists() else {}


def run_one(name: str) -> list[Path]:
    """Run ``bench_<name>``; return the result files it wrote (``<name>*`` in results)."""
    module = importlib.import_module(f"bench.bench_{name}")
    entry = getattr(module, "run", None) or getattr(module, "main", None)
    if entry is None:
        raise SystemExit(f"bench: bench/bench_{name}.py has neither run() nor main()")
    before = _snapshot()
    argv, sys.argv = sys.argv, [f"python -m bench.bench_{name}"]  # main() may parse argv
    try:
        code = entry()
    finally:
        sys.argv = argv
    if isinstance(code, int) and code != 0:
        raise RuntimeError(f"bench_{name} exited with status {code}")
    # Another benchmark may be writing its own tables at the same time: only ours count.
    return sorted(
        p for p, m in _snapshot().items() if before.get(p) != m and p.name.startswith(name)
    )


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    known = available()
    if any(n in ("-h", "--help") for n in names):
        print(f"usage: python -m bench [NAME ...]\nbenchmarks: {' '.join(known)}")
        return 0
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"bench: unknown benchmark(s) {', '.join(unknown)}; have: {' '.join(known)}",
            file=sys.stderr,
        )
        return 2
    failed: list[str] = []
    for name in names or known:
        print(f"==> bench {name}", flush=True)
        try:
            written = run_one(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for path in written:
            print(f"wrote {path.relative_to(BENCH_DIR.parent)}")
    if failed:
        print(f"bench: failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
