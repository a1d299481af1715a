"""flannelctl's IPv6 views, pure: lease rows of both families and IPv6-only ones, our own
lease found by its IPv6 subnet, every peer's IPv6 verdict (vxlan and host-gw), and what
`status` and `leases` print."""

from __future__ import annotations

from argparse import Namespace
from ipaddress import IPv6Network

import pytest
from ctl_v6_data import (
    DEV6,
    EXT,
    ONLY6,
    PEER4,
    PEER6,
    PEER_MAC6,
    cluster,
    lease,
    node,
    only6_lease,
    own_lease,
    peer_lease,
    vxlan6_kernel,
)

from backends import peerstate
from backends.plane6 import Connected6
from backends.state import RouteSpec, Tables
from flanneld.ctl import leases, status
from flanneld.ctl._common import LeaseRow, own_row


def test_lease_rows_carry_both_families() -> None:
    d = LeaseRow(peer_lease().key, peer_lease(), lease_id=7).as_dict()
    assert d["key"] == "10.9.52.0-24&fc00:9:0:7::-64"
    assert (d["subnet"], d["ipv6_subnet"], d["public_ip"], d["public_ipv6"]) == (
        "10.9.52.0/24", "fc00:9:0:7::/64", "192.168.100.2", "fd7c::2")
    assert (d["vtep_mac"], d["vtep_mac_v6"]) == ("0e:00:00:00:00:05", PEER_MAC6)
    d = LeaseRow(only6_lease().key, only6_lease()).as_dict()
    assert d["key"] == "&fc00:9:0:9::-64"
    assert (d["subnet"], d["ipv6_subnet"], d["vtep_mac"]) == (None, "fc00:9:0:9::/64", None)


def test_own_row_by_ipv6_subnet_for_an_ipv6_only_node() -> None:
    cl = cluster([peer_lease(), only6_lease()])
    row = own_row(cl, None, subnet6=ONLY6)
    assert row is not None and row.key == "&fc00:9:0:9::-64"
    # a dual-stack lease with the same IPv6 subnet is not an IPv6-only node's own
    assert own_row(cl, None, subnet6=PEER6) is None
    row = own_row(cl, PEER4, subnet6=ONLY6)
    assert row is not None and row.key == peer_lease().key


def test_vxlan_ipv6_verdicts() -> None:
    _, view = node([peer_lease()], kernel=vxlan6_kernel())
    assert view.v6 is not None
    assert view.v6.checks[peer_lease().key].state == peerstate.PROGRAMMED
    assert (view.v6.programmed, view.v6.expected, view.v6.strays) == (1, 1, [])

    missing_route = vxlan6_kernel()
    missing_route.routes.clear()
    _, view = node([peer_lease()], kernel=missing_route)
    assert view.v6 is not None
    check = view.v6.checks[peer_lease().key]
    assert check.state == peerstate.PARTIAL and check.kind == "vxlan"
    assert check.problems == (
        f"route fc00:9:0:7::/64 via fc00:9:0:7:: dev #{DEV6} onlink missing",)
    assert (view.v6.programmed, view.v6.expected) == (0, 1)

    _, view = node([peer_lease()], kernel=vxlan6_kernel(remote="fd7c::99"))
    assert view.v6 is not None
    check = view.v6.checks[peer_lease().key]
    assert check.state == peerstate.STALE
    assert check.problems == (f"FDB entry {PEER_MAC6} points at fd7c::99; want fd7c::2",)


def test_vxlan_ipv6_skips_and_strays() -> None:
    not_yet = lease(PEER4, None, "192.168.100.2", None)  # a v4-only node, not migrated
    stray = vxlan6_kernel(IPv6Network("fc00:9:0:99::/64"), "0e:00:00:00:00:99", "fd7c::99")
    _, view = node([not_yet], kernel=stray)
    assert view.v6 is not None
    check = view.v6.checks[not_yet.key]
    assert check.state == peerstate.SKIPPED and "has no IPv6 subnet" in check.problems[0]
    assert view.v6.expected == 0
    assert view.v6.strays == [
        "FDB entry 0e:00:00:00:00:99 dst fd7c::99", "neighbour fc00:9:0:99:: lladdr "
        "0e:00:00:00:00:99", f"route fc00:9:0:99::/64 via fc00:9:0:99:: dev #{DEV6} onlink"]


def test_host_gw_ipv6_verdicts() -> None:
    on_link = (Connected6(IPv6Network("fd7c::/64"), EXT),)
    routed = Tables(routes={str(PEER6): (RouteSpec("fd7c::2", EXT),)})
    _, view = node([peer_lease("host-gw")], "host-gw", routed, connected=on_link)
    assert view.v6 is not None
    check = view.v6.checks[peer_lease("host-gw").key]
    assert (check.state, check.kind) == (peerstate.PROGRAMMED, "direct")
    _, view = node([peer_lease("host-gw")], "host-gw", Tables(), connected=on_link)
    assert view.v6 is not None
    assert view.v6.checks[peer_lease("host-gw").key].problems == (
        f"route fc00:9:0:7::/64 via fd7c::2 dev #{EXT} missing",)
    _, view = node([peer_lease("host-gw")], "host-gw", Tables(), connected=())
    assert view.v6 is not None
    check = view.v6.checks[peer_lease("host-gw").key]
    assert check.state == peerstate.UNREACHABLE and "not on a directly connected" in \
        check.problems[0]


