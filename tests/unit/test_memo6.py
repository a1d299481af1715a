"""The IPv6 planes' desired state, kept from event to event (backends.memo with the
outcomes of backends.desired6): an event recomputes one lease and touches its keys
only, the patched state always equals a full rebuild, a lease that turns bad keeps its
last good IPv6 entries, and a newcomer never displaces an incumbent."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.desired6 import (
    Connected6,
    PeerContext6,
    desired6_state,
    hostgw6_outcome,
    vxlan6_outcome,
)
from backends.memo import DesiredMemo
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

NET6 = IPv6Network("fc00:6::/48")
EXT, DEV = 2, 7
LINK = (Connected6(IPv6Network("fd76::/64"), EXT),)


def lease(n: int, *, mac: int | None = None, vni: int = 1, backend: str = "vxlan") -> Lease:
    m = mac or n
    v6data = vxlan_backend_data(vni, f"0e:00:00:06:{m // 256:02x}:{m % 256:02x}") \
        if backend == "vxlan" else None
    attrs = LeaseAttrs(IPv4Address(f"192.168.76.{n % 250 + 1}"), backend,
                       public_ipv6=IPv6Address(f"fd76::{n:x}"), backend_v6_data=v6data)
    return Lease(IPv4Network(f"10.6.{n // 256}.{n % 256}/32"), attrs,
                 ipv6_subnet=IPv6Network(f"fc00:6:0:{n:x}::/64"))


OWN = lease(0)
CTX = PeerContext6(NET6, OWN.ipv6_subnet, OWN.attrs.public_ipv6, EXT, "eth0", LINK,
                   vni=1, dev_index=DEV)


def test_an_event_among_a_thousand_touches_one_peers_keys() -> None:
    memo = DesiredMemo(vxlan6_outcome)
    peers = [OWN, *(lease(i) for i in range(1, 1001))]
    d, keys, _ = memo.update(OWN, peers, CTX, full=True)
    assert keys is None and len(d.peers) == 1000
    new = lease(1001)
    d, keys, changes = memo.update(OWN, [*peers, new], CTX, full=False)
    assert keys is not None and list(changes) == [new.key]
    assert (keys.neighs, keys.fdb, keys.routes) == (
        {"fc00:6:0:3e9::"}, {"0e:00:00:06:03:e9"}, {"fc00:6:0:3e9::/64"})
    assert d.tables == desired6_state(OWN, [*peers, new], CTX, "vxlan").tables


def test_a_lease_turned_bad_keeps_its_last_good_ipv6_entries() -> None:
    memo = DesiredMemo(vxlan6_outcome)
    good = lease(5)
    memo.update(OWN, [OWN, good], CTX, full=True)
    bad = good.with_attrs(LeaseAttrs(good.attrs.public_ip, "vxlan",
                                     public_ipv6=good.attrs.public_ipv6,
                                     backend_v6_data={"VNI": 1, "VtepMAC": "not-a-mac"}))
    d, _, _ = memo.update(OWN, [OWN, bad], CTX, full=False)
    assert d.peers[bad.key] == vxlan6_outcome(good, CTX).entries  # type: ignore[union-attr]
    assert "keeping its last good entries" in d.skipped[bad.key]
    d, _, _ = memo.update(OWN, [OWN], CTX, full=False)  # deleted: now its entries go
    assert d.peers == {} and d.tables.fdb == {}


def test_a_newcomer_with_an_incumbents_mac_is_skipped() -> None:
    memo = DesiredMemo(vxlan6_outcome)
    incumbent, newcomer = lease(9), lease(3, mac=9)  # same IPv6 VtepMAC, lower key sorts first
    memo.update(OWN, [OWN, incumbent], CTX, full=True)
    d, _, _ = memo.update(OWN, [OWN, incumbent, newcomer], CTX, full=False)
    assert incumbent.key in d.peers and newcomer.key not in d.peers
    assert "VtepMAC" in d.skipped[newcomer.key]


def test_host_gw_peers_of_other_backends_get_nothing_and_unreachable_ones_are_told() -> None:
    memo = DesiredMemo(hostgw6_outcome)
    near = lease(2, backend="host-gw")
    far = Lease(near.ipv4_subnet and IPv4Network("10.6.9.0/24"),
                LeaseAttrs(IPv4Address("192.168.76.9"), "host-gw",
                           public_ipv6=IPv6Address("fd99::9")),
                ipv6_subnet=IPv6Network("fc00:6:0:99::/64"))
    d, _, _ = memo.update(OWN, [OWN, near, far, lease(4)], CTX, full=True)
    assert list(d.tables.routes) == ["fc00:6:0:2::/64"]
    assert far.key in d.unreachable and lease(4).key not in d.skipped


# A random walk of events (add, delete, rewrite with a new MAC, turn bad): whatever the
# order, the incrementally kept state equals the one built from scratch, except for the
# entries a bad lease keeps on purpose.
EVENTS = st.lists(st.tuples(st.sampled_from(["add", "del", "mac", "bad"]),
                            st.integers(1, 40)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_incremental_equals_a_full_rebuild(events: list[tuple[str, int]]) -> None:
    memo = DesiredMemo(vxlan6_outcome)
    current: dict[int, Lease] = {n: lease(n) for n in range(1, 11)}
    memo.update(OWN, [OWN, *current.values()], CTX, full=True)
    bad_ever: set[str] = set()
    for op, n in events:
        if op == "add":
            current[n] = lease(n)
        elif op == "del":
            current.pop(n, None)
        elif op == "mac" and n in current:
            current[n] = lease(n, mac=n + 100)
        elif op == "bad" and n in current:
            current[n] = lease(n, vni=9)
            bad_ever.add(current[n].key)
        peers = [OWN, *current.values()]
        d, _, _ = memo.update(OWN, peers, CTX, full=False)
        fresh = desired6_state(OWN, peers, CTX, "vxlan")
        if not (bad_ever or d.conflicts or fresh.conflicts):
            assert d.tables == fresh.tables and d.peers == fresh.peers
        # always: every good, unclashed lease has exactly its own entries
        for key, e in fresh.peers.items():
            if key not in bad_ever and not fresh.conflicts:
                assert d.peers.get(key) == e
