"""Running a `netns-lab scenario` from a test: its own lab, its figures printed and saved."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labrun import LabRun
from netns_lab.scenario_report import render_result

# Each test's figures land here as <scenario>.json (CI can keep them as artifacts).
RESULTS = Path(os.environ.get("PYFLANNEL_SCENARIO_RESULTS", "/tmp/pyflannel-scenarios"))


def run_scenario(name: str, timeout: float = 300, *extra: str) -> dict[str, Any]:
    """`netns-lab scenario NAME --json` in a lab owned by this test; its result dict."""
    run = LabRun("")
    try:
        proc = run.cli("scenario", name, "--json", "-q", *extra, check=False, timeout=timeout)
    finally:
        left = run.close()
    assert left == {}, f"the scenario left behind: {left}"
    assert proc.stdout.lstrip().startswith("{"), \
        f"netns-lab scenario {name} exited {proc.returncode}:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    print(render_result(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}{'-dual-stack' if extra else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    failed = [c for c in result["checks"] if not c["ok"]]
    assert not result["error"] and not failed, render_result(result)
    assert proc.returncode == 0, proc.stderr
    return result
