"""Peer lease events as plain data, and the pure diff between two views of the cluster.

The subnet manager hands the rest of the daemon a stream of `LeaseEvent`s: one
"snapshot" first, then "added" / "changed" / "removed". After a reconnect or an
etcd compaction it re-lists and emits `diff_leases(old, new)`, so consumers see
exactly the real changes: attributes are compared too (flannel's re-list only
compares subnets, so a peer that changed its VtepMAC while we were disconnected
kept a stale FDB entry), and nothing is removed that still exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Literal

from flanneld.lease import Lease

EventKind = Literal["added", "changed", "removed", "snapshot"]


@dataclass(frozen=True)
class LeaseEvent:
    kind: EventKind
    lease: Lease | None = None  # set for added / changed / removed
    snapshot: tuple[Lease, ...] = ()  # set for snapshot: every valid peer lease

    def __str__(self) -> str:
        if self.kind == "snapshot":
            return f"snapshot of {len(self.snapshot)} peer leases"
        assert self.lease is not None
        return f"{self.kind} {self.lease.subnet} (PublicIP {self.lease.attrs.public_ip})"


def same_lease(a: Lease, b: Lease) -> bool:
    """Equal for the data plane: same subnets and attributes.

    The etcd lease id, expiry and revision are ignored: a peer renewing its key
    with the same value (flannel does that daily) is not a change.
    """
    return a.subnet == b.subnet and a.ipv6_subnet == b.ipv6_subnet and a.attrs == b.attrs


def lease_event(old: Lease | None, new: Lease | None) -> LeaseEvent | None:
    """The event that turns `old` into `new` for one subnet, or None if nothing changed."""
    if new is None:
        return None if old is None else LeaseEvent("removed", old)
    if old is None:
        return LeaseEvent("added", new)
    return None if same_lease(old, new) else LeaseEvent("changed", new)


def diff_leases(old: Mapping[IPv4Network, Lease],
                new: Mapping[IPv4Network, Lease]) -> list[LeaseEvent]:
    """Events that turn view `old` into view `new`: removals first, then by subnet."""
    events = [LeaseEvent("removed", old[s]) for s in sorted(old.keys() - new.keys())]
    for subnet in sorted(new):
        event = lease_event(old.get(subnet), new[subnet])
        if event is not None:
            events.append(event)
    return events


def apply_event(view: dict[IPv4Network, Lease], event: LeaseEvent) -> None:
    """Update a consumer's view with one event (what a backend's peer map does)."""
    if event.kind == "snapshot":
        view.clear()
        view.update((lease.subnet, lease) for lease in event.snapshot)
    elif event.lease is not None:
        if event.kind == "removed":
            view.pop(event.lease.subnet, None)
        else:
            view[event.lease.subnet] = event.lease
