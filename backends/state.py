"""Kernel state as plain data, and the diff between two such states. Pure.

Tables hold what a backend owns; `diff` turns what the kernel has into what
we want; `apply_plan` models what the kernel holds afterwards. (Leases become
desired tables in `desired.py`.) Addresses
are kept as strings (`"10.5.34.0"`, `"10.5.34.0/24"`, lowercase MACs) because
that is what the netlink layer parses and encodes fastest, and strings hash
and compare cheaply in the per-event diff.

Tables cover only what a backend owns: permanent neighbour and FDB entries on
its vxlan device, and main-table IPv4 routes inside the flannel Network that
point at the device (vxlan) or at a gateway via the external interface.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address
from typing import Any, NamedTuple

RTPROT_BOOT = 3  # what flannel's netlink library sends by default; `ip route` hides it
VXLAN_DEFAULT_PORT = 8472  # the kernel's default when no PORT attribute is sent
VXLAN_OVERHEAD = 50


class RouteSpec(NamedTuple):
    """One route's nexthop; `oif == 0` means "let the kernel pick" (DirectRouting)."""

    gateway: str
    oif: int
    onlink: bool = False
    priority: int = 0
    proto: int = RTPROT_BOOT


def route_matches(want: RouteSpec, have: RouteSpec) -> bool:
    return (want.gateway == have.gateway and want.onlink == have.onlink
            and want.priority == have.priority and want.proto == have.proto
            and (want.oif == 0 or want.oif == have.oif))


@dataclass
class Tables:
    """Neighbours (ip -> mac), FDB (mac -> remote IPs), routes (cidr -> nexthops)."""

    neighs: dict[str, str] = field(default_factory=dict)
    fdb: dict[str, tuple[str, ...]] = field(default_factory=dict)
    routes: dict[str, tuple[RouteSpec, ...]] = field(default_factory=dict)

    def copy(self) -> Tables:
        return Tables(dict(self.neighs), dict(self.fdb), dict(self.routes))

    def __len__(self) -> int:
        return len(self.neighs) + len(self.fdb) + len(self.routes)


@dataclass
class Plan:
    """Kernel operations; applied as deletes first, then sets in neigh, fdb, route order."""

    route_del: list[tuple[str, RouteSpec]] = field(default_factory=list)
    neigh_del: list[str] = field(default_factory=list)
    fdb_del: list[tuple[str, str | None]] = field(default_factory=list)  # None: every remote
    neigh_set: list[tuple[str, str]] = field(default_factory=list)
    fdb_set: list[tuple[str, str]] = field(default_factory=list)
    route_set: list[tuple[str, RouteSpec]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.route_del) + len(self.neigh_del) + len(self.fdb_del)
                + len(self.neigh_set) + len(self.fdb_set) + len(self.route_set))


@dataclass
class Keys:
    """Table keys a diff is limited to: an incremental run looks only at its leases' entries."""

    neighs: set[str] = field(default_factory=set)
    fdb: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)


def diff(desired: Tables, actual: Tables, only: Keys | None = None) -> Plan:
    """The operations that turn `actual` into `desired` (see `apply_plan` for their meaning).

    With `only`, entries under other keys are neither added nor removed.
    """
    plan = Plan()
    if only is None:  # every key of either side, without sets of them all (a resync's)
        neighs: Iterable[str] = _every(desired.neighs, actual.neighs)
        fdbs: Iterable[str] = _every(desired.fdb, actual.fdb)
        cidrs: Iterable[str] = _every(desired.routes, actual.routes)
    else:
        neighs, fdbs, cidrs = only.neighs, only.fdb, only.routes
    for ip in neighs:
        mac = desired.neighs.get(ip)
        if mac is None:
            if ip in actual.neighs:
                plan.neigh_del.append(ip)
        elif actual.neighs.get(ip) != mac:
            plan.neigh_set.append((ip, mac))

    for mac in fdbs:
        dsts = desired.fdb.get(mac)
        have = actual.fdb.get(mac, ())
        if dsts is None:
            if have:
                plan.fdb_del.append((mac, None))
            continue
        if have == dsts:
            continue
        dst = dsts[0]
        if dst in have:  # extra remotes on a unicast MAC: drop them, keep ours
            plan.fdb_del.extend((mac, d) for d in have if d != dst)
            continue
        # A replace rewrites the first remote; any further ones are deleted.
        plan.fdb_del.extend((mac, d) for d in have[1:])
        plan.fdb_set.append((mac, dst))

    for cidr in cidrs:
        routes = actual.routes.get(cidr, ())
        wants = desired.routes.get(cidr)
        if wants is None:
            plan.route_del.extend((cidr, r) for r in routes)
            continue
        want = wants[0]
        matched = [r for r in routes if route_matches(want, r)]
        extra = [r for r in routes if not route_matches(want, r)] + matched[1:]
        if not matched:
            plan.route_set.append((cidr, want))
            # The replace overwrites the first route of the same priority in place.
            same = next((r for r in extra if r.priority == want.priority), None)
            if same is not None:
                extra.remove(same)
        plan.route_del.extend((cidr, r) for r in extra)
    return plan


