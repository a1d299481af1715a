"""The chaos scenarios: one function each, taking the lab up and returning its figures.

Each runs its fault under `ping -i 0.01` between pods on different hosts and
records packets lost, time to recover and data lost (see netns_lab.scenario_kit,
and docs/reliability.md for the figures of the last full run). Replay one with
`netns-lab scenario NAME`.

The scenarios live in one module per family; importing this module registers
them all, in the order of the report (`netns_lab.scenario_kit.names()`):

- `netns_lab.scenarios_node`: baseline, flanneld-kill9, flanneld-kill9-all,
  lease-deleted, host-removed, kernel-drift (and the helpers the families share);
- `netns_lab.scenarios_etcd`: etcd-outage, etcd-failover, etcd-compaction;
- `netns_lab.scenarios_scale`: join-20, network-full.
"""

from __future__ import annotations

# Import order is registration order, which is the order of the report table.
# isort: off
from netns_lab import scenarios_node
from netns_lab import scenarios_etcd
from netns_lab import scenarios_scale
# isort: on

__all__ = ["scenarios_etcd", "scenarios_node", "scenarios_scale"]
