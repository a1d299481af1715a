"""The host-gw backend against real namespaces: routes via peers, plain IP on the wire,
unreachable peers reported (not retried blindly), drift repaired, foreign routes untouched."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from backend_lab import Capture, Cluster, Lab, build, ipj, network_config, start_cluster
from netns_lab.netns import Sandbox, ip

from backends import create_backend
from backends.base import ExternalInterface
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

pytestmark = pytest.mark.netns

HOSTS = {"a": ("192.168.64.3/24", "10.5.1.0/24"), "b": ("192.168.64.4/24", "10.5.2.0/24"),
         "c": ("192.168.65.5/24", "10.5.3.0/24")}  # c sits behind the underlay's router


@pytest.fixture
def hostgw(sandbox: Sandbox) -> Iterator[tuple[Lab, Cluster]]:
    lab = build(sandbox, HOSTS, pod_mtu=1500)
    cluster: Cluster | None = None
    try:
        cluster = start_cluster(lab, network_config("host-gw"))
        yield lab, cluster
    finally:
        if cluster is not None:
            cluster.close()
        lab.close()


def owned_routes(ns: str) -> list[dict[str, object]]:
    return [r for r in ipj(ns, "route", "show") if r["dst"].startswith("10.5.")
            and "gateway" in r]


def test_routes_pings_and_plain_ip_on_the_wire(hostgw: tuple[Lab, Cluster]) -> None:
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether

    lab, cluster = hostgw
    a, b = lab.hosts["a"], lab.hosts["b"]
    assert owned_routes(a.ns) == [{"dst": "10.5.2.0/24", "gateway": "192.168.64.4",
                                   "dev": "eth0", "flags": []}]  # flannel's, vector D
    assert cluster.leases["a"].attrs == LeaseAttrs(IPv4Address("192.168.64.3"), "host-gw")
    assert cluster.backends["a"].mtu == 1500
    cap = Capture(lab.underlay, "u0")
    try:
        lab.ping("a", b.pod_ip)
        lab.ping("b", a.pod_ip)
    finally:
        frames = cap.stop()
    icmp = [(p[IP].src, p[IP].dst, p[ICMP].type) for p in map(Ether, frames)
            if IP in p and ICMP in p]
    assert (a.pod_ip, b.pod_ip, 8) in icmp and (b.pod_ip, a.pod_ip, 0) in icmp
    assert not any(UDP in Ether(f) for f in frames if IP in Ether(f)
                   and Ether(f)[IP].dst in ("192.168.64.3", "192.168.64.4")
                   and Ether(f)[UDP].dport in (4789, 8472))


def test_unreachable_peer_is_reported_once_and_picked_up_when_reachable(
        hostgw: tuple[Lab, Cluster], caplog: pytest.LogCaptureFixture) -> None:
    lab, cluster = hostgw
    a = lab.hosts["a"]
    caplog.set_level(logging.WARNING, logger="pyflannel.backends")
    results = [cluster.reconcile("a", full=full) for full in (True, False, True)]
    for result in results:
        ((key, reason),) = result.unreachable
        assert key == "10.5.3.0-24" and "192.168.65.5" in reason and "192.168.64.0/24" in reason
        assert not result.errors and result.programmed_peers == 1
    # The start logged it once per host that cannot reach c (a and b); the three runs above
    # log nothing new for it.
    assert len([r for r in caplog.get_records("setup") if "10.5.3.0-24" in r.getMessage()]) == 2
    assert not [r for r in caplog.records if "10.5.3.0-24" in r.getMessage()]
    assert [r["dst"] for r in owned_routes(a.ns)] == ["10.5.2.0/24"]

    # c becomes directly reachable on eth0: the next full reconcile programs it.
    ip("route", "add", "192.168.65.5/32", "dev", "eth0", netns=a.ns)
    result = cluster.reconcile("a")
    assert result.unreachable == [] and result.added == {"route": 1}
    assert {r["dst"] for r in owned_routes(a.ns)} == {"10.5.2.0/24", "10.5.3.0/24"}


def test_drift_removal_and_foreign_routes(hostgw: tuple[Lab, Cluster]) -> None:
    lab, cluster = hostgw
    a = lab.hosts["a"]
    # Routes that are not ours: outside the Network, or inside it but not via ext + gateway.
    ip("route", "add", "10.9.0.0/16", "via", "192.168.64.9", netns=a.ns)
    ip("route", "add", "10.5.200.0/24", "dev", "cni0", netns=a.ns)
    ip("route", "del", "10.5.2.0/24", netns=a.ns)
    result = cluster.reconcile("a")
    assert result.repaired == {"route": 1} and not result.added and not result.removed
    lab.ping("a", lab.hosts["b"].pod_ip)

    # Foreign leases are skipped and remove nothing; b's removal removes its route only.
    vx = Lease(IPv4Network("10.5.7.0/24"), LeaseAttrs(IPv4Address("192.168.64.7"), "vxlan",
                                                      vxlan_backend_data(1, "0e:00:00:00:00:07")))
    result = cluster.reconcile("a", [cluster.leases["a"], cluster.leases["b"], vx], full=False)
    assert [k for k, _ in result.skipped] == ["10.5.7.0-24"]
    assert (result.added, result.removed) == ({}, {})
    result = cluster.reconcile("a", [cluster.leases["a"]], full=False)
    assert result.removed == {"route": 1}
    assert owned_routes(a.ns) == []
    remaining = {r["dst"] for r in ipj(a.ns, "route", "show")}
    assert {"10.9.0.0/16", "10.5.200.0/24", "10.5.1.0/24"} <= remaining
    # A stale host-gw route of a peer that vanished while we were down is removed by a full run.
    ip("route", "add", "10.5.8.0/24", "via", "192.168.64.8", "dev", "eth0", netns=a.ns)
    result = cluster.reconcile("a", [cluster.leases["a"]])
    assert result.removed == {"route": 1} and owned_routes(a.ns) == []
    assert {"10.9.0.0/16", "10.5.200.0/24"} <= {r["dst"] for r in ipj(a.ns, "route", "show")}


def test_public_ip_behind_nat_is_refused(tmp_path: Path) -> None:
    ext = ExternalInterface("eth0", 2, IPv4Address("192.168.64.3"), 1500,
                            public_ip=IPv4Address("203.0.113.9"))
    with pytest.raises(ValueError, match=r"public IP 203\.0\.113\.9 differs"):
        create_backend(network_config("host-gw"), ext, tmp_path, netns=None)
