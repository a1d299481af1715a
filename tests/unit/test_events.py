"""The pure diff between two views of the peer leases (attributes included)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from core.lease import (
    Lease,
    LeaseAttrs,
    PeerKey,
    check_peer_lease,
    encode_attrs,
    vxlan_backend_data,
)
from flanneld.events import LeaseEvent, PeerView, apply_event, diff_leases, lease_event


def lease(n: int, mac: str = "0e:00:00:00:00:01", lease_id: int = 5) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.168.64.{n}"), "vxlan", vxlan_backend_data(1, mac))
    return Lease(IPv4Network(f"10.5.{n}.0/24"), attrs, lease_id=lease_id, mod_revision=n)


def view(*leases: Lease) -> dict[IPv4Network, Lease]:
    return {le.subnet: le for le in leases}


def test_diff_reports_only_real_changes() -> None:
    old = view(lease(1), lease(2), lease(3))
    new = view(lease(1, lease_id=99), lease(3, mac="0e:00:00:00:00:33"), lease(4))
    events = diff_leases(old, new)
    assert [(e.kind, e.lease.subnet if e.lease else None) for e in events] == [
        ("removed", IPv4Network("10.5.2.0/24")),
        ("changed", IPv4Network("10.5.3.0/24")),
        ("added", IPv4Network("10.5.4.0/24")),
    ]
    assert diff_leases(new, new) == []


def test_renewal_with_same_value_is_not_a_change() -> None:
    assert lease_event(lease(1, lease_id=1), lease(1, lease_id=2)) is None
    assert lease_event(None, None) is None


def test_apply_event_rebuilds_the_view() -> None:
    old = view(lease(1), lease(2))
    new = view(lease(2, mac="0e:00:00:00:00:22"), lease(5))
    mine: dict[IPv4Network, Lease] = {}
    apply_event(mine, LeaseEvent("snapshot", snapshot=tuple(old.values())))
    for event in diff_leases(old, new):
        apply_event(mine, event)
    assert mine == new


PREFIX = "/coreos.com/network/subnets"
NET = IPv4Network("10.5.0.0/16")


def make_view(warnings: list[str]) -> PeerView:
    def validate(lease: Lease, own: IPv4Network | None) -> None:
        check_peer_lease(lease, NET, own_subnet=own,
                         own_public_ips=[IPv4Address("192.168.64.52")])
    return PeerView(PREFIX, validate, warnings.append)


def kv(n: int, mac: str = "0e:00:00:00:00:01", rev: int = 1) -> tuple[str, bytes, int, int]:
    return (f"{PREFIX}/10.5.{n}.0-24", encode_attrs(lease(n, mac).attrs), 5, rev)


def test_peer_view_snapshot_then_incremental() -> None:
    warnings: list[str] = []
    v = make_view(warnings)
    own = IPv4Network("10.5.52.0/24")
    [snap] = v.reset([kv(1), kv(2), kv(52)], own)
    assert snap.kind == "snapshot" and [le.subnet for le in snap.snapshot] == [
        IPv4Network("10.5.1.0/24"), IPv4Network("10.5.2.0/24")]
    assert v.put(*kv(1, rev=9), own) == []  # same value: silent
    [ev] = v.put(*kv(1, "0e:00:00:00:00:09", rev=10), own)
    assert ev.kind == "changed"
    [ev] = v.delete(kv(2)[0], own)
    assert ev.kind == "removed" and ev.lease is not None
    assert v.delete(kv(2)[0], own) == []  # twice: nothing
    assert warnings == []


def test_peer_view_poison_warns_once_and_touches_nobody() -> None:
    warnings: list[str] = []
    v = make_view(warnings)
    own = IPv4Network("10.5.52.0/24")
    v.reset([kv(1), kv(2)], own)
    bad = [(f"{PREFIX}/garbage", b"x", 0, 3), (f"{PREFIX}/10.5.3.0-24", b"{", 0, 4),
           (f"{PREFIX}/10.6.3.0-24", encode_attrs(lease(3).attrs), 0, 5),
           (f"{PREFIX}/10.5.52.0-23", encode_attrs(lease(4).attrs), 0, 6),
           (f"{PREFIX}/sub/10.5.5.0-24", encode_attrs(lease(5).attrs), 0, 7),
           (f"{PREFIX}/10.5.6.0-24", b'{"PublicIP":"192.168.64.52"}', 0, 8)]
    for item in bad:
        assert v.put(*item, own) == []
    assert len(warnings) == len(bad) == v.rejected
    # a re-list with the same content: no events, no new warnings
    assert v.reset([kv(1), kv(2), *bad], own) == []
    assert len(warnings) == len(bad)
    # a valid lease turning into garbage is that lease's removal, nobody else's
    events = v.put(f"{PREFIX}/10.5.1.0-24", b"nonsense", 0, 20, own)
    assert [(e.kind, e.lease.subnet if e.lease else None) for e in events] == [
        ("removed", IPv4Network("10.5.1.0/24"))]
    assert list(v.view) == [IPv4Network("10.5.2.0/24")]


def test_two_keys_for_one_subnet_the_lower_key_wins_and_the_other_takes_over() -> None:
    """One subnet under a v4 key and a dual-stack key (a node turning dual-stack): the
    lower key is the peer; deleting it hands the subnet to the other; deleting that one,
    or a key never stored, leaves nothing behind."""
    v = make_view([])
    v4_key = f"{PREFIX}/10.5.1.0-24"
    ds_key = f"{PREFIX}/10.5.1.0-24&fc00:5:0:1::-64"
    value = encode_attrs(lease(1).attrs)
    [snap] = v.reset([(ds_key, value, 5, 2), (v4_key, value, 5, 1)], None)
    assert [le.key for le in snap.snapshot] == ["10.5.1.0-24"]
    assert v.delete(f"{PREFIX}/10.5.7.0-24", None) == []  # never stored
    assert v.delete(f"{PREFIX}/garbage", None) == []
    [ev] = v.delete(v4_key, None)
    assert ev.kind == "changed" and ev.lease is not None
    assert ev.lease.key == "10.5.1.0-24&fc00:5:0:1::-64"
    [ev] = v.delete(ds_key, None)
    assert ev.kind == "removed" and v.view == {}
    [ev] = v.put(v4_key, value, 5, 9, None)
    assert ev.kind == "added"


def test_peer_view_own_subnet_change() -> None:
    v = make_view([])
    v.reset([kv(1), kv(2)], IPv4Network("10.5.2.0/24"))
    assert list(v.view) == [IPv4Network("10.5.1.0/24")]
    # we moved to 10.5.9.0/24: 10.5.2.0/24 belongs to a peer now
    events = v.set_own(IPv4Network("10.5.9.0/24"))
    assert [(e.kind, e.lease.subnet if e.lease else None) for e in events] == [
        ("added", IPv4Network("10.5.2.0/24"))]


def test_peer_view_reset_diff_includes_attributes() -> None:
    v = make_view([])
    v.reset([kv(1), kv(2), kv(3)], None)
    events = v.reset([kv(1), kv(2, "0e:00:00:00:00:22", rev=7), kv(4)], None)
    assert [(e.kind, str(e.lease.subnet) if e.lease else "") for e in events] == [
        ("removed", "10.5.3.0/24"), ("changed", "10.5.2.0/24"), ("added", "10.5.4.0/24")]


NET6 = IPv6Network("fc00:5::/48")


def v6only_kv(n: int, rev: int = 1) -> tuple[str, bytes, int, int]:
    attrs = LeaseAttrs(IPv4Address("0.0.0.0"), "host-gw",
                       public_ipv6=IPv6Address(f"fd72::{n}"))
    return (f"{PREFIX}/&fc00:5:0:{n:x}::-64", encode_attrs(attrs), 5, rev)


def make_view6(warnings: list[str], network: IPv4Network | None = None) -> PeerView:
    def validate(lease: Lease, own: PeerKey | None) -> None:
        check_peer_lease(lease, network, own_subnet=None, ipv6_network=NET6,
                         own_ipv6_subnet=own if isinstance(own, IPv6Network) else None,
                         own_public_ips=[IPv6Address("fd72::99")])
    return PeerView(PREFIX, validate, warnings.append)


def test_peer_view_ipv6_only_keys_peers_by_their_v6_subnet() -> None:
    warnings: list[str] = []
    v = make_view6(warnings)
    own = IPv6Network("fc00:5:0:1::/64")
    [snap] = v.reset([v6only_kv(3), v6only_kv(1), v6only_kv(2)], own)
    assert [le.peer_key for le in snap.snapshot] == [IPv6Network("fc00:5:0:2::/64"),
                                                      IPv6Network("fc00:5:0:3::/64")]
    assert all(le.ipv4_subnet is None for le in snap.snapshot)
    [ev] = v.delete(v6only_kv(2)[0], own)
    assert ev.kind == "removed" and ev.lease is not None and ev.lease.peer_key == \
        IPv6Network("fc00:5:0:2::/64")
    [ev] = v.set_own(IPv6Network("fc00:5:0:9::/64"))  # re-acquired elsewhere: old one is a peer
    assert ev.kind == "added" and ev.lease is not None
    assert warnings == []


def test_ipv6_only_leases_meet_nodes_of_each_family() -> None:
    # a dual-stack node takes one in (its IPv6 half is usable: the IPv4 engine skips it) ...
    warnings: list[str] = []
    v = make_view6(warnings, network=NET)
    [snap] = v.reset([v6only_kv(2), kv(3)], IPv4Network("10.5.1.0/24"))
    assert [le.key for le in snap.snapshot] == ["10.5.3.0-24", "&fc00:5:0:2::-64"]
    assert warnings == []
    # ... an IPv4-only node skips it with one warning
    v4 = make_view(warnings)
    [snap] = v4.reset([v6only_kv(2), kv(3)], IPv4Network("10.5.1.0/24"))
    assert [le.key for le in snap.snapshot] == ["10.5.3.0-24"]
    assert len(warnings) == 1 and "IPv6-only lease has no IPv4 subnet" in warnings[0]


def test_views_of_both_families_diff_and_sort() -> None:
    four = lease(1)
    six = Lease(None, LeaseAttrs(IPv4Address("0.0.0.0"), public_ipv6=IPv6Address("fd72::2")),
                ipv6_subnet=IPv6Network("fc00:5:0:2::/64"))
    events = diff_leases({}, {six.peer_key: six, four.peer_key: four})
    assert [e.lease.key for e in events if e.lease] == [four.key, six.key]  # IPv4 first
