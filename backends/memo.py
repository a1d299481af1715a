"""One plane's desired state, kept from run to run. Pure (no I/O).

Outcomes are memoised per lease object, so a watch event recomputes only the leases
that changed and, unless a full run, patches the previous desired state instead of
rebuilding it: an event among a thousand peers costs a handful of entries. A lease
that turns unusable keeps the entries of its last good version (`keep_last_good`):
a bad write in etcd never cuts a working peer off.

The IPv4 engine and both IPv6 planes keep one each.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from backends.desired import (
    Desired,
    Outcome,
    PeerEntries,
    combine,
    is_own,
    keep_last_good,
    patch,
)
from backends.state import Keys
from core.lease import Lease

Ctx = TypeVar("Ctx", bound=Hashable)
# None: the lease is not this plane's (another backend, say); it gets no entries here.
Decide = Callable[[Lease, Ctx], "Outcome | None"]


class DesiredMemo(Generic[Ctx]):
    """The desired state of one plane, the per-lease outcomes it came from, and the last
    good entries of each lease."""

    def __init__(self, decide: Decide[Ctx]) -> None:
        self.decide = decide
        self.desired: Desired | None = None
        self.last_good: dict[str, PeerEntries] = {}
        # Per lease object (by id): (lease, key, outcome); own and foreign leases: None.
        self._seen: dict[int, tuple[Lease, str, Outcome | None]] = {}
        self._ctx: Ctx | None = None

    def forget(self) -> None:
        """The next update rebuilds the whole desired state."""
        self.desired = None

    def update(self, own: Lease, peers: list[Lease], ctx: Ctx, *, full: bool
               ) -> tuple[Desired, Keys | None, dict[str, Outcome | None]]:
        """The desired state, the table keys to diff (None: all), and the changed leases."""
        rebuild = full or self.desired is None or ctx != self._ctx
        old = self._seen if ctx == self._ctx else {}
        seen: dict[int, tuple[Lease, str, Outcome | None]] = {}
        changes: dict[str, Outcome | None] = {}
        for lease in peers:
            hit = old.get(id(lease))
            if hit is None or hit[0] is not lease:
                key = lease.key
                out = None
                if not is_own(lease, own):
                    decided = self.decide(lease, ctx)
                    if decided is not None:
                        out = keep_last_good(decided, self.last_good.get(key))
                    changes[key] = out
                hit = (lease, key, out)
            seen[id(lease)] = hit
        if changes or len(seen) != len(old):
            for lid, (_, key, out) in old.items():
                if lid not in seen and out is not None and key not in changes:
                    changes[key] = None
        self._seen, self._ctx = seen, ctx
        for key, out in changes.items():
            if out is not None and out.entries is not None:
                self.last_good[key] = out.entries
            elif out is None:
                self.last_good.pop(key, None)

        keys: Keys | None = None
        # Taken before `patch`, which may leave the desired state half-updated on a clash.
        incumbents = dict(self.desired.peers) if self.desired is not None else None
        if not rebuild:
            assert self.desired is not None
            keys = patch(self.desired, changes) if changes else Keys()
        if keys is None:
            # The last desired peers are the incumbents: a clash never displaces them.
            self.desired = combine(((key, out) for _, key, out in seen.values()
                                    if out is not None), incumbents)
        assert self.desired is not None
        return self.desired, keys, changes
