"""What every benchmark script shares: the machine description, the root check, saving.

Each script saves its figures twice: bench/results/<name>.json (the local run)
and docs/bench/<name>.json (what docs/benchmarks.md shows).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": list(os.getloadavg())}


def is_root() -> bool:
    """True as root; otherwise says why the benchmark cannot run."""
    if os.geteuid() == 0:
        return True
    print("needs root (network namespaces)", file=sys.stderr)
    return False


def save(name: str, result: Any) -> None:
    text = json.dumps(result, indent=2) + "\n"
    for path in (ROOT / "bench" / "results" / f"{name}.json",
                 ROOT / "docs" / "bench" / f"{name}.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
