"""From leases to desired kernel state: per-peer outcomes, merged into tables. Pure.

`combine` builds the whole desired state; `patch` updates it in place for a
few changed leases and says which table keys they touched, so a watch event
among a thousand peers diffs a handful of entries instead of three thousand.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import NamedTuple

from backends.state import Keys, RouteSpec, Tables, ip_to_int, route_matches
from core.lease import Lease, LeaseError, check_vxlan_attrs, is_peer
from netlink.uapi import RTN_UNICAST

# --- on-link decisions ---------------------------------------------------------------------


class MainRoute(NamedTuple):
    """A main-table route we do not manage, kept for on-link decisions."""

    net: int
    prefixlen: int
    oif: int
    has_gateway: bool
    rtype: int = RTN_UNICAST
    priority: int = 0




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
    if best is None or best.has_gateway or best.rtype != RTN_UNICAST:
        return None
    return best.oif


def connected_summary(routes: Iterable[MainRoute], ext_index: int) -> str:
    nets = sorted({(r.net, r.prefixlen) for r in routes
                   if r.oif == ext_index and not r.has_gateway and r.rtype == RTN_UNICAST})
    return ", ".join(f"{socket.inet_ntoa(struct.pack('>I', n))}/{p}" for n, p in nets) or "none"


# --- per-peer outcomes ---------------------------------------------------------------------


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
    _net: int = field(init=False, repr=False, compare=False)
    _mask: int = field(init=False, repr=False, compare=False)
    _own_ip: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_net", int(self.network.network_address))
        object.__setattr__(self, "_mask", int(self.network.netmask))
        object.__setattr__(self, "_own_ip", ip_to_int(self.own_public_ip))

    def inside(self, subnet: IPv4Network) -> bool:
        """subnet_of(network), with ints: it runs once per lease per event."""
        return (subnet.prefixlen >= self.network.prefixlen
                and int(subnet.network_address) & self._mask == self._net)


def _common_skip(lease: Lease, ctx: PeerContext, backend_type: str) -> str | None:
    if not ctx.inside(lease.subnet):
        return f"subnet {lease.subnet} is outside the Network {ctx.network}"
    if lease.attrs.backend_type != backend_type:
        kind = lease.attrs.backend_type or "udp (no BackendType)"
        return f"BackendType {kind!r} is not {backend_type!r}; only {backend_type} peers are used"
    if int(lease.attrs.public_ip) == ctx._own_ip:
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
    s0 = str(lease.subnet.network_address)
    cidr = f"{s0}/{lease.subnet.prefixlen}"
    public = str(lease.attrs.public_ip)
    if ctx.direct_routing and onlink_oif(ctx.main_routes, public) == ctx.ext_index:
        return Outcome(PeerEntries(None, None, (cidr, RouteSpec(public, 0))))
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


_NOTES = itertools.count(1)  # revisions of the skipped/unreachable notes, across all Desired


@dataclass
class Desired:
    tables: Tables
    peers: dict[str, PeerEntries]  # lease key -> its entries
    skipped: dict[str, str] = field(default_factory=dict)  # lease key -> reason
    unreachable: dict[str, str] = field(default_factory=dict)
    # The leases in a MAC/subnet clash, losers and the winners they lost to: a change to
    # any of them can only be resolved by `combine`; changes to the others still patch.
    conflicts: set[str] = field(default_factory=set)
    # Changes whenever `skipped` or `unreachable` does: what is reported from them (sorted
    # lists, logs) is rebuilt only then, not on every event.
    notes_rev: int = field(default_factory=lambda: next(_NOTES))


def _clash(tables: Tables, e: PeerEntries) -> str | None:
    if e.fdb is not None and e.fdb[0] in tables.fdb:
        return f"VtepMAC {e.fdb[0]} is already used by another lease"
    if e.route[0] in tables.routes or (e.neigh is not None and e.neigh[0] in tables.neighs):
        return f"subnet {e.route[0]} overlaps another lease's"
    return None


def _add(desired: Desired, key: str, e: PeerEntries) -> None:
    t = desired.tables
    if e.fdb is not None:
        t.fdb[e.fdb[0]] = (e.fdb[1],)
    if e.neigh is not None:
        t.neighs[e.neigh[0]] = e.neigh[1]
    t.routes[e.route[0]] = (e.route[1],)
    desired.peers[key] = e


def _remove(tables: Tables, e: PeerEntries) -> None:
    if e.neigh is not None:
        tables.neighs.pop(e.neigh[0], None)
    if e.fdb is not None:
        tables.fdb.pop(e.fdb[0], None)
    tables.routes.pop(e.route[0], None)


def _note(desired: Desired, key: str, out: Outcome) -> bool:
    if out.skipped:
        desired.skipped[key] = out.skipped
    elif out.unreachable:
        desired.unreachable[key] = out.unreachable
    else:
        return False
    return True


class _Owners:
    """Which lease holds each table key, built only once a clash needs it (then kept up to
    date while `combine` goes on): a clash-free merge pays nothing for it."""

    def __init__(self, peers: Mapping[str, PeerEntries]) -> None:
        self.by_key: dict[tuple[int, str], str] = {}
        for key, e in peers.items():
            self.add(key, e)

    def add(self, key: str, e: PeerEntries) -> None:
        for part in _parts(e):
            self.by_key[part] = key

    def of(self, e: PeerEntries) -> list[str]:
        return [owner for part in _parts(e) if (owner := self.by_key.get(part)) is not None]


def _parts(e: PeerEntries) -> list[tuple[int, str]]:
    parts = [(2, e.route[0])]
    if e.neigh is not None:
        parts.append((0, e.neigh[0]))
    if e.fdb is not None:
        parts.append((1, e.fdb[0]))
    return parts


def combine(outcomes: Iterable[tuple[str, Outcome]] | Mapping[str, Outcome | PeerEntries],
            incumbents: Mapping[str, PeerEntries] | None = None) -> Desired:
    """Merge per-lease outcomes; a clash (same VtepMAC, overlapping subnet) is won by seniority.

    A lease whose entries are already programmed unchanged (`incumbents`, the last
    desired state) goes first, so a newcomer can never cut a live peer off by clashing
    with it; the newcomer is skipped and reported. Among newcomers, key order decides,
    so the result is the same every time.

    `outcomes` may be a mapping of lease key -> outcome (`packed` or not, as a memo keeps
    them): it is then ranked by its keys alone, without a pair and a sort key per lease.
    """
    held = incumbents or {}
    desired = Desired(Tables(), {})
    owners: _Owners | None = None

    def place(key: str, out: Outcome) -> None:
        nonlocal owners
        _note(desired, key, out)
        e = out.entries
        if e is None:
            return
        clash = _clash(desired.tables, e)
        if clash:
            if owners is None:
                owners = _Owners(desired.peers)
            involved = owners.of(e)
            mac_owner = owners.by_key.get((1, e.fdb[0]), "") if e.fdb is not None else ""
            desired.skipped[key] = (clash.replace("another lease", f"lease {mac_owner}")
                                    if mac_owner else clash) + ("; one of them is stale or "
                                                                "misconfigured")
            desired.conflicts.update(involved, (key,))
            return
        if owners is not None:
            owners.add(key, e)
        _add(desired, key, e)

    if isinstance(outcomes, Mapping):
        first: list[str] = []
        later: list[str] = []
        for key in sorted(outcomes):
            e = unpacked(outcomes[key]).entries
            (first if e is not None and held.get(key) == e else later).append(key)
        for key in first + later:
            place(key, unpacked(outcomes[key]))
        return desired
    ranked = sorted(outcomes, key=lambda kv: (held.get(kv[0]) != kv[1].entries
                                              or kv[1].entries is None, kv[0]))
    for key, out in ranked:
        place(key, out)
    return desired


def packed(out: Outcome) -> Outcome | PeerEntries:
    """A plain good outcome (entries, no note) as its entries alone (~64 bytes less)."""
    e = out.entries
    return e if e is not None and out.skipped is None and out.unreachable is None else out


def unpacked(kept: Outcome | PeerEntries) -> Outcome:
    return kept if type(kept) is Outcome else Outcome(kept)  # type: ignore[arg-type]


def patch(desired: Desired, changes: Mapping[str, Outcome | None]) -> Keys | None:
    """Apply changed leases (None: gone) to `desired` in place; the table keys touched.

    None means "cannot patch, use combine": a change involves a lease in a clash, or
    makes a new one. `desired` is then left exactly as it was (its peers are the
    incumbents `combine` needs). Only the changed leases are looked at: the cost is
    the same among ten peers or ten thousand.
    """
    if desired.conflicts and not desired.conflicts.isdisjoint(changes):
        return None
    keys = Keys()
    t = desired.tables
    dropped: list[tuple[str, PeerEntries]] = []
    old_notes: list[tuple[dict[str, str], str, str]] = []
    for key in changes:
        for notes in (desired.skipped, desired.unreachable):
            note = notes.pop(key, None)
            if note is not None:
                old_notes.append((notes, key, note))
        old = desired.peers.pop(key, None)
        if old is not None:
            dropped.append((key, old))
            _touch(keys, old)
            _remove(t, old)
    added: list[str] = []
    noted = bool(old_notes)
    for key, out in changes.items():
        if out is None:
            continue
        if out.entries is not None and _clash(t, out.entries):
            for k in added:  # undo: `desired` is left as it was before the call
                _remove(t, desired.peers.pop(k))
            for k in changes:
                desired.skipped.pop(k, None)
                desired.unreachable.pop(k, None)
            for k, e in dropped:
                _add(desired, k, e)
            for notes, k, note in old_notes:
                notes[k] = note
            return None
        noted = _note(desired, key, out) or noted
        if out.entries is not None:
            _touch(keys, out.entries)
            _add(desired, key, out.entries)
            added.append(key)
    if noted:
        desired.notes_rev = next(_NOTES)
    return keys


def _touch(keys: Keys, e: PeerEntries) -> None:
    if e.neigh is not None:
        keys.neighs.add(e.neigh[0])
    if e.fdb is not None:
        keys.fdb.add(e.fdb[0])
    keys.routes.add(e.route[0])


def keep_last_good(out: Outcome, last_good: PeerEntries | None) -> Outcome:
    """A lease that turned unusable keeps the entries it had: a bad write never cuts a peer off.

    It is still reported as skipped; the entries go once the lease is deleted.
    """
    if out.entries is not None or not out.skipped or last_good is None:
        return out
    return Outcome(last_good, skipped=out.skipped + "; keeping its last good entries")


def is_own(lease: Lease, own: Lease) -> bool:
    """Our own lease (any version of it): never a peer."""
    return lease.key == own.key or not is_peer(lease.peer_key, own.peer_key)


def desired_state(own: Lease, peers: Iterable[Lease], ctx: PeerContext,
                  backend_type: str, previous: Desired | None = None) -> Desired:
    """The whole desired table set for `backend_type` ("vxlan" or "host-gw").

    `previous`: the last desired state, whose peers win clashes against newcomers.
    """
    decide = vxlan_outcome if backend_type == "vxlan" else hostgw_outcome
    return combine(((p.key, decide(p, ctx)) for p in peers if is_peer(p.subnet, own.subnet)),
                   previous.peers if previous is not None else None)


def peer_programmed(e: PeerEntries, kernel: Tables) -> bool:
    """Is every entry of this peer present in `kernel`?"""
    cidr, spec = e.route
    if not any(route_matches(spec, h) for h in kernel.routes.get(cidr, ())):
        return False
    if e.neigh is not None and kernel.neighs.get(e.neigh[0]) != e.neigh[1]:
        return False
    return e.fdb is None or kernel.fdb.get(e.fdb[0]) == (e.fdb[1],)


def programmed_peers(desired: Desired, kernel: Tables) -> int:
    return sum(peer_programmed(e, kernel) for e in desired.peers.values())
