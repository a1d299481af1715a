"""Desired kernel state and its diff (backends/state.py): pure, no kernel.

The vxlan expectations are flannel's interop vector D (flannel-compat.md).
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.desired import (
    MainRoute,
    Outcome,
    PeerContext,
    combine,
    desired_state,
    keep_last_good,
    onlink_oif,
    patch,
    programmed_peers,
    vxlan_outcome,
)
from backends.state import (
    Keys,
    LinkState,
    RouteScope,
    RouteSpec,
    Tables,
    VxlanDeviceSpec,
    address_changes,
    apply_plan,
    diff,
    fmt6,
    incompatibility,
    ip_to_int,
    vxlan_mtu,
)
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

NET = IPv4Network("10.5.0.0/16")
EXT, DEV = 2, 7
# 192.168.64.0/24 is connected on the external interface; 192.168.65.0/24 is behind a router.
MAIN = (MainRoute(ip_to_int("192.168.64.0"), 24, EXT, False),
        MainRoute(0, 0, EXT, True),
        MainRoute(ip_to_int("192.168.65.0"), 24, EXT, True))


def vx(subnet: str, ip: str, mac: str, vni: int = 1) -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(ip), "vxlan",
                                                 vxlan_backend_data(vni, mac)))


def hg(subnet: str, ip: str) -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(ip), "host-gw"))


OWN = vx("10.5.52.0/24", "192.168.64.3", "c6:d2:32:6f:8f:44")
CTX = PeerContext(network=NET, own_key=OWN.key, own_public_ip="192.168.64.3", ext_index=EXT,
                  ext_name="eth0", main_routes=MAIN, vni=1, dev_index=DEV)


def test_vxlan_vector_d() -> None:
    peer = vx("10.5.34.0/24", "192.168.64.4", "0E:7A:19:3B:D0:0F")
    d = desired_state(OWN, [OWN, peer], CTX, "vxlan")
    assert d.tables.neighs == {"10.5.34.0": "0e:7a:19:3b:d0:0f"}
    assert d.tables.fdb == {"0e:7a:19:3b:d0:0f": ("192.168.64.4",)}
    assert d.tables.routes == {"10.5.34.0/24": (RouteSpec("10.5.34.0", DEV, onlink=True),)}
    assert d.skipped == {} and d.unreachable == {}


def test_direct_routing_only_for_onlink_peers() -> None:
    ctx = dataclasses.replace(CTX, direct_routing=True)
    near = vx("10.5.35.0/24", "192.168.64.5", "0e:00:00:00:00:05")
    far = vx("10.5.36.0/24", "192.168.65.6", "0e:00:00:00:00:06")
    d = desired_state(OWN, [near, far], ctx, "vxlan")
    assert d.tables.routes["10.5.35.0/24"] == (RouteSpec("192.168.64.5", 0),)
    assert "10.5.35.0" not in d.tables.neighs
    assert d.tables.routes["10.5.36.0/24"] == (RouteSpec("10.5.36.0", DEV, onlink=True),)
    assert d.tables.fdb == {"0e:00:00:00:00:06": ("192.168.65.6",)}


def test_bad_peers_are_skipped_without_blocking_others() -> None:
    good = vx("10.5.34.0/24", "192.168.64.4", "0e:7a:19:3b:d0:0f")
    peers = [
        good,
        vx("10.5.40.0/24", "192.168.64.40", "not-a-mac"),
        vx("10.5.41.0/24", "192.168.64.41", "01:00:5e:00:00:01"),  # multicast
        vx("10.5.42.0/24", "192.168.64.42", "0e:00:00:00:00:42", vni=2),
        vx("10.5.43.0/24", "192.168.64.43", "0e:7a:19:3b:d0:0f"),  # duplicate MAC
        vx("10.6.1.0/24", "192.168.64.44", "0e:00:00:00:00:44"),  # outside the Network
        vx("10.5.45.0/24", "192.168.64.3", "0e:00:00:00:00:45"),  # our own public IP
        hg("10.5.46.0/24", "192.168.64.46"),
        Lease(IPv4Network("10.5.47.0/24"), LeaseAttrs(IPv4Address("192.168.64.47"))),  # udp
    ]
    d = desired_state(OWN, peers, CTX, "vxlan")
    assert list(d.peers) == [good.key]
    reasons = d.skipped
    assert len(reasons) == 8
    assert "VtepMAC 'not-a-mac'" in reasons["10.5.40.0-24"]
    assert "multicast" in reasons["10.5.41.0-24"]
    assert "VNI 2" in reasons["10.5.42.0-24"]
    assert "already used by lease 10.5.34.0-24" in reasons["10.5.43.0-24"]
    assert "outside the Network" in reasons["10.6.1.0-24"]
    assert "our own" in reasons["10.5.45.0-24"]
    assert "'host-gw' is not 'vxlan'" in reasons["10.5.46.0-24"]
    assert "udp" in reasons["10.5.47.0-24"]


def test_a_lease_turned_bad_keeps_its_last_good_entries() -> None:
    good = vx("10.5.34.0/24", "192.168.64.4", "0e:7a:19:3b:d0:0f")
    last = desired_state(OWN, [good], CTX, "vxlan").peers[good.key]
    bad = vx("10.5.34.0/24", "192.168.64.4", "garbage")
    out = keep_last_good(vxlan_outcome(bad, CTX), last)
    assert out.entries == last and out.skipped and "keeping its last good" in out.skipped
    d = combine([(bad.key, out)])
    assert d.tables.neighs == {"10.5.34.0": "0e:7a:19:3b:d0:0f"}
    assert list(d.skipped) == [bad.key]
    assert keep_last_good(vxlan_outcome(bad, CTX), None).entries is None


def test_hostgw_routes_and_unreachable_peers() -> None:
    own = hg("10.5.52.0/24", "192.168.64.3")
    near, far = hg("10.5.36.0/24", "192.168.64.6"), hg("10.5.37.0/24", "192.168.65.7")
    d = desired_state(own, [near, far, vx("10.5.38.0/24", "192.168.64.8", "0e:00:00:00:00:08")],
                      CTX, "host-gw")
    assert d.tables.routes == {"10.5.36.0/24": (RouteSpec("192.168.64.6", EXT),)}
    assert d.tables.neighs == {} and d.tables.fdb == {}
    ((key, reason),) = d.unreachable.items()
    assert key == "10.5.37.0-24" and "192.168.65.7" in reason and "192.168.64.0/24" in reason
    assert list(d.skipped) == ["10.5.38.0-24"]


def test_onlink_longest_prefix_match() -> None:
    routes = (*MAIN, MainRoute(ip_to_int("192.168.64.128"), 25, EXT, True),
              MainRoute(ip_to_int("10.9.0.0"), 16, 3, False))
    assert onlink_oif(routes, "192.168.64.10") == EXT
    assert onlink_oif(routes, "192.168.64.200") is None  # more specific route via a gateway
    assert onlink_oif(routes, "10.9.1.1") == 3
    assert onlink_oif(routes, "8.8.8.8") is None
    assert onlink_oif((), "192.168.64.10") is None


def test_route_scope_only_owns_our_routes() -> None:
    scope = RouteScope(NET, DEV, EXT)
    a = ip_to_int
    assert scope.owns(a("10.5.34.0"), 24, DEV, False)
    assert scope.owns(a("10.5.34.0"), 24, EXT, True)  # DirectRouting / host-gw
    assert not scope.owns(a("10.5.34.0"), 24, EXT, False)  # a connected route
    assert not scope.owns(a("10.5.34.0"), 24, 9, True)  # another interface
    assert not scope.owns(a("10.6.34.0"), 24, DEV, False)  # outside the Network
    assert not scope.owns(a("10.4.0.0"), 15, DEV, False)  # wider than the Network
    assert scope.owns(a("10.5.52.0"), 24, DEV, False)  # even our own subnet: never right there
    assert not scope.owns(a("10.5.52.0"), 24, 5, False)  # the CNI bridge's route


def test_device_compatibility_and_addresses() -> None:
    spec = VxlanDeviceSpec("flannel.1", 1, "192.168.64.3", EXT, 0, False, False, 1450)
    link = LinkState(DEV, "flannel.1", "vxlan", 1450, "c6:d2:32:6f:8f:44", True, vni=1,
                     local="192.168.64.3", link=EXT, port=8472, learning=False)
    assert incompatibility(spec, link) is None
    assert incompatibility(spec, LinkState(**{**link.__dict__, "mtu": 1400})) is None
    bad = incompatibility(spec, LinkState(**{**link.__dict__, "vni": 2, "port": 4789}))
    assert bad is not None and "VNI 2" in bad and "port 4789" in bad
    assert incompatibility(spec, LinkState(DEV, "flannel.1", "veth", 1500, "", True)) is not None

    add, delete = address_changes("10.5.52.0/32", ["10.5.9.0/32", "172.16.0.1/24"], NET)
    assert add == ["10.5.52.0/32"] and delete == ["10.5.9.0/32"]
    assert address_changes("10.5.52.0/32", ["10.5.52.0/32"], NET) == ([], [])
    assert vxlan_mtu(1500, None) == 1450 and vxlan_mtu(1500, 9000) == 8950


def test_programmed_peers_counts_complete_peers_only() -> None:
    peer = vx("10.5.34.0/24", "192.168.64.4", "0e:7a:19:3b:d0:0f")
    d = desired_state(OWN, [peer], CTX, "vxlan")
    assert programmed_peers(d, d.tables) == 1
    partial = d.tables.copy()
    partial.fdb.clear()
    assert programmed_peers(d, partial) == 0


def test_diff_replaces_in_place_and_removes_stale_entries() -> None:
    want = Tables({"10.5.34.0": "0e:00:00:00:00:02"}, {"0e:00:00:00:00:02": ("192.168.64.4",)},
                  {"10.5.34.0/24": (RouteSpec("10.5.34.0", DEV, True),)})
    have = Tables({"10.5.34.0": "0e:00:00:00:00:01", "10.5.99.0": "0e:00:00:00:00:99"},
                  {"0e:00:00:00:00:01": ("192.168.64.4",)},  # the peer's old MAC: stale
                  {"10.5.34.0/24": (RouteSpec("192.168.64.4", EXT),),
                   "10.5.99.0/24": (RouteSpec("10.5.99.0", DEV, True),)})
    plan = diff(want, have)
    assert plan.neigh_set == [("10.5.34.0", "0e:00:00:00:00:02")]
    assert plan.neigh_del == ["10.5.99.0"]
    assert plan.fdb_set == [("0e:00:00:00:00:02", "192.168.64.4")]
    assert plan.fdb_del == [("0e:00:00:00:00:01", None)]
    assert plan.route_set == [("10.5.34.0/24", RouteSpec("10.5.34.0", DEV, True))]
    # The old DirectRouting route is replaced in place (same priority), not deleted first.
    assert plan.route_del == [("10.5.99.0/24", RouteSpec("10.5.99.0", DEV, True))]
    assert len(diff(want, apply_plan(have, plan))) == 0


# --- properties ----------------------------------------------------------------------------

ips = st.sampled_from([f"10.5.{i}.0" for i in range(6)] + ["192.168.64.4", "192.168.64.5"])
macs = st.sampled_from([f"0e:00:00:00:00:0{i}" for i in range(5)])
cidrs = st.sampled_from([f"10.5.{i}.0/24" for i in range(6)])
specs = st.builds(RouteSpec, gateway=ips, oif=st.sampled_from([0, EXT, DEV]),
                  onlink=st.booleans(), priority=st.sampled_from([0, 0, 100]),
                  proto=st.sampled_from([3, 3, 4]))
desired_tables = st.builds(
    Tables,
    neighs=st.dictionaries(ips, macs, max_size=5),
    fdb=st.dictionaries(macs, ips.map(lambda ip: (ip,)), max_size=5),
    routes=st.dictionaries(cidrs, specs.map(lambda s: (s,)), max_size=5))
actual_tables = st.builds(
    Tables,
    neighs=st.dictionaries(ips, macs, max_size=5),
    fdb=st.dictionaries(macs, st.lists(ips, min_size=1, max_size=3, unique=True).map(tuple),
                        max_size=5),
    routes=st.dictionaries(cidrs, st.lists(specs, min_size=1, max_size=3, unique=True).map(tuple),
                           max_size=5))


@settings(deadline=None)  # shared CI machines are slow at times
@given(desired_tables, actual_tables)
def test_applying_the_diff_converges(want: Tables, have: Tables) -> None:
    after = apply_plan(have, diff(want, have))
    assert len(diff(want, after)) == 0
    # Nothing beyond the desired entries is left behind.
    assert set(after.neighs) == set(want.neighs)
    assert set(after.fdb) == set(want.fdb) and all(len(v) == 1 for v in after.fdb.values())
    assert set(after.routes) == set(want.routes)
    assert all(len(v) == 1 for v in after.routes.values())


@settings(deadline=None)  # shared CI machines are slow at times
@given(desired_tables)
def test_no_changes_when_in_sync(want: Tables) -> None:
    assert len(diff(want, want)) == 0


@settings(deadline=None)  # shared CI machines are slow at times
@given(desired_tables, actual_tables)
def test_diff_touches_only_what_differs(want: Tables, have: Tables) -> None:
    plan = diff(want, have)
    assert all(have.neighs.get(ip) != mac for ip, mac in plan.neigh_set)
    assert all(ip not in want.neighs for ip in plan.neigh_del)
    assert all(have.fdb.get(mac) != want.fdb[mac] for mac, _ in plan.fdb_set)
    assert all((mac, dst) != (m, d[0]) for mac, dst in plan.fdb_del
               for m, d in want.fdb.items())


keysets = st.builds(Keys, neighs=st.sets(ips), fdb=st.sets(macs), routes=st.sets(cidrs))


@settings(deadline=None)  # shared CI machines are slow at times
@given(desired_tables, actual_tables, keysets)
def test_a_restricted_diff_touches_only_its_keys(want: Tables, have: Tables, only: Keys) -> None:
    after = apply_plan(have, diff(want, have, only))
    for ip in only.neighs:
        assert after.neighs.get(ip) == want.neighs.get(ip)
    for mac in only.fdb:
        assert after.fdb.get(mac) == want.fdb.get(mac)
    assert {k: v for k, v in after.neighs.items() if k not in only.neighs} == {
        k: v for k, v in have.neighs.items() if k not in only.neighs}
    assert {k: v for k, v in after.fdb.items() if k not in only.fdb} == {
        k: v for k, v in have.fdb.items() if k not in only.fdb}
    assert {k: v for k, v in after.routes.items() if k not in only.routes} == {
        k: v for k, v in have.routes.items() if k not in only.routes}
    restricted = Tables({k: v for k, v in want.neighs.items() if k in only.neighs},
                        {k: v for k, v in want.fdb.items() if k in only.fdb},
                        {k: v for k, v in want.routes.items() if k in only.routes})
    after_only = Tables({k: v for k, v in after.neighs.items() if k in only.neighs},
                        {k: v for k, v in after.fdb.items() if k in only.fdb},
                        {k: v for k, v in after.routes.items() if k in only.routes})
    assert len(diff(restricted, after_only)) == 0


def lease_for(i: int, mac: int, good: bool) -> Lease:
    return vx(f"10.5.{i}.0/24", f"192.168.64.{10 + i}",
              f"0e:00:00:00:00:{mac:02x}" if good else "bad")


leases_by_index = st.dictionaries(st.integers(1, 8), st.tuples(st.integers(1, 6), st.booleans()),
                                  max_size=8)


@settings(deadline=None)  # shared CI machines are slow at times
@given(leases_by_index, leases_by_index)
def test_patching_equals_rebuilding(before: dict[int, tuple[int, bool]],
                                    after: dict[int, tuple[int, bool]]) -> None:
    def outcomes(spec: dict[int, tuple[int, bool]]) -> dict[str, Outcome]:
        return {(lease := lease_for(i, mac, good)).key: vxlan_outcome(lease, CTX)
                for i, (mac, good) in spec.items()}
    old, new = outcomes(before), outcomes(after)
    desired = combine(old.items())
    changes: dict[str, Outcome | None] = {k: v for k, v in new.items() if old.get(k) != v}
    changes.update({k: None for k in old if k not in new})
    keys = patch(desired, changes)
    rebuilt = combine(new.items())
    if keys is None:  # a VtepMAC clash: only a rebuild resolves it
        assert rebuilt.conflicts or combine(old.items()).conflicts
        return
    assert desired.tables == rebuilt.tables and desired.peers == rebuilt.peers
    assert desired.skipped == rebuilt.skipped
    # The touched keys cover every entry that changed.
    before_tables = combine(old.items()).tables
    assert {ip for ip in before_tables.neighs.keys() | rebuilt.tables.neighs.keys()
            if before_tables.neighs.get(ip) != rebuilt.tables.neighs.get(ip)} <= keys.neighs
    assert {c for c in before_tables.routes.keys() | rebuilt.tables.routes.keys()
            if before_tables.routes.get(c) != rebuilt.tables.routes.get(c)} <= keys.routes


@settings(max_examples=500)
@given(st.one_of(st.integers(0, 2**128 - 1),
                 # the corner cases: zero runs of every length and place, ::/80 forms
                 st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABC]), min_size=8,
                          max_size=8).map(lambda w: int.from_bytes(
                              b"".join(x.to_bytes(2, "big") for x in w), "big"))))
def test_fmt6_writes_what_ipaddress_writes(n: int) -> None:
    addr = IPv6Address(n)
    assert fmt6(addr) == addr.compressed
