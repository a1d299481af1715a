"""vxlan over IPv6, pure: each peer's neighbour, FDB entry and onlink route on
flannel-v6.<VNI>, DirectRouting's one route for an on-link peer, IPv6-only peers told
apart, and the reasons a peer gets no IPv6 entries."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from backends.plane6 import Connected6
from backends.state import RouteSpec
from backends.vxlan6 import desired6, vxlan6_mtu
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

NET6 = IPv6Network("fc00:5::/48")
DEV, EXT = 7, 2
LINK = (Connected6(IPv6Network("fd72:0:0:64::/64"), EXT),)


def lease(n: int, *, v4: bool = True, vni: int = 1, ip6: str = "fd72:0:0:64::{n}") -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.168.64.{n}" if v4 else "0.0.0.0"), "vxlan",
                       backend_data=vxlan_backend_data(1, f"0e:00:00:00:04:{n:02x}") if v4
                       else None,
                       public_ipv6=IPv6Address(ip6.format(n=n)),
                       backend_v6_data=vxlan_backend_data(vni, f"0e:00:00:00:06:{n:02x}"))
    return Lease(IPv4Network(f"10.5.{n}.0/24") if v4 else None, attrs,
                 ipv6_subnet=IPv6Network(f"fc00:5:0:{n}::/64"))


def test_a_peer_gets_flannels_three_entries() -> None:
    own = lease(1)
    d = desired6(own, [own, lease(2)], NET6, 1, DEV)
    assert d.tables.neighs == {"fc00:5:0:2::": "0e:00:00:00:06:02"}
    assert d.tables.fdb == {"0e:00:00:00:06:02": ("fd72:0:0:64::2",)}
    assert d.tables.routes == {"fc00:5:0:2::/64": (RouteSpec("fc00:5:0:2::", DEV, onlink=True),)}


def test_ipv6_only_peers_are_distinct() -> None:
    own = lease(1, v4=False)
    d = desired6(own, [own, lease(2, v4=False), lease(3, v4=False)], NET6, 1, DEV)
    assert sorted(d.tables.routes) == ["fc00:5:0:2::/64", "fc00:5:0:3::/64"]
    assert d.skipped == {}


def test_direct_routing_only_for_on_link_peers() -> None:
    own, near, far = lease(1), lease(2), lease(3, ip6="fd99::{n}")
    d = desired6(own, [near, far], NET6, 1, DEV, direct_routing=True, ext_index=EXT,
                 connected=LINK)
    assert d.tables.routes["fc00:5:0:2::/64"] == (RouteSpec("fd72:0:0:64::2", 0),)
    assert d.tables.routes["fc00:5:0:3::/64"] == (RouteSpec("fc00:5:0:3::", DEV, onlink=True),)
    assert list(d.tables.neighs) == ["fc00:5:0:3::"]  # the direct peer needs no neighbour


def test_reasons_for_no_ipv6_entries() -> None:
    own = lease(1)
    v4_only = Lease(IPv4Network("10.5.4.0/24"),
                    LeaseAttrs(IPv4Address("192.168.64.4"), "vxlan",
                               backend_data=vxlan_backend_data(1, "0e:00:00:00:04:04")))
    d = desired6(own, [v4_only, lease(5, vni=9)], NET6, 1, DEV)
    assert d.tables.routes == {}
    assert "has no IPv6 subnet" in d.skipped[v4_only.key]
    assert "VNI 9 differs" in d.skipped[lease(5).key]


def test_the_v6_mtu_is_70_below_the_link() -> None:
    assert vxlan6_mtu(1500, 0) == 1430 and vxlan6_mtu(9000, 0) == 8930
