"""What every backend shares: the external interface, the reconcile result, the protocol.

The daemon calls a backend from a worker thread (`asyncio.to_thread`), so the
API is synchronous; each instance serialises its calls with one lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.lease import Lease, LeaseAttrs

log = logging.getLogger("pyflannel.backends")

# Kinds used in ReconcileResult counters (and so in metric labels).
KINDS = ("device", "address", "mtu", "neigh", "fdb", "route", "neigh6", "fdb6", "route6",
         "wgpeer")


@dataclass(frozen=True)
class ExternalInterface:
    """The underlay interface flannel sends peer traffic through (`--iface`)."""

    name: str
    index: int
    address: IPv4Address
    mtu: int
    public_ip: IPv4Address | None = None  # `--public-ip`; None means `address`
    public_ipv6: IPv6Address | None = None  # IPv6 enabled: `--public-ipv6` or its address

    def __post_init__(self) -> None:
        if self.public_ip is None:
            object.__setattr__(self, "public_ip", self.address)

    @property
    def public(self) -> IPv4Address:
        """`public_ip`, typed as never None (it is filled in at construction)."""
        assert self.public_ip is not None
        return self.public_ip


@dataclass
class ReconcileResult:
    """What one reconcile did; counters are by kind (see KINDS).

    `added`/`removed` are ordinary changes (new or gone peers, first start);
    `repaired` counts state we had programmed before and found missing or
    altered in the kernel (someone deleted a route, the device vanished...).
    """

    programmed_peers: int = 0
    added: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    full: bool = True

    def count(self, bucket: str, kind: str, n: int = 1) -> None:
        counter: dict[str, int] = getattr(self, bucket)
        counter[kind] = counter.get(kind, 0) + n

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.repaired)

    def summary(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ",".join(f"{k}={v}" for k, v in sorted(d.items())) or "-"
        return (f"peers={self.programmed_peers} added[{fmt(self.added)}] "
                f"removed[{fmt(self.removed)}] repaired[{fmt(self.repaired)}] "
                f"skipped={len(self.skipped)} unreachable={len(self.unreachable)} "
                f"errors={len(self.errors)}")


@runtime_checkable
class Backend(Protocol):
    backend_type: str  # "vxlan" | "host-gw", as in the lease's BackendType
    mtu: int  # the value for FLANNEL_MTU
    dev_index: int  # our overlay device's ifindex; 0 when there is none (host-gw)
    # True when state we own can change without an rtnetlink announcement (WireGuard
    # peers): every resync tick then reads it back instead of trusting the kernel watch.
    drift_unannounced: bool
    # Called with the MACs of the FDB entries we write: the kernel echoes them to the
    # daemon's kernel watch with portid 0, and they are ours, not drift.
    on_fdb_write: Callable[[list[str]], None] | None
    # Called (on the netlink thread) with our new lease value when the backend changed it
    # (vxlan: a live peer held our VtepMAC); the daemon re-publishes our lease.
    on_lease_attrs: Callable[[LeaseAttrs], object] | None

    @property
    def netlink_portid(self) -> int:
        """The portid our netlink writes carry, so the kernel watch can ignore them."""
        ...

    def lease_attrs(self) -> LeaseAttrs:
        """Our lease value; ensures/adopts the device first (vxlan publishes its MAC)."""
        ...

    def reconcile(self, own: Lease, peers: Iterable[Lease], *,
                  full: bool = True) -> ReconcileResult:
        """Make the kernel match (own, peers); full=True dumps the kernel, else uses the cache."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class IncrementalBackend(Protocol):
    """A backend that can be told only what changed (vxlan and host-gw: backends.engine)."""

    def reconcile_changes(self, own: Lease, changes: Mapping[str, Lease | None]
                          ) -> ReconcileResult:
        """An incremental run (like reconcile(full=False)) told only the leases that
        changed since the last run, by lease key (None: gone); it costs O(changes)."""
        ...


class OnceLog:
    """Log a message per key only when it differs from the last one logged for that key.

    Skipped and unreachable peers are reported in every ReconcileResult, but
    logged once per change, not on every resync.
    """

    def __init__(self, level: int = logging.WARNING) -> None:
        self.level = level
        self._last: dict[str, str] = {}

    def update(self, items: Iterable[tuple[str, str]], what: str) -> None:
        current = dict(items)
        for key, reason in current.items():
            if self._last.get(key) != reason:
                log.log(self.level, "%s %s: %s", what, key, reason)
        for key in self._last.keys() - current.keys():
            log.info("%s %s: resolved", what, key)
        self._last = current

