"""pyroute2 is the oracle of our dump parsers (issue 11): the same kernel state, read twice.

Each example builds generated kernel state in a throwaway namespace with `ip` and
`bridge` (neither our codec nor pyroute2's): a veth underlay with IPv4 and IPv6
addresses, a vxlan device with generated id, port, local, learning and gbp, a bridge
with an enslaved veth, permanent neighbours, FDB entries (some with port/VNI
overrides), onlink IPv4 routes, IPv6 routes, a multipath route. Then it dumps links,
addresses, neighbours, FDB entries and routes with our socket and parsers
(netlink.rtnl, netlink.messages, backends.vxlan.link_state, flanneld.iface.parse_addr6)
and with pyroute2 in the same namespace, and asserts the same rows: addresses, MACs,
flags, state, ifindex, kinds, masters, vxlan attributes. Our reading must also hold
what was generated, so an empty dump cannot pass.

The request side (our encoder read by pyroute2) is tests/unit/test_codec_oracle.py.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

import pyroute2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns_lab.netns import Sandbox, ip, run
from pyroute2.netlink.rtnl.ifinfmsg import states

from backends.vxlan import link_state
from flanneld.iface import parse_addr6
from netlink import messages as m
from netlink.rtnl import RtNetlink

pytestmark = pytest.mark.netns
_n = itertools.count()
EXAMPLES = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- generated state --------------------------------------------------------------------------

unicast_mac = st.binary(min_size=6, max_size=6).filter(any).map(
    lambda b: bytes([b[0] & 0xFE | 0x02]) + b[1:]).map(lambda b: b.hex(":"))
in_ten = st.integers(1, 2**24 - 2).map(lambda i: str(IPv4Address((10 << 24) + i)))
# onlink gateways: never one of our own addresses (the kernel refuses a local gateway)
gateway = st.integers(1, 2**23 - 2).map(lambda i: str(IPv4Address((10 << 24) + (1 << 23) + i)))
vx_address = st.integers(1, 2**23 - 1).map(lambda i: str(IPv4Address((10 << 24) + i)))
FIXED = {("172.16.0.0", 24), ("10.250.0.0", 16), ("10.251.0.0", 16), ("192.168.7.0", 24)}
underlay = st.integers(2, 250).map(lambda i: f"172.16.0.{i}")


@dataclass
class Spec:
    eth_mac: str
    eth_mtu: int
    vni: int
    port: int  # 0: the kernel's default, 8472
    learning: bool
    gbp: bool
    vx_mtu: int
    vx_mac: str
    vx_addr: str
    br_mac: str
    neighs: dict[str, str]  # ip -> mac
    fdb: list[tuple[str, str, tuple[int, int] | None]]  # mac, dst, (port, vni) override
    routes: dict[tuple[str, int], str]  # (dst, len) -> gateway, onlink via the vxlan device
    routes6: dict[tuple[str, int], int]  # (dst, len) -> metric, via fd00::2 dev eth0


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    vx_mac = draw(unicast_mac)
    # an FDB entry for the device's own MAC is the kernel's local entry: appends to it
    # do not add remote destinations, so the generated state would not be what is there
    fdb_keys = draw(st.lists(st.tuples(unicast_mac.filter(lambda m: m != vx_mac), underlay),
                             max_size=12, unique_by=lambda t: t))
    overrides = draw(st.lists(st.one_of(st.none(), st.tuples(st.integers(1, 65535),
                                                              st.integers(1, 2**24 - 1))),
                              min_size=len(fdb_keys), max_size=len(fdb_keys)))
    nets = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 32)),
                         max_size=16))
    routes = {}
    for addr, plen in nets:
        net = IPv4Network((addr, plen), strict=False)
        key = (str(net.network_address), plen)
        if key not in FIXED and not net.overlaps(IPv4Network("224.0.0.0/3")):
            routes[key] = draw(gateway)
    nets6 = draw(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(8, 64)),
                          max_size=8))
    routes6 = {}
    for addr, plen in nets6:
        net = IPv6Network(((0xFD10 << 112) | (addr << 48), plen), strict=False)
        routes6[(str(net.network_address), net.prefixlen)] = draw(st.integers(1, 2**16))
    eth_mtu = draw(st.integers(1330, 9000))
    return Spec(
        eth_mac=draw(unicast_mac), eth_mtu=eth_mtu,
        vni=draw(st.integers(1, 2**24 - 1)),
        port=draw(st.one_of(st.just(0), st.integers(1, 65535))),
        learning=draw(st.booleans()), gbp=draw(st.booleans()),
        vx_mtu=draw(st.integers(1280, eth_mtu - 50)), vx_mac=vx_mac,
        vx_addr=draw(vx_address), br_mac=draw(unicast_mac),
        neighs=draw(st.dictionaries(in_ten, unicast_mac, max_size=16)),
        fdb=[(mac, dst, o) for (mac, dst), o in zip(fdb_keys, overrides, strict=True)],
        routes=routes, routes6=routes6)


# --- the namespace, both readers --------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle_ns(sandbox: Sandbox) -> Iterator[tuple[str, RtNetlink, Any]]:
    """One namespace for the module, emptied by each example: (name, ours, pyroute2's)."""
    ns = sandbox.add_netns(f"dor{os.getpid() % 1000}{next(_n)}", forwarding=False)
    ours = RtNetlink(ns)
    theirs = pyroute2.NetNS(ns)
    try:
        yield ns, ours, theirs
    finally:
        theirs.close()
        ours.close()
        run(["ip", "netns", "del", ns], check=False)


def build(ns: str, s: Spec) -> None:
    """The spec, made with iproute2 (independent of both codecs); the namespace emptied first."""
    for name in ("flannel.x", "vp0", "cni0", "eth0"):
        ip("link", "del", name, netns=ns, check=False)
    vx = ["link add flannel.x type vxlan id", str(s.vni), "local 172.16.0.1 dev eth0",
          "nolearning" if not s.learning else "learning", "gbp" if s.gbp else "",
          f"dstport {s.port}"]  # 0: the kernel's default
    lines = [
        "link add eth0 type veth peer name eth1",
        f"link set eth0 address {s.eth_mac} mtu {s.eth_mtu} up",
        "link set eth1 up",
        "addr add 172.16.0.1/24 dev eth0",
        "addr add fd00::1/64 dev eth0 nodad",
        "addr add fd00::5/64 dev eth0 nodad noprefixroute",
        " ".join(p for p in vx if p),
        f"link set flannel.x address {s.vx_mac} mtu {s.vx_mtu} up",
        f"addr add {s.vx_addr}/32 dev flannel.x",
        f"link add cni0 address {s.br_mac} type bridge",
        "link add vp0 type veth peer name vp1",
        "link set vp0 master cni0 up",
        "link set cni0 up",
        "addr add 192.168.7.1/24 dev cni0",
        "route add 10.250.0.0/16 nexthop via 172.16.0.7 dev eth0 nexthop via 172.16.0.8 dev eth0",
        "route add 10.251.0.0/16 via 172.16.0.9 dev eth0 metric 77",
        *(f"neigh replace {a} lladdr {mac} dev flannel.x nud permanent"
          for a, mac in s.neighs.items()),
        *(f"route replace {d}/{n} via {gw} dev flannel.x onlink"
          for (d, n), gw in s.routes.items()),
        *(f"route replace {d}/{n} via fd00::2 dev eth0 metric {metric}"
          for (d, n), metric in s.routes6.items()),
    ]
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
    fdb = [f"fdb append {mac} dev flannel.x dst {dst} self permanent"
           + (f" port {o[0]} vni {o[1]}" if o else "") for mac, dst, o in s.fdb]
    if fdb:
        run(["bridge", "-n", ns, "-batch", "-"], input="\n".join(fdb) + "\n")


# --- readings, as comparable rows -------------------------------------------------------------


def packed(text: str | None) -> bytes:
    return ip_address(text).packed if text else b""


def our_links(nl: RtNetlink) -> dict[int, m.LinkRow]:
    return {r.ifindex: r for r in nl.dump(m.RTM_GETLINK, m.ifinfo(), m.parse_link,
                                          m.RTM_NEWLINK)}


def their_link(msg: Any) -> tuple[Any, ...]:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return (msg["index"], msg["flags"], msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU"),
            msg.get_attr("IFLA_ADDRESS") or "", kind or "", msg.get_attr("IFLA_MASTER") or 0,
            states.index(msg.get_attr("IFLA_OPERSTATE")), msg.get_attr("IFLA_LINK") or 0)


def their_vxlan(msg: Any) -> tuple[Any, ...]:
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    return (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_LOCAL"),
            data.get_attr("IFLA_VXLAN_LINK"), data.get_attr("IFLA_VXLAN_PORT"),
            bool(data.get_attr("IFLA_VXLAN_LEARNING")),
            "IFLA_VXLAN_GBP" in [a[0] for a in data["attrs"]])


def their_neigh(msg: Any) -> tuple[Any, ...]:
    found = {a[0] for a in msg["attrs"]}
    dst = msg.get_attr("NDA_DST")
    return (msg["family"], msg["ifindex"], msg["state"], msg["flags"],
            dst if dst is not None and ":" not in dst else None, msg.get_attr("NDA_LLADDR"),
            msg["family"] == socket.AF_BRIDGE and bool(found & {"NDA_PORT", "NDA_VNI",
                                                                "NDA_IFINDEX"}))


def our_neigh(r: m.NeighRow) -> tuple[Any, ...]:
    # `extra` is only meaningful (and only computed on every path) for FDB entries
    return (r.family, r.ifindex, r.state, r.flags, r.dst, r.mac,
            r.extra and r.family == socket.AF_BRIDGE)


def their_route(msg: Any) -> tuple[Any, ...]:
    return (msg.get_attr("RTA_DST") or "0.0.0.0", msg["dst_len"], msg.get_attr("RTA_TABLE"),
            msg["proto"], msg["scope"], msg["type"], msg["flags"], msg.get_attr("RTA_OIF") or 0,
            msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_PRIORITY") or 0,
            msg.get_attr("RTA_MULTIPATH") is not None)


# --- the test ---------------------------------------------------------------------------------


@EXAMPLES
@given(specs())
def test_dumps_read_alike(oracle_ns: tuple[str, RtNetlink, Any], spec: Spec) -> None:
    ns, nl, ipr = oracle_ns
    build(ns, spec)

    # links: every field of every link, and the vxlan device's attributes
    ours = our_links(nl)
    theirs = {msg["index"]: msg for msg in ipr.get_links()}
    assert set(ours) == set(theirs)
    for index, row in ours.items():
        assert (row.ifindex, row.flags, row.name, row.mtu, row.mac, row.kind, row.master,
                row.operstate, row.peer_index) == their_link(theirs[index])
    by_name = {r.name: r for r in ours.values()}
    vx, eth0, br, vp0 = by_name["flannel.x"], by_name["eth0"], by_name["cni0"], by_name["vp0"]
    state = link_state(vx)
    assert (state.vni, state.local, state.link, state.port, state.learning, state.gbp) == (
        their_vxlan(theirs[vx.ifindex]))
    assert (state.vni, state.local, state.link, state.port, state.learning, state.gbp) == (
        spec.vni, "172.16.0.1", eth0.ifindex, spec.port or 8472, spec.learning, spec.gbp)
    assert (vx.kind, vx.mac, vx.mtu, state.up) == ("vxlan", spec.vx_mac, spec.vx_mtu, True)
    assert (eth0.kind, eth0.mac, eth0.mtu, eth0.peer_index) == (
        "veth", spec.eth_mac, spec.eth_mtu, by_name["eth1"].ifindex)
    assert (br.kind, br.mac, vp0.kind, vp0.master) == ("bridge", spec.br_mac, "veth",
                                                       br.ifindex)

    # addresses, both families; the IPv6 flags as flanneld's interface choice reads them
    got = Counter(nl.dump(m.RTM_GETADDR, m.addr_dump_body(0, m.AF_UNSPEC), m.parse_addr_entry,
                          m.RTM_NEWADDR))
    want = Counter(m.AddrEntry(a["index"], a["family"],
                               packed(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")),
                               a["prefixlen"]) for a in ipr.get_addr())
    assert got == want
    assert m.AddrEntry(vx.ifindex, socket.AF_INET, packed(spec.vx_addr), 32) in got
    v4 = nl.dump(m.RTM_GETADDR, m.addr_dump_body(0), m.parse_addr, m.RTM_NEWADDR)
    assert sorted(v4) == sorted((a["index"], f"{a.get_attr('IFA_LOCAL')}/{a['prefixlen']}")
                                for a in ipr.get_addr(family=socket.AF_INET))
    v6 = [r for r in nl.dump(m.RTM_GETADDR, m.addr_dump_body(0, m.AF_INET6), parse_addr6,
                             m.RTM_NEWADDR) if r is not None]
    assert sorted((i, a.address, a.flags) for i, a in v6) == sorted(
        (a["index"], IPv6Address(a.get_attr("IFA_ADDRESS")),
         a.get_attr("IFA_FLAGS") if a.get_attr("IFA_FLAGS") is not None else a["flags"])
        for a in ipr.get_addr(family=socket.AF_INET6))
    assert (eth0.ifindex, IPv6Address("fd00::5")) in [(i, a.address) for i, a in v6]

    # neighbours: the device's (the backend's filtered dump) and everyone's
    for dev in (vx.ifindex, 0):
        got_n = Counter(our_neigh(r) for r in nl.dump(
            m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET, dev), m.parse_neigh, m.RTM_NEWNEIGH))
        want_n = Counter(their_neigh(n) for n in ipr.get_neighbours(family=socket.AF_INET)
                         if n["ifindex"] == dev or not dev)
        assert got_n == want_n
    mine = {(r[4], r[5]) for r in got_n if r[1] == vx.ifindex and r[2] & m.NUD_PERMANENT}
    assert mine >= set(spec.neighs.items())

    # FDB: the vxlan device's entries (with and without overrides) and every bridge port's
    for dev in (vx.ifindex, 0):
        got_f = Counter(our_neigh(r) for r in nl.dump(
            m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
            m.RTM_NEWNEIGH))
        want_f = Counter(their_neigh(n) for n in ipr.get_neighbours(family=socket.AF_BRIDGE)
                         if n["ifindex"] == dev or not dev)
        assert got_f == want_f
    entries = {(r[5], r[4], r[6]) for r in got_f if r[1] == vx.ifindex
               and r[3] & m.NTF_SELF and r[2] & m.NUD_PERMANENT}
    # the kernel reports a port or VNI only where it differs from the device's own
    # (dstport 0 is the kernel's default, 8472)
    own = (spec.port or 8472, spec.vni)
    assert entries >= {(mac, dst, o is not None and o != own) for mac, dst, o in spec.fdb}
    assert any(r[1] == vp0.ifindex for r in got_f)  # a bridge port's own entries

    # IPv4 routes of the main table (the backends' parser) and every family (the CNI's)
    got_r = Counter((r.dst_text, r.dst_len, r.table, r.proto, r.scope, r.rtype, r.flags, r.oif,
                     r.gateway, r.priority, r.multipath)
                    for r in nl.dump(m.RTM_GETROUTE, m.route_dump_body(), m.parse_route,
                                     m.RTM_NEWROUTE))
    want_r = Counter(their_route(r) for r in ipr.get_routes(family=socket.AF_INET,
                                                             table=m.RT_TABLE_MAIN))
    assert got_r == want_r
    for (dst, plen), gw in spec.routes.items():
        assert (dst, plen, m.RT_TABLE_MAIN, m.RTPROT_BOOT, m.RT_SCOPE_UNIVERSE, m.RTN_UNICAST,
                m.RTNH_F_ONLINK, vx.ifindex, gw, 0, False) in got_r
    assert any(r[0] == "10.250.0.0" and r[10] for r in got_r)  # multipath seen as such
    assert ("10.251.0.0", 16) in {(r[0], r[1]) for r in got_r if r[9] == 77}
    for family in (socket.AF_INET, socket.AF_INET6):
        got_e = Counter(nl.dump(m.RTM_GETROUTE, m.route_dump_body(m.RT_TABLE_MAIN, family),
                                m.parse_route_entry, m.RTM_NEWROUTE))
        want_e = Counter(m.RouteEntry(family, packed(r.get_attr("RTA_DST")), r["dst_len"],
                                      packed(r.get_attr("RTA_GATEWAY")),
                                      r.get_attr("RTA_OIF") or 0, r.get_attr("RTA_TABLE"),
                                      r["type"])
                         for r in ipr.get_routes(family=family, table=m.RT_TABLE_MAIN))
        assert got_e == want_e
        if family == socket.AF_INET6:
            for dst, plen in spec.routes6:
                assert m.RouteEntry(family, packed(dst), plen, packed("fd00::2"), eth0.ifindex,
                                    m.RT_TABLE_MAIN, m.RTN_UNICAST) in got_e
