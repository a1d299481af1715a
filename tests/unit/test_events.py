"""The pure diff between two views of the peer leases (attributes included)."""

from ipaddress import IPv4Address, IPv4Network

from core.lease import Lease, LeaseAttrs, check_peer_lease, encode_attrs, vxlan_backend_data
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
