"""host-gw's IPv6 routes: `<peer v6 subnet> via <peer PublicIPv6> dev <ext>`, reconciled.

A dual-stack host-gw node programs, beside its IPv4 routes, one IPv6 route per peer
that leases an IPv6 subnet and publishes a PublicIPv6 (flannel's
AddV6RouteToDest). The per-peer choice and the ownership test are pure. `Route6Plane`
is the I/O edge: it dumps the IPv6 main table, diffs it with `state.diff` (the tables
are family-agnostic strings) and applies the difference in one batch.

Like the IPv4 side, unlike flannel:
- a peer whose PublicIPv6 is not on a connected prefix of the external interface
  is reported as unreachable (once) and not handed to the kernel;
- a dual-stack node that sees a v4-only peer (one not yet migrated) programs v4 and
  says once that the peer has no IPv6;
- a route removed or altered by hand is put back on the next full run and counted.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from backends.base import OnceLog, ReconcileResult
from backends.state import RTPROT_BOOT, Plan, RouteSpec, Tables, apply_plan, diff, route_matches
from core.lease import Lease, is_peer
from netlink import messages as m
from netlink.rtnl import RtNetlink

KIND = "route6"
_GONE = (errno.ENOENT, errno.ESRCH)


@dataclass(frozen=True)
class Connected6:
    """An IPv6 main-table route without a gateway: a directly connected prefix."""

    net: IPv6Network
    oif: int


@dataclass
class Desired6:
    routes: dict[str, tuple[RouteSpec, ...]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # lease key -> reason
    unreachable: dict[str, str] = field(default_factory=dict)


def onlink6(connected: Iterable[Connected6], ip: IPv6Address) -> int | None:
    """The interface `ip` is directly reachable through (longest prefix), or None."""
    best = max((c for c in connected if ip in c.net), key=lambda c: c.net.prefixlen,
               default=None)
    return best.oif if best is not None else None


def desired6(own: Lease, peers: Iterable[Lease], network6: IPv6Network, ext_index: int,
             ext_name: str, connected: Iterable[Connected6]) -> Desired6:
    """Per peer with a v6 subnet and PublicIPv6: its route, or why it is left out."""
    out = Desired6()
    connected = tuple(connected)
    own_ip6 = own.attrs.public_ipv6
    for p in peers:
        if p.key == own.key or not is_peer(p.peer_key, own.peer_key):
            continue
        sub6, ip6 = p.ipv6_subnet, p.attrs.public_ipv6
        if sub6 is None or ip6 is None:
            what = "IPv6 subnet" if sub6 is None else "PublicIPv6"
            out.skipped[p.key] = f"has no {what} (a node not yet dual-stack?): IPv4 only"
            continue
        if not sub6.subnet_of(network6):
            out.skipped[p.key] = f"IPv6 subnet {sub6} is outside the IPv6Network {network6}"
            continue
        if p.attrs.backend_type != "host-gw":
            continue  # the IPv4 side reports it
        if ip6 == own_ip6:
            out.skipped[p.key] = f"PublicIPv6 {ip6} is our own; not programmed"
            continue
        if onlink6(connected, ip6) != ext_index:
            out.unreachable[p.key] = (
                f"PublicIPv6 {ip6} is not on a directly connected IPv6 prefix of {ext_name}; "
                "host-gw needs every node on one L2 segment")
            continue
        out.routes[str(sub6)] = (RouteSpec(ip6.compressed, ext_index),)
    return out


def owns6(network6: IPv6Network, dst: IPv6Network, oif: int, has_gateway: bool,
          ext_index: int) -> bool:
    """Ours: inside the IPv6Network, via a gateway on the external interface."""
    return has_gateway and oif == ext_index and dst.subnet_of(network6)


def route6_body(cidr: str, spec: RouteSpec, delete: bool) -> bytes:
    net = IPv6Network(cidr)
    return m.route6_body(str(net.network_address), net.prefixlen, spec.gateway, spec.oif,
                         onlink=spec.onlink, proto=spec.proto if delete else RTPROT_BOOT,
                         delete=delete)


class Route6Plane:
    """The IPv6 routes of a dual-stack host-gw node, kept in line with the leases."""

    def __init__(self, nl: RtNetlink, network6: IPv6Network, ext_index: int,
                 ext_name: str) -> None:
        self.nl, self.network6 = nl, network6
        self.ext_index, self.ext_name = ext_index, ext_name
        self._applied: Tables | None = None
        self._connected: tuple[Connected6, ...] = ()
        self._skip_log = OnceLog()
        self._unreach_log = OnceLog()
        self.programmed = 0
        self.skipped: list[tuple[str, str]] = []

    def forget(self) -> None:
        """After a failure: the next run starts from a dump."""
        self._applied = None

    def dump(self) -> Tables:
        tables, connected = Tables(), []
        for r in self.nl.dump(m.RTM_GETROUTE, m.route_dump_body(m.RT_TABLE_MAIN, m.AF_INET6),
                              m.parse_route_entry, m.RTM_NEWROUTE):
            if r.table != m.RT_TABLE_MAIN or r.rtype != m.RTN_UNICAST:
                continue
            dst = IPv6Network((r.dst or bytes(16), r.dst_len))
            if r.gateway and owns6(self.network6, dst, r.oif, True, self.ext_index):
                spec = RouteSpec(IPv6Address(r.gateway).compressed, r.oif)
                tables.routes[str(dst)] = (*tables.routes.get(str(dst), ()), spec)
            elif not r.gateway and r.oif:
                connected.append(Connected6(dst, r.oif))
        self._connected = tuple(connected)
        return tables

    def reconcile(self, own: Lease, peers: list[Lease], result: ReconcileResult, *,
                  full: bool) -> None:
        previous = self._applied
        base = self.dump() if full or previous is None else previous
        want = desired6(own, peers, self.network6, self.ext_index, self.ext_name,
                        self._connected)
        plan = diff(Tables(routes=want.routes), base)
        ops = [(True, op) for op in plan.route_del] + [(False, op) for op in plan.route_set]
        done = Plan()
        reqs = [(m.RTM_DELROUTE if delete else m.RTM_NEWROUTE,
                 0 if delete else m.NLM_F_CREATE | m.NLM_F_REPLACE,
                 route6_body(cidr, spec, delete)) for delete, (cidr, spec) in ops]
        failed: set[str] = set()
        for (delete, op), res in zip(ops, self.nl.apply(reqs) if reqs else [], strict=True):
            cidr, spec = op
            if res[0] and not (delete and res[0] in _GONE):
                failed.add(cidr)
                text = f" ({res[1]})" if res[1] else ""
                result.errors.append(f"{'delete ' if delete else ''}route {cidr} via "
                                     f"{spec.gateway}: {os.strerror(res[0])}{text}")
                continue
            (done.route_del if delete else done.route_set).append(op)
            repaired = not delete and previous is not None and any(
                route_matches(spec, h) for h in previous.routes.get(cidr, ()))
            result.count("removed" if delete else "repaired" if repaired else "added", KIND)
        self._applied = apply_plan(base, done, inplace=True)
        self.programmed = sum(cidr not in failed for cidr in want.routes)
        skipped, unreachable = sorted(want.skipped.items()), sorted(want.unreachable.items())
        self.skipped = skipped
        result.unreachable += unreachable
        self._skip_log.update(skipped, "host-gw IPv6: peer")
        self._unreach_log.update(unreachable, "host-gw IPv6: peer unreachable")
