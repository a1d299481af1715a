"""host-gw's IPv6 routes, pure: which peers get one, which are skipped or unreachable, which
kernel routes are ours, and the request bytes (read back by pyroute2, the codec's oracle)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pyroute2.netlink.rtnl.rtmsg import rtmsg

from backends.plane6 import Connected6, desired6, onlink6, route6_body
from backends.routes6 import in_network6
from backends.state import RouteSpec
from core.lease import Lease, LeaseAttrs
from netlink import messages as m

NET6 = IPv6Network("fc00:5::/48")
EXT = 2
LINK = (Connected6(IPv6Network("fd72:0:0:64::/64"), EXT),
        Connected6(IPv6Network("fd72:0:0:99::/64"), 9))


def lease(n: int, ip6: str | None = "fd72:0:0:64::{n}", sub6: str | None = "fc00:5:0:{n}::/64",
          backend: str = "host-gw") -> Lease:
    return Lease(IPv4Network(f"10.5.{n}.0/24"),
                 LeaseAttrs(IPv4Address(f"192.168.64.{n}"), backend,
                            public_ipv6=IPv6Address(ip6.format(n=n)) if ip6 else None),
                 ipv6_subnet=IPv6Network(sub6.format(n=n)) if sub6 else None)


OWN = lease(1)


def test_a_dual_stack_peer_gets_flannels_route() -> None:
    d = desired6(OWN, [OWN, lease(2), lease(3)], NET6, EXT, "eth0", LINK)
    assert d.tables.routes == {"fc00:5:0:2::/64": (RouteSpec("fd72:0:0:64::2", EXT),),
                        "fc00:5:0:3::/64": (RouteSpec("fd72:0:0:64::3", EXT),)}
    assert d.skipped == {} and d.unreachable == {}


def test_a_v4_only_peer_is_said_once_and_left_to_ipv4() -> None:
    d = desired6(OWN, [lease(2, ip6=None, sub6=None), lease(3, ip6=None)], NET6, EXT, "eth0", LINK)
    assert d.tables.routes == {}
    assert set(d.skipped) == {lease(2).key.split("&")[0], lease(3).key}
    assert d.skipped[lease(2).key.split("&")[0]].startswith("has no IPv6 subnet")
    assert d.skipped[lease(3).key].startswith("has no PublicIPv6")
    assert all("IPv4 only" in why for why in d.skipped.values())


def test_off_segment_outside_and_own_address() -> None:
    far = lease(4, ip6="fd72:0:0:99::{n}")  # connected, but on another interface
    nowhere = lease(5, ip6="fd73::{n}")
    outside = lease(6, sub6="fc00:6:0:{n}::/64")
    mine = lease(7, ip6="fd72:0:0:64::1")
    d = desired6(OWN, [far, nowhere, outside, mine], NET6, EXT, "eth0", LINK)
    assert d.tables.routes == {}
    assert set(d.unreachable) == {far.key, nowhere.key}
    assert "one L2 segment" in d.unreachable[far.key]
    assert "outside the IPv6Network" in d.skipped[outside.key]
    assert "our own" in d.skipped[mine.key]


def test_a_vxlan_peer_is_the_ipv4_sides_to_report() -> None:
    d = desired6(OWN, [lease(2, backend="vxlan")], NET6, EXT, "eth0", LINK)
    assert d.tables.routes == {} and d.skipped == {} and d.unreachable == {}


def test_onlink_is_the_longest_prefix() -> None:
    wide = (Connected6(IPv6Network("fd72::/16"), 5), *LINK)
    assert onlink6(wide, IPv6Address("fd72:0:0:64::9")) == EXT
    assert onlink6(wide, IPv6Address("fd72:1::9")) == 5
    assert onlink6(wide, IPv6Address("2001:db8::1")) is None


def test_inside_the_network_on_ints_agrees_with_ipaddress() -> None:
    for net in ("fc00:5:0:9::/64", "fc00:5::/48", "fc00:5::/47", "fc00:4::/64", "fd99::/64",
                "::/0", "fc00:5:0:9::1/128"):
        dst = IPv6Network(net)
        assert in_network6(NET6, dst.network_address.packed, dst.prefixlen) == \
            dst.subnet_of(NET6), net


def test_request_bytes_read_by_pyroute2() -> None:
    for delete in (False, True):
        body = route6_body("fc00:5:0:2::/64", RouteSpec("fd72:0:0:64::2", EXT, proto=3), delete)
        kind = m.RTM_DELROUTE if delete else m.RTM_NEWROUTE
        msg = rtmsg(m.nlmsg(kind, m.NLM_F_REQUEST, 1, body))
        msg.decode()
        assert (msg["family"], msg["dst_len"], msg["table"], msg["type"]) == (
            m.AF_INET6, 64, m.RT_TABLE_MAIN, m.RTN_UNICAST)
        assert msg["scope"] == (m.RT_SCOPE_NOWHERE if delete else m.RT_SCOPE_UNIVERSE)
        assert msg["flags"] == 0  # no onlink, as flannel
        assert IPv6Address(msg.get_attr("RTA_DST")) == IPv6Address("fc00:5:0:2::")
        assert IPv6Address(msg.get_attr("RTA_GATEWAY")) == IPv6Address("fd72:0:0:64::2")
        assert msg.get_attr("RTA_OIF") == EXT


def v6only(n: int, ip6: str = "fd72:0:0:64::{n}") -> Lease:
    return Lease(None, LeaseAttrs(IPv4Address("0.0.0.0"), "host-gw",
                                  public_ipv6=IPv6Address(ip6.format(n=n))),
                 ipv6_subnet=IPv6Network(f"fc00:5:0:{n}::/64"))


def test_ipv6_only_peers_are_told_apart_by_their_v6_subnet() -> None:
    # every IPv6-only lease has no IPv4 subnet and PublicIP 0.0.0.0: neither may merge them
    own = v6only(1)
    d = desired6(own, [own, v6only(2), v6only(3)], NET6, EXT, "eth0", LINK)
    assert d.tables.routes == {"fc00:5:0:2::/64": (RouteSpec("fd72:0:0:64::2", EXT),),
                        "fc00:5:0:3::/64": (RouteSpec("fd72:0:0:64::3", EXT),)}
    assert d.skipped == {} and d.unreachable == {}
