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
from collections.abc import Iterable, Mapping
from ipaddress import IPv6Network

from backends.base import OnceLog, ReconcileResult
from backends.desired import Desired
from backends.desired6 import Connected6, PeerContext6, desired6_state, hostgw6_outcome
from backends.desired6 import onlink6 as onlink6
from backends.memo import Changes, DesiredMemo
from backends.routes6 import dump_routes6, route6_body
from backends.state import Plan, Tables, apply_plan, diff, route_matches, share_entries
from core.lease import Lease
from netlink import messages as m
from netlink.rtnl import RtNetlink

KIND = "route6"
_GONE = (errno.ENOENT, errno.ESRCH)


def desired6(own: Lease, peers: Iterable[Lease], network6: IPv6Network, ext_index: int,
             ext_name: str, connected: Iterable[Connected6]) -> Desired:
    """Per peer with a v6 subnet and PublicIPv6: its route, or why it is left out."""
    return desired6_state(own, peers, PeerContext6(
        network6, own.ipv6_subnet, own.attrs.public_ipv6, ext_index, ext_name,
        tuple(connected)), "host-gw")


class Route6Plane:
    """The IPv6 routes of a dual-stack host-gw node, kept in line with the leases."""

    def __init__(self, nl: RtNetlink, network6: IPv6Network, ext_index: int,
                 ext_name: str) -> None:
        self.nl, self.network6 = nl, network6
        self.ext_index, self.ext_name = ext_index, ext_name
        self._applied: Tables | None = None
        self._connected: tuple[Connected6, ...] = ()
        self._memo: DesiredMemo[PeerContext6] = DesiredMemo(hostgw6_outcome)
        self._skip_log = OnceLog()
        self._unreach_log = OnceLog()
        self.programmed = 0
        self.skipped: list[tuple[str, str]] = []
        self._unreachable: list[tuple[str, str]] = []
        self._notes_rev = 0

    def forget(self) -> None:
        """After a failure: the next run starts from a dump."""
        self._applied = None
        self._memo.forget()

    def dump(self) -> Tables:
        tables, self._connected = dump_routes6(self.nl, self.network6, (self.ext_index,))
        return tables

    def reconcile(self, own: Lease, changes: Changes, peers: Mapping[str, Lease],
                  result: ReconcileResult, *, full: bool) -> None:
        """`changes`: since the last call (see DesiredMemo.apply); `peers`: all of them."""
        previous = self._applied
        full = full or previous is None
        base = self.dump() if full or previous is None else previous
        ctx = PeerContext6(self.network6, own.ipv6_subnet, own.attrs.public_ipv6,
                           self.ext_index, self.ext_name, self._connected)
        want, keys, _ = self._memo.apply(own, changes, peers, ctx, full=full)
        plan = diff(want.tables, base, keys)
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
        if keys is None:
            share_entries(self._applied, want.tables)
        routes = want.tables.routes  # failed: only this run's writes, O(changes)
        self.programmed = len(routes) - sum(cidr in routes for cidr in failed)
        if want.notes_rev != self._notes_rev:  # only then: an event costs O(its leases)
            self._notes_rev = want.notes_rev
            self.skipped = sorted(want.skipped.items())
            self._unreachable = sorted(want.unreachable.items())
            self._skip_log.update(self.skipped, "host-gw IPv6: peer")
            self._unreach_log.update(self._unreachable, "host-gw IPv6: peer unreachable")
        result.unreachable += self._unreachable
