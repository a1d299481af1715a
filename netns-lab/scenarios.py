"""The chaos scenarios: one function each, taking the lab up and returning its figures.

Each runs its fault under `ping -i 0.01` between pods on different hosts and
records packets lost, time to recover and data lost (see netns_lab.scenario_kit,
and docs/reliability.md for the figures of the last full run). Replay one with
`netns-lab scenario NAME`.

The scenarios live in one module per family; importing this module registers
them all, in the order of the report (`names()`):

- `netns_lab.scenarios_node`: baseline, flanneld-kill9, flanneld-kill9-all,
  lease-deleted, host-removed, kernel-drift (and the helpers the families share);
- `netns_lab.scenarios_etcd`: etcd-outage, etcd-failover, etcd-compaction;
- `netns_lab.scenarios_scale`: join-20, network-full.

This is the top of the scenario modules: it imports the kit
(`netns_lab.scenario_kit`) and every family; nothing imports it back.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

# Import order is registration order, which is the order of the report table.
# isort: off
from netns_lab import scenarios_node
from netns_lab import scenarios_etcd
from netns_lab import scenarios_scale
# isort: on
from netns_lab.lab import LabError
from netns_lab.scenario_kit import SCENARIOS, Scenario
from netns_lab.scenario_kit import run_scenario as _run

__all__ = ["get", "names", "run_scenario", "scenarios_etcd", "scenarios_node",
           "scenarios_scale"]


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise LabError(f"no scenario {name!r}; scenarios: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def names() -> list[str]:
    """Every scenario, in the order of the report."""
    return list(SCENARIOS)


def run_scenario(name: str, lab_name: str, stream: TextIO = sys.stderr, *, quiet: bool = False,
                 keep: bool = False, dual_stack: bool = False) -> dict[str, Any]:
    """Bring scenario `name`'s lab up, run it, take the lab down; its figures and checks."""
    return _run(get(name), lab_name, stream, quiet=quiet, keep=keep, dual_stack=dual_stack)
