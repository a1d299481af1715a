"""Reliability figures: every chaos scenario of `netns-lab scenario`, one after another.

Runs `netns-lab scenario --all` (a lab of its own per scenario, each fault under a 100/s
pod ping; the `baseline` scenario, no fault, is the reference measured in the same run),
prints the figures, rewrites the table in docs/reliability.md and saves them as JSON in
bench/results/reliability.json and docs/bench/reliability.json. Needs root.

    python bench/reliability.py [--name LAB] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help="only these (default: all)")
    p.add_argument("--name", default="rely", help="lab name to use (default: rely)")
    args = p.parse_args()
    exe = Path(sys.executable).parent / "netns-lab"
    argv = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else
                                                            ["-m", "netns_lab.cli"]),
            "--name", args.name, "scenario", *(args.scenarios or ["--all"]),
            "--report", str(ROOT / "docs" / "reliability.md"),
            "--json-out", str(ROOT / "bench" / "results" / "reliability.json"),
            "--json-out", str(ROOT / "docs" / "bench" / "reliability.json")]
    return subprocess.run(argv, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
