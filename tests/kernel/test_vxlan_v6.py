"""Dual-stack vxlan against real namespaces: flannel's flannel-v6.<VNI> device, its lease
data, the per-peer IPv6 neighbour/FDB/onlink route, the 70-byte MTU proven with a full-size
DF ping over IPv6, drift and device loss repaired with the same MAC, v4-only peers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

import pytest
from backend_lab import Lab, batch, bridge_fdb, build, ipj, network_config
from netns_lab.netns import Sandbox, run, wait_for

from backends import create_backend
from backends.base import Backend, IncrementalBackend
from core.lease import Lease, encode_attrs

pytestmark = pytest.mark.netns

HOSTS = {"a": ("192.168.64.3/24", "10.5.1.0/24"), "b": ("192.168.64.4/24", "10.5.2.0/24")}
V6 = {"a": ("fd72:0:0:64::3/64", "fc00:5:0:1::/64"), "b": ("fd72:0:0:64::4/64", "fc00:5:0:2::/64")}
NET6 = IPv6Network("fc00:5::/48")
DEV = "flannel-v6.1"
POD_MTU = 1500 - 70


@dataclasses.dataclass
class Stack:
    lab: Lab
    backends: dict[str, Backend]
    leases: dict[str, Lease]

    def reconcile(self, name: str, peers: list[Lease] | None = None, full: bool = True) -> Any:
        peers = list(self.leases.values()) if peers is None else peers
        return self.backends[name].reconcile(self.leases[name], peers, full=full)


def pod6(name: str) -> str:
    return str(IPv6Network(V6[name][1]).network_address + 2)


@pytest.fixture
def stack(sandbox: Sandbox) -> Iterator[Stack]:
    lab = build(sandbox, HOSTS, pod_mtu=POD_MTU)
    config = dataclasses.replace(network_config("vxlan", vni=1), enable_ipv6=True,
                                 ipv6_network=NET6, ipv6_subnet_len=64)
    backends: dict[str, Backend] = {}
    try:
        batch(lab.underlay, ["addr add fd72:0:0:64::1/64 dev br0 nodad"])
        for name, host in lab.hosts.items():
            addr, sub = IPv6Interface(V6[name][0]), IPv6Network(V6[name][1])
            batch(host.ns, [f"addr add {addr} dev eth0 nodad",
                            f"addr add {sub.network_address + 1}/64 dev cni0 nodad"])
            batch(host.pod_ns, [f"addr add {pod6(name)}/64 dev eth0 nodad",
                                f"route add ::/0 via {sub.network_address + 1}"])
            run(["ip", "netns", "exec", host.ns, "sysctl", "-qw",
                 "net.ipv6.conf.all.forwarding=1"])
            host.ext = dataclasses.replace(host.ext, public_ipv6=addr.ip)
        leases = {}
        for name, host in lab.hosts.items():
            be = create_backend(config, host.ext, lab.state_dir(name), netns=host.ns)
            backends[name] = be
            leases[name] = Lease(host.subnet, be.lease_attrs(),
                                 ipv6_subnet=IPv6Network(V6[name][1]))
        for name in backends:
            r = Stack(lab, backends, leases).reconcile(name)
            assert not r.errors, r.errors
        yield Stack(lab, backends, leases)
    finally:
        for be in backends.values():
            be.close()
        lab.close()


def device(ns: str) -> dict[str, Any]:
    (link,) = ipj(ns, "-d", "link", "show", DEV)
    return link


def ping6(lab: Lab, src: str, dst: str, *extra: str) -> bool:
    return run(["ip", "netns", "exec", lab.hosts[src].pod_ns, "ping", "-6", "-c1", "-W1", "-n",
                *extra, dst], check=False).returncode == 0


def test_device_and_lease_are_flannels(stack: Stack) -> None:
    a = stack.lab.hosts["a"]
    dev = device(a.ns)
    info = dev["linkinfo"]["info_data"]
    assert (info["id"], info.get("local6", info.get("local")), info["port"],
            info.get("learning", False)) == (
        1, "fd72:0:0:64::3", 8472, False)
    assert dev["mtu"] == POD_MTU and stack.backends["a"].mtu == POD_MTU  # FLANNEL_MTU too
    addrs = [(x["local"], x["prefixlen"]) for x in ipj(a.ns, "-6", "addr", "show", DEV)[0][
        "addr_info"] if x.get("scope") == "global"]
    assert addrs == [("fc00:5:0:1::", 128)]
    accept_ra = run(["ip", "netns", "exec", a.ns, "cat",
                     f"/proc/sys/net/ipv6/conf/{DEV}/accept_ra"]).stdout.strip()
    assert accept_ra == "0"
    attrs = stack.leases["a"].attrs
    assert json.loads(encode_attrs(attrs)) == {
        "PublicIP": "192.168.64.3", "PublicIPv6": "fd72:0:0:64::3", "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": attrs.vtep_mac},
        "BackendV6Data": {"VNI": 1, "VtepMAC": dev["address"]}}
    assert dev["address"] != attrs.vtep_mac  # a MAC of its own


def test_peer_entries_and_a_full_size_df_ping(stack: Stack) -> None:
    a, b = stack.lab.hosts["a"], stack.lab.hosts["b"]
    mac_b = device(b.ns)["address"]
    neigh = [(n["dst"], n["lladdr"]) for n in ipj(a.ns, "-6", "neigh", "show", "dev", DEV)
             if "PERMANENT" in n.get("state", [])]
    assert neigh == [("fc00:5:0:2::", mac_b)]
    fdb = [(e["mac"], e.get("dst")) for e in bridge_fdb(a.ns, DEV) if "self" in e.get("flags", [])
           and e.get("state") == "permanent"]
    assert (mac_b, "fd72:0:0:64::4") in fdb
    routes = [(r["dst"], r["gateway"], r["flags"]) for r in ipj(a.ns, "-6", "route", "show",
                                                                "dev", DEV) if "gateway" in r]
    assert routes == [("fc00:5:0:2::/64", "fc00:5:0:2::", ["onlink"])]
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="a pod -> b pod over IPv6")
    # the pod MTU is external - 70: the largest IPv6 packet with DF still crosses
    assert ping6(stack.lab, "a", pod6("b"), "-M", "do", "-s", str(POD_MTU - 48))
    assert ping6(stack.lab, "b", pod6("a"), "-M", "do", "-s", str(POD_MTU - 48))


def test_told_only_the_changes_both_families_follow(stack: Stack) -> None:
    """reconcile_changes reaches the IPv6 plane too: b's lease gone takes its IPv4 and
    IPv6 entries, back again puts them back; a full run then has nothing to do."""
    assert not stack.reconcile("a").errors
    be, own, b = stack.backends["a"], stack.leases["a"], stack.leases["b"]
    assert isinstance(be, IncrementalBackend)
    gone = be.reconcile_changes(own, {b.key: None})
    assert gone.removed == {"neigh": 1, "fdb": 1, "route": 1, "neigh6": 1, "fdb6": 1,
                            "route6": 1}, gone.summary()
    assert gone.programmed_peers == 0
    back = be.reconcile_changes(own, {b.key: b})
    assert back.added == gone.removed and back.programmed_peers == 1 and not back.errors
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="a pod -> b pod over IPv6")
    full = stack.reconcile("a")
    assert not full.changed, full.summary()


def test_drift_and_a_lost_device_are_repaired(stack: Stack) -> None:
    a = stack.lab.hosts["a"].ns
    mac = device(a)["address"]
    batch(a, [f"neigh del fc00:5:0:2:: dev {DEV}", "route del fc00:5:0:2::/64"])
    result = stack.reconcile("a")
    assert result.repaired.get("neigh6") == 1 and result.repaired.get("route6") == 1
    batch(a, [f"link del {DEV}"])
    result = stack.reconcile("a")
    assert not result.errors and result.repaired.get("device") == 1
    assert device(a)["address"] == mac  # the MAC the peers know
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="IPv6 back after the loss")


def test_a_v4_only_peer_gets_no_v6_entries(stack: Stack) -> None:
    b = stack.leases["b"]
    v4_only = Lease(b.ipv4_subnet, dataclasses.replace(b.attrs, public_ipv6=None,
                                                       backend_v6_data=None))
    result = stack.reconcile("a", [stack.leases["a"], v4_only])
    assert not result.errors and result.removed.get("route6") == 1
    a = stack.lab.hosts["a"].ns
    assert not [r for r in ipj(a, "-6", "route", "show", "dev", DEV) if "gateway" in r]
    assert [r["dst"] for r in ipj(a, "route", "show", "dev", "flannel.1")] == ["10.5.2.0/24"]


def test_an_ipv6_only_peer_gets_v6_entries_only(stack: Stack) -> None:
    # a node still IPv6-only while the cluster moves to dual stack: no IPv4 part to program
    b = stack.leases["b"]
    v6_only = Lease(None, dataclasses.replace(b.attrs, public_ip=IPv4Address("0.0.0.0"),
                                              backend_data=None),
                    ipv6_subnet=b.ipv6_subnet)
    result = stack.reconcile("a", [stack.leases["a"], v6_only])
    assert not result.errors and result.removed.get("route") == 1
    a = stack.lab.hosts["a"].ns
    assert not ipj(a, "route", "show", "dev", "flannel.1", "10.5.2.0/24")
    assert [r["dst"] for r in ipj(a, "-6", "route", "show", "dev", DEV)
            if "gateway" in r] == ["fc00:5:0:2::/64"]
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="a pod -> b pod over IPv6")


def test_direct_routing_for_an_on_link_v6_peer(stack: Stack) -> None:
    a = stack.lab.hosts["a"]
    stack.backends["a"].close()
    config = dataclasses.replace(network_config("vxlan", vni=1, direct_routing=True),
                                 enable_ipv6=True, ipv6_network=NET6, ipv6_subnet_len=64)
    stack.backends["a"] = be = create_backend(config, a.ext, stack.lab.state_dir("a"),
                                              netns=a.ns)
    be.lease_attrs()  # adopts both devices
    result = stack.reconcile("a")
    assert not result.errors, result.errors
    assert result.removed.get("neigh6") == 1 and result.removed.get("fdb6") == 1
    (route,) = ipj(a.ns, "-6", "route", "show", "fc00:5:0:2::/64")
    assert (route["gateway"], route["dev"]) == ("fd72:0:0:64::4", "eth0")  # flannel's
    assert not [n for n in ipj(a.ns, "-6", "neigh", "show", "dev", DEV)
                if "PERMANENT" in n.get("state", [])]
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="a pod -> b pod, direct")
    # a resync finds it all in place: nothing to repair
    again = stack.reconcile("a")
    assert not again.changed, again.summary()


def test_a_live_clash_of_the_v6_vtep_mac_is_resolved(stack: Stack) -> None:
    # an older lease publishes our IPv6 VtepMAC (a node cloned by hand, say): we yield
    a_ns = stack.lab.hosts["a"].ns
    be = stack.backends["a"]
    published: list[Any] = []
    be.on_lease_attrs = published.append
    mine = device(a_ns)["address"]
    own = dataclasses.replace(stack.leases["a"], mod_revision=50)
    clone = Lease(IPv4Network("10.5.9.0/24"), dataclasses.replace(
        stack.leases["b"].attrs, public_ip=IPv4Address("192.168.64.9"),
        public_ipv6=IPv6Address("fd72:0:0:64::9"),
        backend_v6_data={"VNI": 1, "VtepMAC": mine}),
        ipv6_subnet=IPv6Network("fc00:5:0:9::/64"), mod_revision=10)
    result = be.reconcile(own, [own, stack.leases["b"], clone])
    assert not result.errors, result.errors
    new = device(a_ns)["address"]
    assert new != mine and len(published) == 1
    assert published[0].backend_v6_data == {"VNI": 1, "VtepMAC": new}
    assert published[0].backend_data == stack.leases["a"].attrs.backend_data  # v4 untouched
    fdb = {(e["mac"], e.get("dst")) for e in bridge_fdb(a_ns, DEV)}
    assert (mine, "fd72:0:0:64::9") in fdb  # the older holder keeps the MAC
    # b learns our new MAC from the re-published lease, and pods still ping
    stack.leases["a"] = dataclasses.replace(stack.leases["a"], attrs=published[0])
    assert not stack.reconcile("b").errors
    assert not be.reconcile(own, [own, stack.leases["b"], clone]).changed  # settled
    wait_for(lambda: ping6(stack.lab, "b", pod6("a")), 10, what="b pod -> a pod after the clash")