def opts() -> Namespace:
    return Namespace(etcd_endpoints=("http://192.168.100.250:2379",),
                     subnet_file="/run/flannel/subnet.env")


def test_status_shows_both_families() -> None:
    cl, view = node([peer_lease()], kernel=vxlan6_kernel())
    d = status.to_data(opts(), cl, view, True, "flanneld is ready")
    v6 = d["ipv6"]
    assert (v6["subnet"], v6["network"], v6["public_ipv6"]) == (
        "fc00:9:0:5::/64", "fc00:9::/48", "fd7c::1")
    assert (v6["device"]["name"], v6["device"]["mtu"], v6["device"]["accept_ra"]) == (
        "flannel-v6.1", 1430, "0")
    assert (v6["programmed"], v6["expected"]) == (1, 1)
    [peer] = d["peers"]
    assert (peer["ipv6_subnet"], peer["public_ipv6"], peer["state6"], peer["kind6"]) == (
        "fc00:9:0:7::/64", "fd7c::2", "programmed", "vxlan")
    text = status.render(d)
    lines = text.splitlines()
    assert "subnet v6  fc00:9:0:5::/64 (network fc00:9::/48)" in lines
    assert "public v6  fd7c::1" in lines
    assert any(x.startswith("device v6  flannel-v6.1 (VNI 1, MAC 0e:00:00:00:00:02, local "
                            "fd7c::1, accept_ra 0)") for x in lines)
    assert any(x.startswith("MTU        flannel-v6.1 1430, subnet.env 1430, eth0 1500")
               for x in lines)
    assert "IPv6: 1/1 peers programmed (1 programmed)" in lines
    row = next(x for x in lines if x.startswith("fc00:9:0:7::/64"))
    assert "fd7c::2" in row and PEER_MAC6 in row and "programmed (vxlan)" in row


def test_status_with_an_ipv6_only_peer_and_a_missing_device() -> None:
    cl, view = node([peer_lease(), only6_lease()], kernel=vxlan6_kernel(), device=None)
    d = status.to_data(opts(), cl, view, True, "ready")
    by_key = {p["key"]: p for p in d["peers"]}
    assert by_key["&fc00:9:0:9::-64"]["state"] == "ipv6-only"
    text = status.render(d)
    assert "device v6  flannel-v6.1 MISSING" in text.splitlines()
    v4_table = text.split("IPv6 PEER SUBNET")[0]
    assert "fc00:9:0:9::/64" not in v4_table and "10.9.52.0/24" in v4_table
    assert "fc00:9:0:9::/64" in text.split("IPv6 PEER SUBNET")[1]


def test_leases_listing_both_families() -> None:
    cl = cluster([own_lease(), peer_lease(), only6_lease()])
    cl.leases.append(LeaseRow("10.9.77.0-24&bad", None, problem="lease key: not of the form",
                              lease_id=5, ttl=9))
    assert leases.shows_v6(cl)
    text = leases.render(cl)
    head, _, *rows = text.splitlines()[2:]
    assert head.split() == ["SUBNET", "IPv6", "SUBNET", "PUBLIC", "IP", "PUBLIC", "IPv6",
                            "BACKEND", "VTEP", "MAC", "VTEP", "MAC", "(v6)", "EXPIRES",
                            "PROBLEM"]
    assert text.splitlines()[0] == ("/p/network: network 10.9.0.0/16, IPv6 network "
                                    "fc00:9::/48; 4 leases (0 reservations, 1 IPv6-only)")
    assert rows[1].split()[:5] == ["10.9.52.0/24", "fc00:9:0:7::/64", "192.168.100.2",
                                   "fd7c::2", "vxlan"]
    assert rows[2].split()[:7] == ["-", "fc00:9:0:9::/64", "-", "fd7c::3", "vxlan", "-",
                                   "0e:00:00:00:00:09"]
    assert rows[3].startswith("10.9.77.0-24&bad") and rows[3].endswith("not of the form")


def test_leases_listing_stays_narrow_without_ipv6() -> None:
    v4 = lease(PEER4, None, "192.168.100.2", None)
    cl = cluster([v4])
    cl.config = None
    cl.config_error = "config missing"
    assert not leases.shows_v6(cl)
    cells = leases.lease_cells(cl.leases[0], False)
    assert cells == ["10.9.52.0/24", "192.168.100.2", "vxlan", "0e:00:00:00:00:05", "30s", ""]


def test_reserve_and_release_find_a_dual_stack_key_by_its_ipv4_subnet() -> None:
    names = ["10.9.52.0-24&fc00:9:0:7::-64", "10.9.52.0-240", "10.9.52.0-2"]
    assert leases.pick_key(names, PEER4) == "10.9.52.0-24&fc00:9:0:7::-64"
    assert leases.pick_key(["10.9.52.0-24"], PEER4) == "10.9.52.0-24"
    assert leases.pick_key([], PEER4) is None
    with pytest.raises(leases.Refused, match="2 lease keys"):
        leases.pick_key(["10.9.52.0-24", "10.9.52.0-24&fc00:9:0:7::-64"], PEER4)
