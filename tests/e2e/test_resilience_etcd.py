"""etcd faults under a 100/s pod ping: a 60 s outage, leader failover, compaction.

Each test replays a `netns-lab scenario` in a lab of its own (netns_lab.scenarios);
the figures are printed and saved (e2e_scenarios.RESULTS).
"""

from __future__ import annotations

import pytest
from e2e_scenarios import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


def test_etcd_outage_of_60s_loses_nothing() -> None:
    r = run_scenario("etcd-outage")
    assert r["outage_s"] >= 60
    assert r["packets_lost"] == 0 and r["packets_sent"] > 5000
    assert r["peers_removed"] == 0 and r["data_lost"] == 0
    assert r["readyz_during_outage"] == ["etcd unreachable"]  # not ready, and says why


def test_etcd_leader_killed_then_the_next_one() -> None:
    r = run_scenario("etcd-failover")
    first, second = (k["killed"] for k in r["kills"])
    assert first != second
    assert r["packets_lost"] == 0 and r["data_lost"] == 0


def test_compaction_while_nodes_join_and_leave_loses_no_event() -> None:
    r = run_scenario("etcd-compaction")
    assert r["packets_lost"] == 0 and r["data_lost"] == 0
    assert r["h3_relists"] >= 3