def _every(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    yield from a
    yield from (k for k in b if k not in a)


def apply_plan(tables: Tables, plan: Plan, *, inplace: bool = False,
               like: Tables | None = None) -> Tables:
    """What the kernel holds after `plan` (a model of its semantics; also updates our cache).

    `like` (the desired tables the plan came from): where the result equals one of its
    values, that value object is used, not a new equal one (a first run among thousands
    of peers would make one per FDB entry and route, only for `share_entries` to drop
    them again)."""
    out = tables if inplace else tables.copy()
    known = like if like is not None else Tables()
    for cidr, spec in plan.route_del:
        routes = tuple(r for r in out.routes.pop(cidr, ()) if r != spec)
        if routes:
            out.routes[cidr] = routes
    for ip in plan.neigh_del:
        out.neighs.pop(ip, None)
    for mac, dst in plan.fdb_del:
        remotes = tuple(d for d in out.fdb.pop(mac, ()) if dst is not None and d != dst)
        if remotes:
            out.fdb[mac] = remotes
    for ip, mac in plan.neigh_set:
        out.neighs[ip] = mac
    for mac, dst in plan.fdb_set:
        rest = out.fdb.get(mac, ())[1:]
        want = known.fdb.get(mac)
        out.fdb[mac] = want if not rest and want is not None and want == (dst,) \
            else (dst, *rest)
    for cidr, spec in plan.route_set:
        have = list(out.routes.get(cidr, ()))
        idx = next((i for i, r in enumerate(have) if r.priority == spec.priority), None)
        if idx is None:
            have.append(spec)
        else:
            have[idx] = spec
        wanted = known.routes.get(cidr)
        out.routes[cidr] = wanted if wanted is not None and len(have) == 1 \
            and wanted == (spec,) else tuple(have)
    return out


def share_entries(have: Tables, want: Tables) -> None:
    """Make every entry of `have` that equals one of `want` hold `want`'s objects (keys
    and values), in place. After a full run, the cache of what the kernel holds is a
    second copy of the desired state, parsed from the dump: sharing leaves it only its
    dict slots. Entries that differ (the kernel's own, failed writes) stay as they are."""
    for name in ("neighs", "fdb", "routes"):
        mine: dict[Any, Any] = getattr(have, name)
        theirs: dict[Any, Any] = getattr(want, name)
        shared = {k: v for k, v in theirs.items() if mine.get(k, _ABSENT) == v}
        if len(shared) != len(mine):
            shared.update((k, v) for k, v in mine.items() if k not in shared)
        setattr(have, name, shared)


_ABSENT = object()


def in_sync(desired: Tables, actual: Tables) -> bool:
    return len(diff(desired, actual)) == 0


# --- which routes are "ours" ---------------------------------


@dataclass(frozen=True)
class RouteScope:
    """Decides which dumped main-table routes a backend owns.

    Owned: dst inside `network`, and either on our device (we own flannel.N:
    even a route for our own subnet there is wrong), or a gateway route via
    the external interface (host-gw, DirectRouting). Everything else, e.g.
    the CNI bridge's route for our subnet or a blackhole route, is left alone.
    """

    network: IPv4Network
    dev_index: int  # 0 for host-gw
    ext_index: int
    _net: int = field(init=False, repr=False, compare=False)
    _mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_net", int(self.network.network_address))
        object.__setattr__(self, "_mask", int(self.network.netmask))

    def owns(self, dst: int, dst_len: int, oif: int, has_gateway: bool) -> bool:
        if dst_len < self.network.prefixlen or dst & self._mask != self._net:
            return False
        return (self.dev_index != 0 and oif == self.dev_index) or (
            has_gateway and oif == self.ext_index)


def ip_to_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


_ZERO80 = bytes(10)


def fmt6(addr: IPv6Address | bytes) -> str:
    """`IPv6Address(addr).compressed` (RFC 5952), through inet_ntop: ~10x faster, and it
    runs several times per peer. Below ::/80 inet_ntop writes the embedded-IPv4 forms
    (::ffff:1.2.3.4), which ipaddress does not: those go the slow way."""
    packed = addr if isinstance(addr, bytes) else addr.packed
    if packed[:10] == _ZERO80:
        return IPv6Address(packed).compressed
    return socket.inet_ntop(socket.AF_INET6, packed)


# --- the vxlan device ----------------------------------------------------------------------


@dataclass(frozen=True)
class VxlanDeviceSpec:
    name: str
    vni: int
    local: str
    link: int
    port: int  # 0: kernel default (8472), and no PORT attribute is sent
    learning: bool
    gbp: bool
    mtu: int


@dataclass(frozen=True)
class LinkState:
    """The parts of a link we look at (parsed from RTM_NEWLINK)."""

    index: int
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool
    vni: int | None = None
    local: str | None = None
    link: int | None = None
    port: int | None = None
    learning: bool | None = None
    gbp: bool = False


def incompatibility(spec: VxlanDeviceSpec, link: LinkState) -> str | None:
    """Why an existing link cannot be adopted as our device, or None if it can."""
    want_port = spec.port or VXLAN_DEFAULT_PORT
    checks = [
        ("kind", link.kind, "vxlan"), ("VNI", link.vni, spec.vni),
        ("local", link.local, spec.local), ("link", link.link, spec.link),
        ("port", link.port, want_port), ("learning", link.learning, spec.learning),
        ("gbp", link.gbp, spec.gbp),
    ]
    bad = [f"{name} {have!r} (want {want!r})" for name, have, want in checks if have != want]
    return ", ".join(bad) or None


def address_changes(want: str | None, have: Iterable[str], network: IPv4Network
                    ) -> tuple[list[str], list[str]]:
    """(to add, to delete) among the device's IPv4 addresses (`a.b.c.d/len`).

    Like flannel's EnsureV4AddressOnLink: any other address inside the
    Network is removed; addresses outside it are left alone.
    """
    have = list(have)
    add = [want] if want is not None and want not in have else []
    delete = [a for a in have if a != want
              and IPv4Network(a, strict=False).network_address in network]
    return add, delete


def vxlan_mtu(ext_mtu: int, config_mtu: int | None) -> int:
    return (config_mtu or ext_mtu) - VXLAN_OVERHEAD
