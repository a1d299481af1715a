"""Dual-stack host-gw against real namespaces: flannel's IPv6 route per peer, pods ping over
IPv6, a v4-only peer keeps its IPv4 route, an off-segment peer is reported, drift is
repaired and counted, a removed lease takes its route, foreign routes stay."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any

import pytest
from backend_lab import Lab, batch, build, ipj, network_config
from netns_lab.netns import Sandbox, run, wait_for

from backends import create_backend
from backends.base import Backend
from core.lease import Lease

pytestmark = pytest.mark.netns

HOSTS = {"a": ("192.168.64.3/24", "10.5.1.0/24"), "b": ("192.168.64.4/24", "10.5.2.0/24"),
         "c": ("192.168.65.5/24", "10.5.3.0/24")}  # c is on another segment in both families
V6 = {"a": ("fd72:0:0:64::3/64", "fc00:5:0:1::/64"), "b": ("fd72:0:0:64::4/64", "fc00:5:0:2::/64"),
      "c": ("fd72:0:0:65::5/64", "fc00:5:0:3::/64")}
NET6 = IPv6Network("fc00:5::/48")


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
    lab = build(sandbox, HOSTS, pod_mtu=1500)
    config = dataclasses.replace(network_config("host-gw"), enable_ipv6=True,
                                 ipv6_network=NET6, ipv6_subnet_len=64)
    backends: dict[str, Backend] = {}
    try:
        batch(lab.underlay, ["addr add fd72:0:0:64::1/64 dev br0 nodad",
                             "addr add fd72:0:0:65::1/64 dev br1 nodad"])
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
        yield Stack(lab, backends, leases)
    finally:
        for be in backends.values():
            be.close()
        lab.close()


def routes6(ns: str) -> dict[str, dict[str, Any]]:
    return {r["dst"]: r for r in ipj(ns, "-6", "route", "show")
            if r["dst"].startswith("fc00:5:") and "gateway" in r}


def ping6(lab: Lab, src: str, dst: str) -> bool:
    return run(["ip", "netns", "exec", lab.hosts[src].pod_ns, "ping", "-6", "-c1", "-W1", "-n",
                dst], check=False).returncode == 0


def test_flannels_v6_route_and_pods_ping(stack: Stack) -> None:
    a = stack.lab.hosts["a"]
    assert stack.leases["a"].attrs.public_ipv6 == IPv6Address("fd72:0:0:64::3")
    assert stack.leases["a"].attrs.backend_data is None  # flannel's host-gw lease
    results = {n: stack.reconcile(n) for n in stack.backends}
    assert not any(r.errors for r in results.values()), results
    got = {dst: (r["gateway"], r["dev"], r["flags"], r.get("protocol", "boot"))
           for dst, r in routes6(a.ns).items()}  # `ip -j` leaves out protocol boot
    assert got == {"fc00:5:0:2::/64": ("fd72:0:0:64::4", "eth0", [], "boot")}  # no onlink
    assert results["a"].added.get("route6") == 1
    why = dict(results["a"].unreachable)
    assert any("PublicIPv6 fd72:0:0:65::5" in w for w in why.values()), why
    wait_for(lambda: ping6(stack.lab, "a", pod6("b")), 10, what="a pod -> b pod over IPv6")
    assert ping6(stack.lab, "b", pod6("a"))


def test_a_v4_only_peer_keeps_ipv4_and_gets_no_v6_route(stack: Stack) -> None:
    b = stack.leases["b"]
    v4_only = Lease(b.ipv4_subnet, dataclasses.replace(b.attrs, public_ipv6=None))
    result = stack.reconcile("a", [stack.leases["a"], v4_only])
    assert not result.errors
    a = stack.lab.hosts["a"]
    assert routes6(a.ns) == {}
    assert [r["dst"] for r in ipj(a.ns, "route", "show") if r.get("gateway") == "192.168.64.4"
            ] == ["10.5.2.0/24"]


def test_drift_is_repaired_and_removal_takes_the_route(stack: Stack) -> None:
    a = stack.lab.hosts["a"].ns
    assert not stack.reconcile("a").errors
    batch(a, ["route add fd99::/64 via fd72:0:0:64::4 dev eth0"])  # not ours: outside
    batch(a, ["route del fc00:5:0:2::/64"])
    again = stack.reconcile("a", full=False)  # an event: no dump, nothing to do
    assert "fc00:5:0:2::/64" not in routes6(a) and not again.repaired
    full = stack.reconcile("a")
    assert full.repaired.get("route6") == 1 and "fc00:5:0:2::/64" in routes6(a)
    batch(a, ["route replace fc00:5:0:2::/64 via fd72:0:0:64::9 dev eth0"])
    assert stack.reconcile("a").repaired.get("route6") == 1  # altered by hand: a repair too
    assert routes6(a)["fc00:5:0:2::/64"]["gateway"] == "fd72:0:0:64::4"
    gone = stack.reconcile("a", [stack.leases["a"], stack.leases["c"]], full=False)
    assert gone.removed.get("route6") == 1 and routes6(a) == {}
    assert [r["dst"] for r in ipj(a, "-6", "route", "show") if r["dst"] == "fd99::/64"]
