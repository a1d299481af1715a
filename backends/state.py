"""Desired kernel state as plain data, and the diff against what the kernel has.

Everything here is pure: leases + config in, tables and plans out. Addresses
are kept as strings (`"10.5.34.0"`, `"10.5.34.0/24"`, lowercase MACs) because
that is what the netlink layer parses and encodes fastest, and strings hash
and compare cheaply in the per-event diff.

Tables cover only what a backend owns: permanent neighbour and FDB entries on
its vxlan device, and main-table IPv4 routes inside the flannel Network that
point at the device (vxlan) or at a gateway via the external interface.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import NamedTuple

from flanneld.lease import Lease, LeaseError, check_vxlan_attrs

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


def diff(desired: Tables, actual: Tables) -> Plan:
    """The operations that turn `actual` into `desired` (see `apply_plan` for their meaning)."""
    plan = Plan()
    for ip, mac in desired.neighs.items():
        if actual.neighs.get(ip) != mac:
            plan.neigh_set.append((ip, mac))
    plan.neigh_del.extend(ip for ip in actual.neighs if ip not in desired.neighs)

    for mac, dsts in desired.fdb.items():
        have = actual.fdb.get(mac, ())
        if have == dsts:
            continue
        dst = dsts[0]
        if dst in have:  # extra remotes on a unicast MAC: drop them, keep ours
            plan.fdb_del.extend((mac, d) for d in have if d != dst)
            continue
        # A replace rewrites the first remote; any further ones are deleted.
        plan.fdb_del.extend((mac, d) for d in have[1:])
        plan.fdb_set.append((mac, dst))
    plan.fdb_del.extend((mac, None) for mac in actual.fdb if mac not in desired.fdb)

    for cidr, wants in desired.routes.items():
        want = wants[0]
        routes = actual.routes.get(cidr, ())
        matched = [r for r in routes if route_matches(want, r)]
        extra = [r for r in routes if not route_matches(want, r)] + matched[1:]
        if not matched:
            plan.route_set.append((cidr, want))
            # The replace overwrites the first route of the same priority in place.
            same = next((r for r in extra if r.priority == want.priority), None)
            if same is not None:
                extra.remove(same)
        plan.route_del.extend((cidr, r) for r in extra)
    for cidr, routes in actual.routes.items():
        if cidr not in desired.routes:
            plan.route_del.extend((cidr, r) for r in routes)
    return plan


def apply_plan(tables: Tables, plan: Plan) -> Tables:
    """What the kernel holds after `plan` (a model of its semantics; also updates our cache)."""
    out = tables.copy()
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
        out.fdb[mac] = (dst, *out.fdb.get(mac, ())[1:])
    for cidr, spec in plan.route_set:
        have = list(out.routes.get(cidr, ()))
        idx = next((i for i, r in enumerate(have) if r.priority == spec.priority), None)
        if idx is None:
            have.append(spec)
        else:
            have[idx] = spec
        out.routes[cidr] = tuple(have)
    return out


def in_sync(desired: Tables, actual: Tables) -> bool:
    return len(diff(desired, actual)) == 0


# --- which routes are "ours", and which peers are on-link ---------------------------------


class MainRoute(NamedTuple):
    """A main-table route we do not manage, kept for on-link decisions."""

    net: int
    prefixlen: int
    oif: int
    has_gateway: bool
    rtype: int = 1  # RTN_UNICAST
    priority: int = 0


@dataclass(frozen=True)
class RouteScope:
    """Decides which dumped routes a backend owns.

    Owned: dst inside `network` (but not our own subnet), and either on our
    device, or (gateway routes only) via the external interface.
    """

    network: IPv4Network
    own_subnet: IPv4Network | None
    dev_index: int  # 0 for host-gw
    ext_index: int
    _net: int = field(init=False, repr=False, compare=False)
    _mask: int = field(init=False, repr=False, compare=False)
    _own: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_net", int(self.network.network_address))
        set_(self, "_mask", int(self.network.netmask))
        own = self.own_subnet
        set_(self, "_own", (int(own.network_address), own.prefixlen) if own else (-1, -1))

    def owns(self, dst: int, dst_len: int, oif: int, has_gateway: bool) -> bool:
        if dst_len < self.network.prefixlen or dst & self._mask != self._net:
            return False
        if (dst, dst_len) == self._own:
            return False
        return (self.dev_index != 0 and oif == self.dev_index) or (
            has_gateway and oif == self.ext_index)


def ip_to_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def onlink_oif(routes: Iterable[MainRoute], ip: str) -> int | None:
    """The interface `ip` is directly reachable through (longest-prefix match), or None."""
    addr = ip_to_int(ip)
    best: MainRoute | None = None
    for r in routes:
        mask = (0xFFFFFFFF << (32 - r.prefixlen)) & 0xFFFFFFFF
        if addr & mask != r.net:
            continue
        if best is None or r.prefixlen > best.prefixlen or (
                r.prefixlen == best.prefixlen and r.priority < best.priority):
            best = r
    if best is None or best.has_gateway or best.rtype != 1:
        return None
    return best.oif


def connected_summary(routes: Iterable[MainRoute], ext_index: int) -> str:
    nets = sorted({(r.net, r.prefixlen) for r in routes
                   if r.oif == ext_index and not r.has_gateway and r.rtype == 1})
    return ", ".join(f"{socket.inet_ntoa(struct.pack('>I', n))}/{p}" for n, p in nets) or "none"


# --- desired state from leases -------------------------------------------------------------


class PeerEntries(NamedTuple):
    neigh: tuple[str, str] | None  # (ip, mac)
    fdb: tuple[str, str] | None  # (mac, dst)
    route: tuple[str, RouteSpec]  # (cidr, spec)


class Outcome(NamedTuple):
    """Per lease: entries to program, or a reason it is skipped / unreachable."""

    entries: PeerEntries | None
    skipped: str | None = None
    unreachable: str | None = None


@dataclass(frozen=True)
class PeerContext:
    """What a per-peer decision needs besides the lease itself."""

    network: IPv4Network
    own_key: str
    own_public_ip: str
    ext_index: int
    ext_name: str
    main_routes: tuple[MainRoute, ...] = ()
    # vxlan only
    vni: int = 0
    dev_index: int = 0
    direct_routing: bool = False


def _common_skip(lease: Lease, ctx: PeerContext, backend_type: str) -> str | None:
    if not lease.subnet.subnet_of(ctx.network):
        return f"subnet {lease.subnet} is outside the Network {ctx.network}"
    if lease.attrs.backend_type != backend_type:
        kind = lease.attrs.backend_type or "udp (no BackendType)"
        return f"BackendType {kind!r} is not {backend_type!r}; only {backend_type} peers are used"
    if str(lease.attrs.public_ip) == ctx.own_public_ip:
        return (f"PublicIP {lease.attrs.public_ip} is our own (a stale lease of this node?); "
                "not programmed")
    return None


def vxlan_outcome(lease: Lease, ctx: PeerContext) -> Outcome:
    """flannel's per-lease vxlan state (neighbour, FDB, onlink route) or DirectRouting route."""
    reason = _common_skip(lease, ctx, "vxlan")
    if reason:
        return Outcome(None, skipped=reason)
    try:
        vni, mac = check_vxlan_attrs(lease.attrs)
    except LeaseError as exc:
        return Outcome(None, skipped=str(exc))
    if vni != ctx.vni:
        return Outcome(None, skipped=f"VNI {vni} differs from ours ({ctx.vni}); "
                                     "set the same Backend.VNI on every node")
    cidr = f"{lease.subnet.network_address}/{lease.subnet.prefixlen}"
    public = str(lease.attrs.public_ip)
    if ctx.direct_routing and onlink_oif(ctx.main_routes, public) == ctx.ext_index:
        return Outcome(PeerEntries(None, None, (cidr, RouteSpec(public, 0))))
    s0 = str(lease.subnet.network_address)
    return Outcome(PeerEntries((s0, mac), (mac, public),
                               (cidr, RouteSpec(s0, ctx.dev_index, onlink=True))))


