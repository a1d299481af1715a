"""Peer lease events as plain data, and the pure diff between two views of the cluster.

The subnet manager hands the rest of the daemon a stream of `LeaseEvent`s: one
"snapshot" first, then "added" / "changed" / "removed". After a reconnect or an
etcd compaction it re-lists and emits `diff_leases(old, new)`, so consumers see
exactly the real changes: attributes are compared too (flannel's re-list only
compares subnets, so a peer that changed its VtepMAC while we were disconnected
kept a stale FDB entry), and nothing is removed that still exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from core.clip import clipped
from core.lease import (
    Lease,
    LeaseError,
    PeerKey,
    decode_lease,
    is_peer,
    parse_subnet_key,
    peer_order,
)

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
        return f"{self.kind} {self.lease.key} (PublicIP {self.lease.attrs.public_ip})"


def same_lease(a: Lease, b: Lease) -> bool:
    """Equal for the data plane: same subnets and attributes.

    The etcd lease id, expiry and revision are ignored: a peer renewing its key
    with the same value (flannel does that daily) is not a change.
    """
    return (a.ipv4_subnet == b.ipv4_subnet and a.ipv6_subnet == b.ipv6_subnet
            and a.attrs == b.attrs)


def lease_event(old: Lease | None, new: Lease | None) -> LeaseEvent | None:
    """The event that turns `old` into `new` for one subnet, or None if nothing changed."""
    if new is None:
        return None if old is None else LeaseEvent("removed", old)
    if old is None:
        return LeaseEvent("added", new)
    return None if same_lease(old, new) else LeaseEvent("changed", new)


def diff_leases(old: Mapping[PeerKey, Lease],
                new: Mapping[PeerKey, Lease]) -> list[LeaseEvent]:
    """Events that turn view `old` into view `new`: removals first, then by subnet."""
    events = [LeaseEvent("removed", old[s])
              for s in sorted(old.keys() - new.keys(), key=peer_order)]
    for subnet in sorted(new, key=peer_order):
        event = lease_event(old.get(subnet), new[subnet])
        if event is not None:
            events.append(event)
    return events


def apply_event(view: dict[PeerKey, Lease], event: LeaseEvent) -> None:
    """Update a consumer's view with one event (what a backend's peer map does)."""
    if event.kind == "snapshot":
        view.clear()
        view.update((lease.peer_key, lease) for lease in event.snapshot)
    elif event.lease is not None:
        if event.kind == "removed":
            view.pop(event.lease.peer_key, None)
        else:
            view[event.lease.peer_key] = event.lease


def note_change(changes: dict[str, Lease | None], view: Mapping[PeerKey, Lease],
                event: LeaseEvent) -> None:
    """Record in `changes` (lease key -> its lease now, None: gone) what `event` does to
    `view`; call it before `apply_event`. A snapshot records nothing: the consumer then
    reconciles in full. What a backend is told since its last run (see
    backends.engine.Engine.reconcile_changes), so an event costs O(1), not O(peers).

    A subnet's lease can change key (a dual-stack peer's IPv6 part, or the lower of two
    keys for one subnet went away): the old key is then gone."""
    lease = event.lease
    if event.kind == "snapshot" or lease is None:
        return
    old = view.get(lease.peer_key)
    if old is not None and old.key != lease.key:
        changes[old.key] = None
    changes[lease.key] = None if event.kind == "removed" else lease


Validator = Callable[[Lease, PeerKey | None], None]


def _by_key(lease: Lease) -> str:
    return lease.key


class PeerView:
    """The peer leases a watcher has emitted, kept from etcd key/value data; pure.

    Feed it a listing (`reset`) or single watch events (`put`, `delete`); it
    returns the LeaseEvents that bring a consumer's view up to date. Every key
    is decoded and checked on its own: a key or value that does not parse, or a
    lease the validator rejects, is skipped with one warning per version of
    that key and never affects any other subnet. Our own subnet is left out.
    """

    def __init__(self, subnets_prefix: str, validate: Validator,
                 warn: Callable[[str], None]) -> None:
        self._prefix = subnets_prefix.rstrip("/") + "/"
        self._validate = validate
        self._warn = warn
        # Every decodable key's lease, by subnet: almost always one, kept as is (a daemon
        # keeps one per peer: no set or tuple around it); several in key order. A key is
        # found again by parsing it; its lease knows it (Lease.key: the name after the
        # prefix).
        self._by_subnet: dict[PeerKey, Lease | tuple[Lease, ...]] = {}
        self._warned: dict[str, tuple[int, str]] = {}
        self._own: PeerKey | None = None
        self._started = False
        self.view: dict[PeerKey, Lease] = {}  # what we have emitted
        self.rejected = 0  # warnings given, i.e. distinct bad key versions seen

    def reset(self, kvs: Iterable[tuple[str, bytes, int, int]],
              own: PeerKey | None) -> list[LeaseEvent]:
        """A full listing of (key, value, lease id, mod revision): a snapshot the
        first time, afterwards the diff against what was emitted."""
        self._by_subnet.clear()
        # Keys warned about before and gone now are forgotten; without any, no need to
        # keep a set of every key meanwhile.
        present: set[str] | None = set() if self._warned else None
        for key, value, lease_id, mod_revision in kvs:
            if present is not None:
                present.add(key)
            self._store(key, value, lease_id, mod_revision)
        if present is not None:
            self._warned = {k: v for k, v in self._warned.items() if k in present}
        self._own = own
        new = {}
        for subnet in self._by_subnet:
            lease = self._peer(subnet)
            if lease is not None:
                new[subnet] = lease
        if not self._started:
            self._started = True
            self.view = new
            ordered = tuple(new[s] for s in sorted(new, key=peer_order))
            return [LeaseEvent("snapshot", snapshot=ordered)]
        events = diff_leases(self.view, new)
        self.view = new
        return events

    def put(self, key: str, value: bytes, lease_id: int, mod_revision: int,
            own: PeerKey | None) -> list[LeaseEvent]:
        touched = self._forget(key)
        subnet = self._store(key, value, lease_id, mod_revision)
        if subnet is not None:
            touched.add(subnet)
        return self._refresh(touched, own)

    def delete(self, key: str, own: PeerKey | None) -> list[LeaseEvent]:
        touched = self._forget(key)
        self._warned.pop(key, None)
        return self._refresh(touched, own)

    def set_own(self, own: PeerKey | None) -> list[LeaseEvent]:
        """Our own subnet changed (re-acquired): the old one may now be a peer's."""
        return self._refresh(set(), own)

    def _store(self, key: str, value: bytes, lease_id: int,
               mod_revision: int) -> PeerKey | None:
        try:
            if not key.startswith(self._prefix) or "/" in key[len(self._prefix):]:
                raise LeaseError(f"lease key {key!r}: not directly under {self._prefix}")
            lease = decode_lease(key, value, lease_id=lease_id, mod_revision=mod_revision)
        except LeaseError as exc:
            self._reject(key, mod_revision, str(exc))
            return None
        subnet = lease.peer_key
        have = self._leases_of(subnet)
        self._by_subnet[subnet] = tuple(sorted((*have, lease), key=_by_key)) if have else lease
        return subnet

    def _leases_of(self, subnet: PeerKey) -> tuple[Lease, ...]:
        have = self._by_subnet.get(subnet)
        return () if have is None else have if isinstance(have, tuple) else (have,)

    def _forget(self, key: str) -> set[PeerKey]:
        """Drop the lease stored under `key`; the subnet it was for, if any."""
        name = key[len(self._prefix):]
        if not key.startswith(self._prefix) or "/" in name:
            return set()  # never stored
        try:
            v4, v6 = parse_subnet_key(name)
        except LeaseError:
            return set()
        subnet: PeerKey | None = v4 if v4 is not None else v6
        have = self._leases_of(subnet) if subnet is not None else ()
        if subnet is None or not any(le.key == name for le in have):
            return set()
        rest = tuple(le for le in have if le.key != name)
        if rest:
            self._by_subnet[subnet] = rest if len(rest) > 1 else rest[0]
        else:
            del self._by_subnet[subnet]
        return {subnet}

    def _refresh(self, touched: set[PeerKey], own: PeerKey | None) -> list[LeaseEvent]:
        if own != self._own:
            touched |= {s for s in (self._own, own) if s is not None}
            # a lease that overlaps (not equals) our subnet is judged against it too
            touched |= {s for s in self._by_subnet
                        if any(o is not None and o.version == s.version and s.overlaps(o)
                               for o in (self._own, own))}
            self._own = own
        events = []
        for subnet in sorted(touched, key=peer_order):
            event = lease_event(self.view.get(subnet), self._peer(subnet))
            if event is None:
                continue
            if event.kind == "removed":
                del self.view[subnet]
            else:
                assert event.lease is not None
                self.view[subnet] = event.lease
            events.append(event)
        return events

    def _peer(self, subnet: PeerKey) -> Lease | None:
        """The valid lease for this subnet (lowest key wins), or None."""
        if not is_peer(subnet, self._own):
            return None
        for lease in self._leases_of(subnet):
            try:
                self._validate(lease, self._own)
            except LeaseError as exc:
                self._reject(self._prefix + lease.key, lease.mod_revision, str(exc))
                continue
            if self._warned:
                self._warned.pop(self._prefix + lease.key, None)
            return lease
        return None

    def _reject(self, key: str, mod_revision: int, message: str) -> None:
        if self._warned.get(key) == (mod_revision, message):
            return
        self._warned[key] = (mod_revision, message)
        self.rejected += 1
        self._warn(f"ignoring {clipped(key, 120)} (revision {mod_revision}): {message}; "
                   "no other peer is affected")
