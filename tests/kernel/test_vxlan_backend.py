"""The vxlan backend against real namespaces: flannel's kernel state (vector D), traffic,
repair of drift, restart without loss, MAC persistence, DirectRouting."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from backend_lab import (
    Capture,
    Cluster,
    Lab,
    bridge_fdb,
    build,
    ipj,
    network_config,
    ping_flood,
    start_cluster,
)
from netns_lab.netns import Sandbox, ip, run

from backends import create_backend
from backends.base import IncrementalBackend
from backends.vtep_mac import render_mac_file
from backends.vxlan import this_node
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

pytestmark = pytest.mark.netns

THREE = {"a": ("192.168.64.3/24", "10.5.1.0/24"), "b": ("192.168.64.4/24", "10.5.2.0/24"),
         "c": ("192.168.64.5/24", "10.5.3.0/24")}
# Vector D's `ip -j -d link` info_data, exactly.
VECTOR_D_INFO = {"id": 1, "local": "192.168.64.3", "link": "eth0",
                 "port_range": {"low": 0, "high": 0}, "port": 8472, "learning": False, "ttl": 0,
                 "df": "unset", "ageing": 300, "udp_csum": True, "udp_zero_csum6_tx": False,
                 "udp_zero_csum6_rx": False}


@pytest.fixture
def make(sandbox: Sandbox) -> Iterator[Callable[..., tuple[Lab, Cluster]]]:
    made: list[tuple[Lab, Cluster | None]] = []

    def factory(hosts: dict[str, tuple[str, str]], names: list[str] | None = None,
                **vxlan: Any) -> tuple[Lab, Cluster]:
        lab = build(sandbox, hosts)
        made.append((lab, None))
        cluster = start_cluster(lab, network_config("vxlan", **vxlan), names)
        made[-1] = (lab, cluster)
        return lab, cluster

    yield factory
    for lab, cluster in made:
        if cluster is not None:
            cluster.close()
        lab.close()


def mac_of(cluster: Cluster, name: str) -> str:
    mac = cluster.leases[name].attrs.vtep_mac
    assert isinstance(mac, str)
    return mac


def kernel_state(ns: str, dev: str = "flannel.1") -> dict[str, Any]:
    return {
        "neigh": sorted((n["dst"], n["lladdr"], tuple(n["state"]))
                        for n in ipj(ns, "neigh", "show", "dev", dev)),
        "fdb": sorted((f["mac"], f["dst"], tuple(f["flags"]), f["state"])
                      for f in bridge_fdb(ns, dev)),
        "routes": sorted(tuple(sorted(r.items())) for r in ipj(ns, "route", "show", "dev", dev)),
    }


def expected_peer_state(cluster: Cluster, peers: list[str], dev: str = "flannel.1"
                        ) -> dict[str, Any]:
    neigh, fdb, routes = [], [], []
    for p in peers:
        host = cluster.lab.hosts[p]
        s0 = str(host.subnet.network_address)
        neigh.append((s0, mac_of(cluster, p), ("PERMANENT",)))
        fdb.append((mac_of(cluster, p), str(host.ip), ("self",), "permanent"))
        routes.append(tuple(sorted({"dst": str(host.subnet), "gateway": s0,
                                    "flags": ["onlink"]}.items())))
    return {"neigh": sorted(neigh), "fdb": sorted(fdb), "routes": sorted(routes)}


def test_three_hosts_match_vector_d_and_pods_ping(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make(THREE)
    for src, dst in (("a", "b"), ("a", "c"), ("b", "c"), ("c", "a")):
        lab.ping(src, lab.hosts[dst].pod_ip)
    ns = lab.hosts["a"].ns

    (link,) = ipj(ns, "-d", "link", "show", "flannel.1")
    assert link["linkinfo"]["info_kind"] == "vxlan"
    assert link["linkinfo"]["info_data"] == VECTOR_D_INFO
    assert (link["mtu"], link["address"], link.get("txqlen", 0)) == (1450, mac_of(cluster, "a"), 0)
    assert {"UP", "LOWER_UP"} <= set(link["flags"]) and link["operstate"] == "UNKNOWN"
    assert cluster.backends["a"].mtu == 1450
    (addrs,) = ipj(ns, "-4", "addr", "show", "dev", "flannel.1")
    assert [(a["local"], a["prefixlen"], a["scope"]) for a in addrs["addr_info"]] == [
        ("10.5.1.0", 32, "global")]
    assert kernel_state(ns) == expected_peer_state(cluster, ["b", "c"])
    local = ipj(ns, "route", "show", "table", "local", "dev", "flannel.1")
    assert [(r["type"], r["dst"], r["protocol"], r["scope"]) for r in local] == [
        ("local", "10.5.1.0", "kernel", "host")]
    accept_ra = run(["ip", "netns", "exec", ns, "cat",
                     "/proc/sys/net/ipv6/conf/flannel.1/accept_ra"]).stdout.strip()
    assert accept_ra == "0"
    # Lease value as flannel writes it.
    attrs = cluster.leases["a"].attrs
    assert (attrs.backend_type, attrs.backend_data, attrs.public_ip) == (
        "vxlan", {"VNI": 1, "VtepMAC": mac_of(cluster, "a")}, IPv4Address("192.168.64.3"))
    # A second full reconcile finds nothing to do.
    again = cluster.reconcile("a")
    assert (again.added, again.removed, again.repaired, again.errors) == ({}, {}, {}, [])
    assert again.programmed_peers == 2


def test_wire_format_has_configured_vni_port_and_pod_addresses(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    lab, cluster = make({k: v for k, v in THREE.items() if k != "c"}, vni=7, port=4789)
    a, b = lab.hosts["a"], lab.hosts["b"]
    (link,) = ipj(a.ns, "-d", "link", "show", "flannel.7")
    assert (link["linkinfo"]["info_data"]["id"], link["linkinfo"]["info_data"]["port"]) == (
        7, 4789)
    cap = Capture(lab.underlay, "u0")  # a's port on the underlay bridge
    try:
        lab.ping("a", b.pod_ip)
    finally:
        frames = cap.stop()
    seen = []
    for raw in frames:
        pkt = Ether(raw)
        if UDP in pkt and pkt[UDP].dport == 4789:
            vx = VXLAN(bytes(pkt[UDP].payload))
            inner = vx[Ether]
            if IP in inner and ICMP in inner:
                seen.append((pkt[IP].src, pkt[IP].dst, vx.vni, inner[IP].src, inner[IP].dst,
                             inner[ICMP].type, inner[Ether].dst))
    assert ("192.168.64.3", "192.168.64.4", 7, a.pod_ip, b.pod_ip, 8, mac_of(cluster, "b")) in seen
    assert ("192.168.64.4", "192.168.64.3", 7, b.pod_ip, a.pod_ip, 0, mac_of(cluster, "a")) in seen


def test_removed_lease_takes_all_three_entries(make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make(THREE)
    ns = lab.hosts["a"].ns
    result = cluster.reconcile("a", [cluster.leases["a"], cluster.leases["b"]], full=False)
    assert result.removed == {"neigh": 1, "fdb": 1, "route": 1} and not result.errors
    assert kernel_state(ns) == expected_peer_state(cluster, ["b"])
    assert lab.cannot_ping("a", lab.hosts["c"].pod_ip)
    # ... and a full run agrees with the incremental one.
    full = cluster.reconcile("a", [cluster.leases["a"], cluster.leases["b"]])
    assert (full.added, full.removed, full.repaired) == ({}, {}, {})


def test_incremental_add_of_a_new_lease(make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make(THREE, names=["a", "b"])
    # c comes up later: a learns about it through an event (incremental), c through its start.
    c = lab.hosts["c"]
    be = create_backend(cluster.config, c.ext, lab.state_dir("c"), netns=c.ns)
    cluster.backends["c"] = be
    cluster.leases["c"] = c.lease(be.lease_attrs())
    assert not cluster.reconcile("c").errors
    result = cluster.reconcile("a", full=False)
    assert result.added == {"neigh": 1, "fdb": 1, "route": 1} and not result.full
    assert kernel_state(lab.hosts["a"].ns) == expected_peer_state(cluster, ["b", "c"])
    lab.ping("a", c.pod_ip)


def test_told_only_the_changes_it_programs_what_a_list_would(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    """reconcile_changes (the daemon's incremental path: lease key -> lease, None: gone)
    ends in the same kernel state as a full list, and a full run then has nothing to do."""
    lab, cluster = make(THREE, names=["a", "b"])
    c = lab.hosts["c"]
    be = create_backend(cluster.config, c.ext, lab.state_dir("c"), netns=c.ns)
    cluster.backends["c"] = be
    cluster.leases["c"] = c.lease(be.lease_attrs())
    assert not cluster.reconcile("c").errors
    a, own = cluster.backends["a"], cluster.leases["a"]
    assert isinstance(a, IncrementalBackend)
    result = a.reconcile_changes(own, {cluster.leases["c"].key: cluster.leases["c"]})
    assert result.added == {"neigh": 1, "fdb": 1, "route": 1} and not result.full
    assert result.programmed_peers == 2
    assert kernel_state(lab.hosts["a"].ns) == expected_peer_state(cluster, ["b", "c"])
    lab.ping("a", c.pod_ip)
    result = a.reconcile_changes(own, {cluster.leases["b"].key: None})
    assert result.removed == {"neigh": 1, "fdb": 1, "route": 1} and result.programmed_peers == 1
    assert kernel_state(lab.hosts["a"].ns) == expected_peer_state(cluster, ["c"])
    full = cluster.reconcile("a", [own, cluster.leases["c"]])
    assert not full.changed and full.programmed_peers == 1


@pytest.mark.parametrize("drift", ["route", "neigh", "fdb", "mtu", "device", "address", "down"])
def test_drift_is_repaired_by_one_full_reconcile(
        make: Callable[..., tuple[Lab, Cluster]], drift: str) -> None:
    lab, cluster = make(THREE)
    ns = lab.hosts["a"].ns
    b = lab.hosts["b"]
    before = ipj(ns, "-d", "link", "show", "flannel.1")[0]
    {
        "route": lambda: ip("route", "del", str(b.subnet), netns=ns),
        "neigh": lambda: ip("neigh", "del", str(b.subnet.network_address), "dev", "flannel.1",
                            netns=ns),
        "fdb": lambda: run(["bridge", "-n", ns, "fdb", "del", mac_of(cluster, "b"), "dev",
                            "flannel.1", "dst", str(b.ip), "self"]),
        "mtu": lambda: ip("link", "set", "flannel.1", "mtu", "1300", netns=ns),
        "device": lambda: ip("link", "del", "flannel.1", netns=ns),
        "address": lambda: ip("addr", "flush", "dev", "flannel.1", netns=ns),
        "down": lambda: ip("link", "set", "flannel.1", "down", netns=ns),
    }[drift]()
    result = cluster.reconcile("a")
    assert not result.errors and not result.added and not result.removed
    expected = {
        "route": {"route": 1}, "neigh": {"neigh": 1}, "fdb": {"fdb": 1}, "mtu": {"mtu": 1},
        # Deleting the device takes its address, neighbours, FDB and routes with it.
        "device": {"device": 1, "address": 1, "neigh": 2, "fdb": 2, "route": 2},
        # Removing the last IPv4 address (or setting the link down) makes the kernel drop
        # the device's routes and neighbours too; its FDB stays.
        "address": {"address": 1, "neigh": 2, "route": 2},
        "down": {"device": 1, "neigh": 2, "route": 2},
    }[drift]
    assert result.repaired == expected
    after = ipj(ns, "-d", "link", "show", "flannel.1")[0]
    assert (after["mtu"], after["address"]) == (1450, before["address"])
    assert kernel_state(ns) == expected_peer_state(cluster, ["b", "c"])
    assert result.programmed_peers == 2
    lab.ping("a", b.pod_ip)
    lab.ping("a", lab.hosts["c"].pod_ip)


def test_bad_and_foreign_leases_remove_nothing(make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make(THREE)
    ns = lab.hosts["a"].ns
    before = kernel_state(ns)
    bad_mac = Lease(IPv4Network("10.5.9.0/24"), LeaseAttrs(IPv4Address("192.168.64.9"), "vxlan",
                                                            {"VNI": 1, "VtepMAC": "zz"}))
    host_gw = Lease(IPv4Network("10.5.10.0/24"),
                    LeaseAttrs(IPv4Address("192.168.64.10"), "host-gw"))
    # b's lease is overwritten with garbage: b keeps working from its last good entries.
    b_broken = cluster.leases["b"].with_attrs(LeaseAttrs(IPv4Address("192.168.64.4"), "vxlan",
                                                          {"VNI": 1}))
    peers = [cluster.leases["a"], b_broken, cluster.leases["c"], bad_mac, host_gw]
    for full in (False, True):
        result = cluster.reconcile("a", peers, full=full)
        assert (result.added, result.removed, result.repaired, result.errors) == ({}, {}, {}, [])
        assert sorted(k for k, _ in result.skipped) == ["10.5.10.0-24", "10.5.2.0-24",
                                                        "10.5.9.0-24"]
        assert kernel_state(ns) == before
    lab.ping("a", lab.hosts["b"].pod_ip)


def test_stale_entries_on_our_device_are_removed_others_kept(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({k: v for k, v in THREE.items() if k != "c"})
    ns = lab.hosts["a"].ns
    before = kernel_state(ns)
    # Left over from a peer that vanished while we were down, and a wrong route for our
    # own subnet on flannel.1: ours to remove.
    ip("neigh", "add", "10.5.77.0", "lladdr", "0e:00:00:00:00:77", "dev", "flannel.1",
       "nud", "permanent", netns=ns)
    run(["bridge", "-n", ns, "fdb", "add", "0e:00:00:00:00:77", "dev", "flannel.1", "dst",
         "192.168.64.77", "self", "permanent"])
    ip("route", "add", "10.5.77.0/24", "via", "10.5.77.0", "dev", "flannel.1", "onlink",
       netns=ns)
    ip("route", "add", "10.5.1.0/24", "dev", "flannel.1", "metric", "100", netns=ns)
    # Not ours: outside the Network, or not on our device.
    ip("route", "add", "10.99.0.0/16", "dev", "flannel.1", netns=ns)
    ip("route", "add", "10.5.78.0/24", "dev", "cni0", netns=ns)
    result = cluster.reconcile("a")
    assert result.removed == {"neigh": 1, "fdb": 1, "route": 2} and not result.errors
    assert kernel_state(ns)["neigh"] == before["neigh"]
    assert kernel_state(ns)["fdb"] == before["fdb"]
    left = {(r["dst"], r["dev"]) for r in ipj(ns, "route", "show")}
    assert {("10.99.0.0/16", "flannel.1"), ("10.5.78.0/24", "cni0"), ("10.5.1.0/24", "cni0"),
            ("10.5.2.0/24", "flannel.1")} <= left
    assert ("10.5.77.0/24", "flannel.1") not in left
    assert len([r for r in ipj(ns, "route", "show", "10.5.1.0/24")]) == 1
    lab.ping("a", lab.hosts["b"].pod_ip)


def test_peer_mac_change_removes_the_stale_fdb_entry(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({k: v for k, v in THREE.items() if k != "c"})
    ns = lab.hosts["a"].ns
    old = mac_of(cluster, "b")
    new = "0e:11:22:33:44:55"
    cluster.leases["b"] = cluster.leases["b"].with_attrs(
        LeaseAttrs(IPv4Address("192.168.64.4"), "vxlan", vxlan_backend_data(1, new)))
    result = cluster.reconcile("a", full=False)
    assert not result.errors
    assert [f["mac"] for f in bridge_fdb(ns, "flannel.1")] == [new]
    assert [n["lladdr"] for n in ipj(ns, "neigh", "show", "dev", "flannel.1")] == [new]
    assert old not in run(["bridge", "-n", ns, "fdb", "show"]).stdout


def test_restart_adopts_the_device_without_dropping_a_packet(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({k: v for k, v in THREE.items() if k != "c"})
    a = lab.hosts["a"]
    index = ipj(a.ns, "link", "show", "flannel.1")[0]["ifindex"]
    flood = ping_flood(a.pod_ns, lab.hosts["b"].pod_ip, seconds=1.5)
    assert flood.stdout is not None
    for line in flood.stdout:  # wait until replies flow
        if "bytes from" in line:
            break
    # "Restart": a new backend instance on the same state dir, while traffic runs.
    cluster.backends["a"].close()
    be = create_backend(cluster.config, a.ext, lab.state_dir("a"), netns=a.ns)
    cluster.backends["a"] = be
    attrs = be.lease_attrs()
    result = be.reconcile(cluster.leases["a"], cluster.peers())
    out = flood.stdout.read()
    assert flood.wait(timeout=30) == 0, out
    assert " 0% packet loss" in out, out
    assert attrs.vtep_mac == mac_of(cluster, "a")
    assert (result.added, result.removed, result.repaired) == ({}, {}, {})
    assert result.programmed_peers == 1
    assert ipj(a.ns, "link", "show", "flannel.1")[0]["ifindex"] == index


def test_mac_survives_losing_the_device(make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({"a": THREE["a"]})
    a = lab.hosts["a"]
    mac = mac_of(cluster, "a")
    path = lab.state_dir("a") / "vtep-mac.flannel.1"
    assert path.read_text() == render_mac_file(mac, this_node(str(a.ip)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cluster.backends["a"].close()
    ip("link", "del", "flannel.1", netns=a.ns)  # a reboot, as far as the device goes

    be = create_backend(cluster.config, a.ext, lab.state_dir("a"), netns=a.ns)
    cluster.backends["a"] = be
    assert be.lease_attrs().vtep_mac == mac
    assert ipj(a.ns, "link", "show", "flannel.1")[0]["address"] == mac

    # A device whose MAC differs from the file (file lost or stale): the device wins, and
    # the file follows, because that MAC is the one in our lease.
    be.close()
    ip("link", "set", "flannel.1", "address", "0e:aa:bb:cc:dd:ee", netns=a.ns)
    be = create_backend(cluster.config, a.ext, lab.state_dir("a"), netns=a.ns)
    cluster.backends["a"] = be
    assert be.lease_attrs().vtep_mac == "0e:aa:bb:cc:dd:ee"
    assert path.read_text().splitlines()[0] == "0e:aa:bb:cc:dd:ee"
    # Once published, a changed MAC is put back.
    ip("link", "set", "flannel.1", "address", "0e:00:00:00:00:01", netns=a.ns)
    result = be.reconcile(cluster.leases["a"], [cluster.leases["a"]])
    assert result.repaired == {"device": 1}
    assert ipj(a.ns, "link", "show", "flannel.1")[0]["address"] == "0e:aa:bb:cc:dd:ee"


def test_incompatible_device_is_replaced_and_gbp_learning_are_honoured(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({"a": THREE["a"]})
    a = lab.hosts["a"]
    old_mac = mac_of(cluster, "a")
    cluster.backends["a"].close()
    config = network_config("vxlan", port=4789, gbp=True, learning=True, mtu=1400)
    be = create_backend(config, a.ext, lab.state_dir("a"), netns=a.ns)
    cluster.backends["a"] = be
    assert be.lease_attrs().vtep_mac == old_mac  # the MAC peers know is kept
    result = be.reconcile(cluster.leases["a"], [cluster.leases["a"]])
    assert not result.errors
    (link,) = ipj(a.ns, "-d", "link", "show", "flannel.1")
    info = link["linkinfo"]["info_data"]
    assert (info["port"], info["learning"], info.get("gbp")) == (4789, True, True)
    assert link["mtu"] == 1350 == be.mtu  # config MTU - 50


def test_direct_routing_mixed(make: Callable[..., tuple[Lab, Cluster]]) -> None:
    hosts = {"a": ("192.168.64.3/24", "10.5.1.0/24"), "b": ("192.168.64.4/24", "10.5.2.0/24"),
             "c": ("192.168.65.5/24", "10.5.3.0/24")}  # c is behind the underlay's router
    lab, cluster = make(hosts, direct_routing=True)
    a, b, c = lab.hosts["a"], lab.hosts["b"], lab.hosts["c"]
    (direct,) = ipj(a.ns, "route", "show", str(b.subnet))
    assert direct == {"dst": "10.5.2.0/24", "gateway": "192.168.64.4", "dev": "eth0",
                      "flags": []}
    assert kernel_state(a.ns) == expected_peer_state(cluster, ["c"])  # only c via vxlan
    for src, dst in (("a", b), ("a", c), ("c", b), ("b", a)):
        lab.ping(src, dst.pod_ip)
    # c sees nobody on-link: everything via vxlan.
    assert kernel_state(c.ns) == expected_peer_state(cluster, ["a", "b"])
    # Re-evaluated on every full reconcile: once b is no longer on-link, it goes via vxlan.
    ip("addr", "del", "192.168.64.3/24", "dev", "eth0", netns=a.ns)
    ip("addr", "add", "192.168.64.3/32", "dev", "eth0", netns=a.ns)
    ip("route", "add", "default", "via", "192.168.64.1", "dev", "eth0", "onlink", netns=a.ns)
    result = cluster.reconcile("a")
    assert not result.errors, result.errors
    assert kernel_state(a.ns) == expected_peer_state(cluster, ["b", "c"])


def test_a_mac_file_from_another_node_is_not_reused(
        make: Callable[..., tuple[Lab, Cluster]]) -> None:
    lab, cluster = make({"a": THREE["a"]})
    a = lab.hosts["a"]
    cluster.backends["a"].close()
    ip("link", "del", "flannel.1", netns=a.ns)
    path = lab.state_dir("a") / "vtep-mac.flannel.1"
    path.write_text(render_mac_file("0e:aa:bb:cc:dd:ee", this_node("192.168.64.99")))
    be = create_backend(cluster.config, a.ext, lab.state_dir("a"), netns=a.ns)
    cluster.backends["a"] = be
    mac = be.lease_attrs().vtep_mac
    assert mac and mac != "0e:aa:bb:cc:dd:ee"
    assert path.read_text() == render_mac_file(mac, this_node(str(a.ip)))


def test_cloned_mac_files_converge_to_distinct_macs(sandbox: Sandbox) -> None:
    """Three nodes from one image: the same old-format MAC file on each. The newer leases
    (here, without revisions: the higher PublicIPs) draw new MACs; pods ping everywhere."""
    lab = build(sandbox, THREE)
    cluster: Cluster | None = None
    try:
        for name in THREE:
            (lab.state_dir(name) / "vtep-mac.flannel.1").write_text("0e:c1:0e:c1:0e:c1\n")
        cluster = start_cluster(lab, network_config("vxlan"))
        assert {mac_of(cluster, n) for n in THREE} == {"0e:c1:0e:c1:0e:c1"}
        published: dict[str, list[str]] = {n: [] for n in THREE}
        for name, be in cluster.backends.items():
            def publish(attrs: LeaseAttrs, name: str = name) -> None:
                published[name].append(str(attrs.vtep_mac))
                assert cluster is not None
                cluster.leases[name] = lab.hosts[name].lease(attrs)
            be.on_lease_attrs = publish
        for _ in range(2):  # a round to change, a round for the others to follow
            for name in THREE:
                result = cluster.reconcile(name, full=False)
                assert not result.errors, result.errors
        assert published["a"] == [] and len(published["b"]) == len(published["c"]) == 1
        macs = {n: mac_of(cluster, n) for n in THREE}
        assert macs["a"] == "0e:c1:0e:c1:0e:c1" and len(set(macs.values())) == 3
        for name in THREE:
            host = lab.hosts[name]
            assert ipj(host.ns, "link", "show", "flannel.1")[0]["address"] == macs[name]
            path = lab.state_dir(name) / "vtep-mac.flannel.1"
            assert path.read_text() == render_mac_file(macs[name], this_node(str(host.ip)))
        assert [cluster.backends[n].mac_conflicts for n in THREE] == [0, 1, 1]
        for src in THREE:
            for dst in THREE:
                if src != dst:
                    lab.ping(src, lab.hosts[dst].pod_ip)
    finally:
        if cluster is not None:
            cluster.close()
        lab.close()