def hostgw_outcome(lease: Lease, ctx: PeerContext) -> Outcome:
    """A route `S via P dev <ext>`, if P is L2-adjacent (directly connected on ext)."""
    reason = _common_skip(lease, ctx, "host-gw")
    if reason:
        return Outcome(None, skipped=reason)
    public = str(lease.attrs.public_ip)
    if onlink_oif(ctx.main_routes, public) != ctx.ext_index:
        return Outcome(None, unreachable=(
            f"PublicIP {public} is not in a directly connected subnet of {ctx.ext_name} "
            f"({connected_summary(ctx.main_routes, ctx.ext_index)}); host-gw needs every node "
            "on one L2 segment (use vxlan, or vxlan with DirectRouting, otherwise)"))
    cidr = f"{lease.subnet.network_address}/{lease.subnet.prefixlen}"
    return Outcome(PeerEntries(None, None, (cidr, RouteSpec(public, ctx.ext_index))))


@dataclass
class Desired:
    tables: Tables
    peers: dict[str, PeerEntries]
    skipped: list[tuple[str, str]]
    unreachable: list[tuple[str, str]]


def combine(outcomes: Iterable[tuple[str, Outcome]]) -> Desired:
    """Merge per-lease outcomes (sorted by key, so conflicts resolve the same way every time)."""
    tables = Tables()
    peers: dict[str, PeerEntries] = {}
    skipped: list[tuple[str, str]] = []
    unreachable: list[tuple[str, str]] = []
    mac_owner: dict[str, str] = {}
    for key, out in sorted(outcomes, key=lambda kv: kv[0]):
        if out.skipped:
            skipped.append((key, out.skipped))
        elif out.unreachable:
            unreachable.append((key, out.unreachable))
        if out.entries is None:
            continue
        e = out.entries
        if e.fdb is not None and e.fdb[0] in mac_owner:
            skipped.append((key, f"VtepMAC {e.fdb[0]} is already used by lease "
                                 f"{mac_owner[e.fdb[0]]}; one of them is stale or misconfigured"))
            continue
        if e.route[0] in tables.routes:
            skipped.append((key, f"subnet {e.route[0]} appears twice"))
            continue
        if e.fdb is not None:
            mac_owner[e.fdb[0]] = key
            tables.fdb[e.fdb[0]] = (e.fdb[1],)
        if e.neigh is not None:
            tables.neighs[e.neigh[0]] = e.neigh[1]
        tables.routes[e.route[0]] = (e.route[1],)
        peers[key] = e
    return Desired(tables, peers, skipped, unreachable)


