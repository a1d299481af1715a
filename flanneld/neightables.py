"""Warn before the kernel's neighbour tables overflow (flannel#928), from the tables
themselves: an RTM_GETNEIGHTBL dump, readable inside any network namespace.

Each peer a node sends to on its underlay needs a neighbour entry, and the table is
shared by every namespace of the kernel; past gc_thresh3 new entries are refused and
peers go silent although every route and FDB entry is programmed.
"""

from __future__ import annotations

import logging

from netlink import ntable
from netlink.rtnl import RtNetlink
from netlink.uapi import AF_INET, AF_INET6

log = logging.getLogger("pyflannel.neightables")


def read_tables(netns: str | None = None) -> list[ntable.NeighTable]:
    with RtNetlink(netns) as nl:
        rows = nl.dump(ntable.RTM_GETNEIGHTBL, ntable.ntable_dump_body(), ntable.parse_ntable,
                       ntable.RTM_NEWNEIGHTBL)
    return [r for r in rows if r is not None]


def findings(tables: list[ntable.NeighTable], peers: int, families: tuple[int, ...]
             ) -> list[tuple[ntable.NeighTable, str, str]]:
    """(table, problem, fix) for each table of `families` that `peers` would strain."""
    out = []
    for t in tables:
        if t.family in families and (found := ntable.advice(t, peers)) is not None:
            out.append((t, *found))
    return out


class NeighTableWatch:
    """Checks after each change in the peer count; logs each distinct problem once."""

    def __init__(self, ipv4: bool, ipv6: bool) -> None:
        self.families = tuple(f for f, on in ((AF_INET, ipv4), (AF_INET6, ipv6)) if on)
        self._peers = -1
        self._said: set[str] = set()

    def check(self, peers: int) -> None:
        """Run on the netlink thread; never raises (a warning is not worth a failed run)."""
        if peers == self._peers:
            return
        self._peers = peers
        try:
            found = findings(read_tables(), peers, self.families)
        except OSError as exc:
            log.debug("cannot read the neighbour tables: %s", exc)
            return
        now = {f"{t.name}: {problem}; fix: {fix}" for t, problem, fix in found}
        for text in sorted(now - self._said):
            log.warning("neighbour table: %s", text)
        self._said = now
