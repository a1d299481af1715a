"""From leases to desired IPv6 kernel state: per-peer outcomes of both IPv6 planes. Pure.

The IPv6 twin of `backends.desired`: the same `Outcome` and `PeerEntries`, merged by
the same `combine` and `patch`, so the IPv6 planes get the IPv4 engine's guarantees
for free: a clash is won by the incumbent, a lease that turns bad keeps its last good
entries, and a watch event recomputes and diffs only the leases that changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from backends.desired import Desired, Outcome, PeerEntries, combine, is_own
from backends.state import RouteSpec, fmt6
from core.lease import Lease, LeaseError, check_vxlan_attrs


@dataclass(frozen=True)
class Connected6:
    """An IPv6 main-table route without a gateway: a directly connected prefix."""

    net: IPv6Network
    oif: int


def onlink6(connected: Iterable[Connected6], ip: IPv6Address) -> int | None:
    """The interface `ip` is directly reachable through (longest prefix), or None."""
    best = max((c for c in connected if ip in c.net), key=lambda c: c.net.prefixlen,
               default=None)
    return best.oif if best is not None else None


@dataclass(frozen=True)
class PeerContext6:
    """What a per-peer IPv6 decision needs besides the lease itself. Compared as a whole:
    when it changes (a new device index, new connected prefixes) every lease is decided
    again."""

    network6: IPv6Network
    own_subnet6: IPv6Network | None
    own_public_ipv6: IPv6Address | None
    ext_index: int
    ext_name: str = ""
    connected: tuple[Connected6, ...] = ()
    # vxlan only
    vni: int = 0
    dev_index: int = 0
    direct_routing: bool = False
    _net: int = field(init=False, repr=False, compare=False)
    _mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_net", int(self.network6.network_address))
        object.__setattr__(self, "_mask", int(self.network6.netmask))

    def inside(self, subnet: IPv6Network) -> bool:
        """subnet_of(network6), with ints: it runs once per lease per event."""
        return (subnet.prefixlen >= self.network6.prefixlen
                and int(subnet.network_address) & self._mask == self._net)


def _unusable6(lease: Lease, ctx: PeerContext6) -> str | None:
    sub6, ip6 = lease.ipv6_subnet, lease.attrs.public_ipv6
    if sub6 is None or ip6 is None:
        what = "IPv6 subnet" if sub6 is None else "PublicIPv6"
        return f"has no {what} (a node not yet dual-stack?): IPv4 only"
    if not ctx.inside(sub6):
        return f"IPv6 subnet {sub6} is outside the IPv6Network {ctx.network6}"
    return None


def _ours6(lease: Lease, ctx: PeerContext6) -> str | None:
    if lease.ipv6_subnet == ctx.own_subnet6:
        return (f"IPv6 subnet {lease.ipv6_subnet} is our own (a stale lease of this node?); "
                "not programmed")
    if lease.attrs.public_ipv6 == ctx.own_public_ipv6:
        return (f"PublicIPv6 {lease.attrs.public_ipv6} is our own (a stale lease of this "
                "node?); not programmed")
    return None


def vxlan6_outcome(lease: Lease, ctx: PeerContext6) -> Outcome | None:
    """A vxlan peer's IPv6 neighbour, FDB entry and onlink route (DirectRouting and on a
    connected prefix of the external interface: one direct route instead). None: not
    a vxlan peer (the IPv4 side reports it)."""
    if lease.attrs.backend_type != "vxlan":
        return None
    reason = _unusable6(lease, ctx) or _ours6(lease, ctx)
    if reason is None and lease.attrs.backend_v6_data is None:
        reason = "has no BackendV6Data (a node not yet dual-stack?): IPv4 only"
    if reason is not None:
        return Outcome(None, skipped=reason)
    sub6, ip6 = lease.ipv6_subnet, lease.attrs.public_ipv6
    assert sub6 is not None and ip6 is not None  # _unusable6
    try:
        vni, mac = check_vxlan_attrs(lease.attrs, v6=True)
    except LeaseError as exc:
        return Outcome(None, skipped=str(exc))
    if vni != ctx.vni:
        return Outcome(None, skipped=f"IPv6 VNI {vni} differs from ours ({ctx.vni})")
    gw, public = fmt6(sub6.network_address), fmt6(ip6)
    cidr = f"{gw}/{sub6.prefixlen}"
    if ctx.direct_routing and onlink6(ctx.connected, ip6) == ctx.ext_index:
        return Outcome(PeerEntries(None, None, (cidr, RouteSpec(public, 0))))
    return Outcome(PeerEntries((gw, mac), (mac, public),
                               (cidr, RouteSpec(gw, ctx.dev_index, onlink=True))))


def hostgw6_outcome(lease: Lease, ctx: PeerContext6) -> Outcome | None:
    """A host-gw peer's route `<v6 subnet> via <PublicIPv6> dev <ext>`, if that address is
    on a directly connected prefix of the external interface. None: not a host-gw peer."""
    # A peer without a usable IPv6 half is reported whatever its backend (as flannel's
    # v6 route code would meet it); one of another backend is the IPv4 side's to report.
    reason = _unusable6(lease, ctx)
    if reason is None and lease.attrs.backend_type != "host-gw":
        return None
    reason = reason or _ours6(lease, ctx)
    if reason is not None:
        return Outcome(None, skipped=reason)
    sub6, ip6 = lease.ipv6_subnet, lease.attrs.public_ipv6
    assert sub6 is not None and ip6 is not None
    if onlink6(ctx.connected, ip6) != ctx.ext_index:
        return Outcome(None, unreachable=(
            f"PublicIPv6 {ip6} is not on a directly connected IPv6 prefix of {ctx.ext_name}; "
            "host-gw needs every node on one L2 segment"))
    cidr = f"{fmt6(sub6.network_address)}/{sub6.prefixlen}"
    return Outcome(PeerEntries(None, None, (cidr, RouteSpec(fmt6(ip6), ctx.ext_index))))


def desired6_state(own: Lease, peers: Iterable[Lease], ctx: PeerContext6,
                   backend_type: str) -> Desired:
    """The whole IPv6 desired state of `backend_type` ("vxlan" or "host-gw")."""
    decide = vxlan6_outcome if backend_type == "vxlan" else hostgw6_outcome
    return combine((p.key, out) for p in peers
                   if not is_own(p, own) and (out := decide(p, ctx)) is not None)
