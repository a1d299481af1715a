"""The pure diff between two views of the peer leases (attributes included)."""

from ipaddress import IPv4Address, IPv4Network

from flanneld.events import LeaseEvent, apply_event, diff_leases, lease_event
from flanneld.lease import Lease, LeaseAttrs, vxlan_backend_data


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
