"""Many hosts at once, and more hosts than subnets."""

from __future__ import annotations

import pytest
from e2e_scenarios import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


def test_twenty_hosts_join_at_once() -> None:
    r = run_scenario("join-20")
    assert r["distinct_subnets"] == 20 and r["min_peers"] == 19
    assert r["packets_lost"] == 0


def test_network_full_reports_backs_off_and_spares_the_others() -> None:
    r = run_scenario("network-full")
    assert "out of subnets" in r["readyz"] and "10.244.0.0/16" in r["readyz"]
    assert r["packets_lost"] == 0 and r["data_lost"] == 0
