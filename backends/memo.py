"""One plane's desired state, kept from run to run. Pure (no I/O).

A run is told what changed since the last one: lease key -> its new lease, or None
(gone). `PeerSet` turns a whole peer list into that (O(N): a full run, or a caller
that only has the list), or takes it as given (O(changes): the daemon's incremental
path, which knows what its lease events changed). Only the changed leases are decided
again and, unless a full run, patched into the previous desired state instead of
rebuilding it: an event costs the same among a thousand peers or ten thousand.

A lease that turns unusable keeps the entries of its last good version
(`keep_last_good`): a bad write in etcd never cuts a working peer off.

A backend keeps one `PeerSet`; the IPv4 engine and both IPv6 planes keep one memo
each, fed from it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from backends.desired import (
    Desired,
    Outcome,
    PeerEntries,
    combine,
    is_own,
    keep_last_good,
    packed,
    patch,
    unpacked,
)
from backends.state import Keys
from core.lease import Lease

Ctx = TypeVar("Ctx", bound=Hashable)
# None: the lease is not this plane's (another backend, say); it gets no entries here.
Decide = Callable[[Lease, Ctx], "Outcome | None"]
Changes = Mapping[str, "Lease | None"]  # lease key -> its new lease; None: gone


class PeerSet:
    """The peer leases a backend was last given, by lease key."""

    __slots__ = ("leases",)

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}

    def replace(self, peers: Iterable[Lease]) -> dict[str, Lease | None]:
        """Take a whole list; what changed since the last one (by lease object). O(N)."""
        old, new = self.leases, {lease.key: lease for lease in peers}
        changed: dict[str, Lease | None] = {
            key: lease for key, lease in new.items() if old.get(key) is not lease}
        if len(new) - len(changed) != len(old):  # some of the old keys are gone
            changed.update((key, None) for key in old if key not in new)
        self.leases = new
        return changed

    def apply(self, changes: Changes) -> dict[str, Lease | None]:
        """Take only what changed; the part of it that is a change here. O(changes)."""
        done: dict[str, Lease | None] = {}
        for key, lease in changes.items():
            have = self.leases.get(key)
            if lease is None:
                if have is not None:
                    del self.leases[key]
                    done[key] = None
            elif have is not lease:
                self.leases[key] = lease
                done[key] = lease
        return done


class DesiredMemo(Generic[Ctx]):
    """The desired state of one plane and the per-lease outcomes it came from (whose
    entries are each lease's last good ones)."""

    def __init__(self, decide: Decide[Ctx]) -> None:
        self.decide = decide
        self.desired: Desired | None = None
        # Lease key -> its outcome here (`packed`: a plain good one is kept as its entries,
        # ~64 bytes less per peer); a lease that is not this plane's (or ours) has none.
        self.outcomes: dict[str, Outcome | PeerEntries] = {}
        self._ctx: Ctx | None = None
        self._own_key: str | None = None
        self._list: PeerSet | None = None  # update()'s, for callers with a list

    def forget(self) -> None:
        """The next update decides every lease again and rebuilds the desired state: after
        a failure, what it was told may not have reached the outcomes."""
        self.desired = None
        self._ctx = None

    def update(self, own: Lease, peers: Iterable[Lease], ctx: Ctx, *, full: bool
               ) -> tuple[Desired, Keys | None, dict[str, Outcome | None]]:
        """`apply` for a caller with the whole peer list (O(N) to find what changed)."""
        if self._list is None:
            self._list = PeerSet()
        changes = self._list.replace(peers)
        return self.apply(own, changes, self._list.leases, ctx, full=full)

    def apply(self, own: Lease, changes: Changes, peers: Mapping[str, Lease], ctx: Ctx, *,
              full: bool) -> tuple[Desired, Keys | None, dict[str, Outcome | None]]:
        """The desired state, the table keys to diff (None: all, as on every full run),
        and the changed outcomes (meaningful when the keys are not None).

        `changes`: what changed since the last call (lease key -> new lease, None: gone);
        `peers`: every lease now, read only when everything is decided again (a new
        context or own lease, or after `forget`)."""
        changed: dict[str, Outcome | None] = {}
        redo = ctx != self._ctx or own.key != self._own_key
        if redo:
            previous, self.outcomes = self.outcomes, {}
            for key, lease in peers.items():
                out = self._decide(lease, own, ctx, previous.get(key))
                if out is not None:
                    self.outcomes[key] = packed(out)
            self._ctx, self._own_key = ctx, own.key
            full = True
        else:
            for key, now in changes.items():
                before = self.outcomes.get(key)
                out = None if now is None else self._decide(now, own, ctx, before)
                kept = None if out is None else packed(out)
                if kept == before:
                    continue  # a renewal with the same value, or not this plane's
                if kept is None:
                    del self.outcomes[key]
                else:
                    self.outcomes[key] = kept
                changed[key] = out

        keys: Keys | None = None
        patched = False
        if self.desired is not None and not redo and not (full and self.desired.conflicts):
            # A full run patches too (then diffs every key): rebuilding would hold two
            # whole desired states at once and give the same one (patch == combine). With
            # a clash standing, a full run ranks everyone again (combine).
            keys = patch(self.desired, changed) if changed else Keys()
            patched = keys is not None
        if not patched:
            # The last desired peers are the incumbents: a clash never displaces them.
            # (patch leaves the desired state as it was when it gives up.)
            self.desired = combine(self.outcomes,
                                   self.desired.peers if self.desired is not None else None)
        assert self.desired is not None
        return self.desired, None if full or not patched else keys, changed

    def _decide(self, lease: Lease, own: Lease, ctx: Ctx,
                before: Outcome | PeerEntries | None) -> Outcome | None:
        if is_own(lease, own):
            return None
        decided = self.decide(lease, ctx)
        if decided is None:
            return None
        return keep_last_good(decided, None if before is None else unpacked(before).entries)
