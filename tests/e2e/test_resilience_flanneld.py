"""flanneld faults under a 100/s pod ping: kill -9 (one host, all hosts), a lease deleted by
hand, a host gone for good (its short-TTL lease expires), kernel drift, nodes cloned with
their state (one vtep-mac file on every host)."""

from __future__ import annotations

import pytest
from e2e_scenarios import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


@pytest.mark.parametrize("name", ["flanneld-kill9", "flanneld-kill9-all"])
def test_kill9_and_restart_lose_no_packet(name: str) -> None:
    r = run_scenario(name)
    assert r["packets_lost"] == 0 and r["packets_sent"] > 0
    assert r["kernel_entries_changed"] == 0 and r["data_lost"] == 0


def test_kill9_on_a_dual_stack_lab_loses_nothing_in_either_family() -> None:
    r = run_scenario("flanneld-kill9", 300, "--dual-stack")
    assert r["families"] == [4, 6]
    assert r["packets_lost"] == 0 and r["packets_sent"] > 0
    assert r["kernel_entries_changed"] == 0 and r["data_lost"] == 0


def test_lease_deleted_by_hand_is_reacquired() -> None:
    r = run_scenario("lease-deleted")
    assert r["data_lost"] == 0  # the same subnet again


def test_host_removed_for_good_leaves_no_trace_on_peers() -> None:
    r = run_scenario("host-removed")
    assert r["packets_lost"] == 0
    assert r["lease_expired_s"] <= r["recovery_s"]


def test_kernel_drift_is_repaired_and_counted() -> None:
    r = run_scenario("kernel-drift")
    assert set(r["drifts"]) == {"route", "neigh", "fdb", "device", "mtu"}
    assert all(d["repairs_counted"] >= 1 for d in r["drifts"].values())


def test_nodes_cloned_with_their_state_converge_to_distinct_vtep_macs() -> None:
    r = run_scenario("cloned-state")
    macs = r["vtep_macs"]
    assert len(macs) == 3 and len(set(macs.values())) == 3
    assert sum(r["conflicts_counted"].values()) > 0
    assert r["data_lost"] == 0