def keep_last_good(out: Outcome, last_good: PeerEntries | None) -> Outcome:
    """A lease that turned unusable keeps the entries it had: a bad write never cuts a peer off.

    It is still reported as skipped; the entries go once the lease is deleted.
    """
    if out.entries is not None or not out.skipped or last_good is None:
        return out
    return Outcome(last_good, skipped=out.skipped + "; keeping its last good entries")


def desired_state(own: Lease, peers: Iterable[Lease], ctx: PeerContext,
                  backend_type: str) -> Desired:
    """The whole desired table set for `backend_type` ("vxlan" or "host-gw")."""
    decide = vxlan_outcome if backend_type == "vxlan" else hostgw_outcome
    return combine((p.key, decide(p, ctx)) for p in peers if p.key != own.key)


def programmed_peers(desired: Desired, kernel: Tables) -> int:
    """Peers whose every entry is present in `kernel`."""
    n = 0
    for e in desired.peers.values():
        cidr, spec = e.route
        if not any(route_matches(spec, h) for h in kernel.routes.get(cidr, ())):
            continue
        if e.neigh is not None and kernel.neighs.get(e.neigh[0]) != e.neigh[1]:
            continue
        if e.fdb is not None and kernel.fdb.get(e.fdb[0]) != (e.fdb[1],):
            continue
        n += 1
    return n


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
