#!/usr/bin/env python3
"""Run each benchmark of an earlier commit and of this tree in turn, and compare their figures.

The earlier commit is checked out elsewhere with its own venv (its scripts, its code);
the two runs of one benchmark follow each other, so the machine's load is as close as it
gets. Writes docs/bench/side_by_side.json; `run_all.py --plots-only` then shows it in
docs/benchmarks.md.

Run as root:
  git worktree add /tmp/pflold <commit> && python3 -m venv /tmp/pflold/.venv \\
      && /tmp/pflold/.venv/bin/pip install -e '/tmp/pflold[lab,test]'
  .venv/bin/python bench/side_by_side.py --before /tmp/pflold [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from run_all import SUITE, ratios  # noqa: E402


def commit(root: Path) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"


def run(root: Path, python: str, name: str, argv: list[str]) -> dict[str, object] | None:
    script = root / "bench" / f"{name}.py"
    print(f"== {name} @ {commit(root)}: {' '.join(argv)}", flush=True)
    if subprocess.run([python, str(script), *argv], cwd=root).returncode != 0:
        return None
    out: dict[str, object] = json.loads((root / "docs" / "bench" / f"{name}.json").read_text())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the earlier commit's checkout")
    ap.add_argument("--python", help="its interpreter (default: BEFORE/.venv/bin/python)")
    ap.add_argument("--quick", action="store_true", help="the suite's quick settings")
    ap.add_argument("--only", nargs="*", choices=list(SUITE), help="only these")
    args = ap.parse_args()
    before_py = args.python or str(args.before / ".venv" / "bin" / "python")
    rows, failed = [], []
    for name in args.only or list(SUITE):
        if not (args.before / "bench" / f"{name}.py").exists():
            print(f"== {name}: not in {args.before} (new benchmark), skipped")
            continue
        full, quick = SUITE[name]
        argv = quick if args.quick else full
        old = run(args.before, before_py, name, argv)
        new = run(ROOT, sys.executable, name, argv)
        if old is None or new is None:
            failed.append(name)
            continue
        a, b = ratios({name: old}).get(name, {}), ratios({name: new}).get(name, {})
        for what in b:
            rows.append({"benchmark": name, "figure": what, "before": a.get(what),
                         "after": b[what]})
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "before": commit(args.before),
              "after": commit(ROOT), "quick": args.quick, "failed": failed, "rows": rows}
    out = ROOT / "docs" / "bench" / "side_by_side.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['benchmark']:20} {r['figure']:55} {r['before']!s:>14} -> {r['after']}")
    print(f"saved {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
