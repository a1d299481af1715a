"""Dual stack and IPv6-only through the installed plugin (issue 12), as a runtime calls it.

kube-flannel's conflist, unchanged: on a node whose subnet.env has both families
every pod gets an IPv4 and an IPv6 address (one range set each, IPv4 first), the
routes of both networks and a default route per family; the host netns forwards
IPv6, the pod interface has DAD off, the bridge holds both gateways, and the
host-local store keeps both addresses under one container. On an IPv6-only node
pods get IPv6 only. CHECK, DEL, GC and STATUS cover both families.
"""

from __future__ import annotations

from typing import Any

import pytest
from cnihelp import Node
from netns_lab.netns import run, wait_for

pytestmark = pytest.mark.netns

V4_GW, V6_GW = "10.5.52.1", "fd00:10:5:52::1"


def pod_addrs(node: Node, netns: str) -> dict[str, list[dict[str, Any]]]:
    info = node.ipj("addr", "show", "dev", "eth0", netns=netns)[0]["addr_info"]
    out: dict[str, list[dict[str, Any]]] = {"inet": [], "inet6": []}
    for a in info:
        if a.get("scope") == "global":
            out[a["family"]].append(a)
    return out


def sysctl(node: Node, key: str, netns: str | None = None) -> str:
    ns = netns.rsplit("/", 1)[-1] if netns else node.host
    return run(["ip", "netns", "exec", ns, "sysctl", "-n", key]).stdout.strip()


def test_dual_stack_pods(any_node: Node) -> None:
    node = any_node
    node.dual_stack()
    run(["ip", "netns", "exec", node.host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"])
    conf = node.conf("1.0.0")
    a_ns, b_ns = node.pod(), node.pod()
    a = node.add(conf, "pa", a_ns).ok().json
    b = node.add(conf, "pb", b_ns).ok().json
    # the result: v4 first, then v6; both gateways; routes of both networks + both defaults
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in a["ips"]] == [
        ("10.5.52.2/24", V4_GW, 2), ("fd00:10:5:52::2/64", V6_GW, 2)]
    assert [ip["address"] for ip in b["ips"]] == ["10.5.52.3/24", "fd00:10:5:52::3/64"]
    assert a["routes"] == [{"dst": "10.5.0.0/16"}, {"dst": "fd00:10:5::/48"},
                           {"dst": "0.0.0.0/0", "gw": V4_GW}, {"dst": "::/0", "gw": V6_GW}]
    # the pod: both addresses, none tentative (DAD off before addressing), routes via gw
    addrs = pod_addrs(node, a_ns)
    assert [x["local"] for x in addrs["inet"]] == ["10.5.52.2"]
    assert [(x["local"], x["prefixlen"]) for x in addrs["inet6"]] == [("fd00:10:5:52::2", 64)]
    assert not any(x.get("tentative") or x.get("dadfailed") for x in addrs["inet6"])
    assert sysctl(node, "net.ipv6.conf.eth0.accept_dad", a_ns) == "0"
    v6_routes = {(r["dst"], r.get("gateway")) for r in node.ipj("-6", "route", "show",
                                                               netns=a_ns)}
    assert {("default", V6_GW), ("fd00:10:5::/48", V6_GW), ("fd00:10:5:52::/64", None)} \
        <= v6_routes
    # the host: IPv6 forwarding on, the bridge holds both gateway addresses
    assert sysctl(node, "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(node, "net.ipv4.ip_forward") == "1"
    br = {(x["local"], x["prefixlen"]) for x in node.ipj("addr", "show", "dev", "cni0")[0][
        "addr_info"]}
    assert {(V4_GW, 24), (V6_GW, 64)} <= br
    # the store: host-local's files, both addresses under one container, a cursor per set
    assert node.reservations() == {"10.5.52.2": "pa\r\neth0", "fd00:10:5:52::2": "pa\r\neth0",
                                   "10.5.52.3": "pb\r\neth0", "fd00:10:5:52::3": "pb\r\neth0"}
    store = node.ipam_dir / "cbr0"
    assert (store / "last_reserved_ip.0").read_text() == "10.5.52.3"
    assert (store / "last_reserved_ip.1").read_text() == "fd00:10:5:52::3"
    # the data path: gateway and the other pod, over both families
    for target in (V4_GW, V6_GW, "10.5.52.3", "fd00:10:5:52::3"):
        node.ping(a_ns, target)
    node.ping(b_ns, "fd00:10:5:52::2")
    # CHECK covers the v6 address: fine as is, fails once it is gone
    node.check(conf, "pa", a_ns, a).ok()
    node.ip("addr", "del", "fd00:10:5:52::2/64", "dev", "eth0", netns=a_ns)
    err = node.check(conf, "pa", a_ns, a).failed()
    assert "fd00:10:5:52::2/64" in err["msg"]
    node.check(conf, "pb", b_ns, b).ok()
    # DEL releases both addresses of one pod, the other pod keeps both of its own
    node.delete(conf, "pa", a_ns, prev=a).ok()
    assert node.reservations() == {"10.5.52.3": "pb\r\neth0", "fd00:10:5:52::3": "pb\r\neth0"}
    # ... and the next ADD continues host-local's round robin in each family
    c_ns = node.pod()
    c = node.add(conf, "pc", c_ns).ok().json
    assert [ip["address"] for ip in c["ips"]] == ["10.5.52.4/24", "fd00:10:5:52::4/64"]
    # GC keeping only pb: pc's two addresses and its veth go, pb is untouched
    gc = node.call(node.env("GC"), dict(node.conf("1.1.0"), **{
        "cni.dev/valid-attachments": [{"containerID": "pb", "ifname": "eth0"}]}))
    gc.ok()
    assert node.reservations() == {"10.5.52.3": "pb\r\neth0", "fd00:10:5:52::3": "pb\r\neth0"}
    wait_for(lambda: c["interfaces"][1]["name"] not in node.host_veths(), 10,
             what="GC'd pod's veth gone")
    node.check(conf, "pb", b_ns, b).ok()
    node.delete(conf, "pb", b_ns, prev=b).ok()
    assert node.reservations() == {}


def test_dual_stack_ip_masq_in_both_tables(any_node: Node) -> None:
    """ipMasq (FLANNEL_IPMASQ=false): the attachment's chain in `ip` and in `ip6`; CHECK
    notices the IPv6 one missing; DEL removes both."""
    node = any_node
    node.dual_stack(ipmasq=False)
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "m1", netns).ok().json
    ruleset = node.nft()
    assert "table ip pyflannel-cni" in ruleset and "table ip6 pyflannel-cni" in ruleset
    assert "10.5.52.2 : jump" in ruleset and "fd00:10:5:52::2 : jump" in ruleset
    assert "ip6 daddr fd00:10:5:52::/64 accept" in ruleset
    assert "ip6 daddr != ff00::/8 masquerade" in ruleset
    node.check(conf, "m1", netns, res).ok()
    run(["ip", "netns", "exec", node.host, "nft", "delete", "element", "ip6", "pyflannel-cni",
         "masq", "{", "fd00:10:5:52::2", "}"])
    assert "ipMasq chain" in node.check(conf, "m1", netns, res).failed()["msg"]
    node.delete(conf, "m1", netns, prev=res).ok()
    ruleset = node.nft()
    assert "jump" not in ruleset and "masquerade" not in ruleset
    assert node.reservations() == {}


def test_ipv6_only_node(any_node: Node) -> None:
    """subnet.env with only the IPv6 lines: pods get IPv6 only (one range set, index 0)."""
    node = any_node
    node.ipv6_only(ipmasq=False)
    conf = node.conf("1.1.0")
    a_ns, b_ns = node.pod(), node.pod()
    a = node.add(conf, "v1", a_ns).ok().json
    b = node.add(conf, "v2", b_ns).ok().json
    assert [(ip["address"], ip["gateway"]) for ip in a["ips"]] == [
        ("fd00:10:5:52::2/64", V6_GW)]
    assert a["routes"] == [{"dst": "fd00:10:5::/48"}, {"dst": "::/0", "gw": V6_GW}]
    addrs = pod_addrs(node, a_ns)
    assert addrs["inet"] == [] and [x["local"] for x in addrs["inet6"]] == ["fd00:10:5:52::2"]
    assert node.ipj("-4", "route", "show", netns=a_ns) == []
    assert sysctl(node, "net.ipv6.conf.all.forwarding") == "1"
    assert node.reservations() == {"fd00:10:5:52::2": "v1\r\neth0",
                                   "fd00:10:5:52::3": "v2\r\neth0"}
    assert (node.ipam_dir / "cbr0" / "last_reserved_ip.0").read_text() == "fd00:10:5:52::3"
    # no IPv4 on the bridge; masquerade only in ip6
    br = node.ipj("addr", "show", "dev", "cni0")[0]["addr_info"]
    assert not any(x["family"] == "inet" for x in br)
    ruleset = node.nft()
    assert "table ip6 pyflannel-cni" in ruleset and "fd00:10:5:52::2 : jump" in ruleset
    assert "table ip pyflannel-cni" not in ruleset
    node.ping(a_ns, V6_GW)
    node.ping(a_ns, "fd00:10:5:52::3")
    node.ping(b_ns, "fd00:10:5:52::2")
    node.check(conf, "v1", a_ns, a).ok()
    node.check(conf, "v2", b_ns, b).ok()
    assert node.call(node.env("STATUS"), conf).ok().out == b""
    node.delete(conf, "v1", a_ns, prev=a).ok()
    gc = node.call(node.env("GC"), dict(conf, **{"cni.dev/valid-attachments": []}))
    gc.ok()  # removes v2 (not listed): its address, chain and veth
    assert node.reservations() == {}
    wait_for(lambda: node.host_veths() == [], 10, what="GC'd veth gone")
    assert "jump" not in node.nft()


def test_ipv6_only_status_and_exhaustion(any_node: Node) -> None:
    """STATUS judges the IPv6 range set: a /126 holds two pods (gateway ::1, then ::2, ::3)."""
    node = any_node
    node.ipv6_only(ipv6_network="fd00:10:5::/120", ipv6_subnet="fd00:10:5::1/126")
    conf = node.conf("1.1.0")
    status = node.env("STATUS")
    node.call(status, conf).ok()
    pods = [node.pod() for _ in range(3)]
    first = node.add(conf, "x1", pods[0]).ok().json
    node.add(conf, "x2", pods[1]).ok()
    assert first["ips"][0]["address"] == "fd00:10:5::2/126"
    assert node.add(conf, "x3", pods[2]).failed(11)["msg"]
    assert "exhausted" in node.call(status, conf).failed(50)["msg"]
    node.delete(conf, "x1", pods[0]).ok()
    node.call(status, conf).ok()
    assert node.reservations() == {"fd00:10:5::3": "x2\r\neth0"}
