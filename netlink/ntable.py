"""The kernel's neighbour tables (ARP, NDISC): their GC thresholds and entry counts. Pure.

`ip ntable show` reads them with an RTM_GETNEIGHTBL dump. The thresholds are the
sysctls `net.ipv4.neigh.default.gc_thresh1..3` (and `net.ipv6...`): one table per
family for the whole kernel, shared by every network namespace, which is why a
network namespace has no gc_thresh files under /proc/sys but netlink still tells.
Above gc_thresh3 the kernel refuses new entries ("neighbor table overflow"); above
gc_thresh2 it collects aggressively. Each peer a node sends to directly (vxlan's and
host-gw's underlay next hops) needs one entry.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from netlink.base import Buf, iter_attrs
from netlink.uapi import AF_INET, AF_INET6

RTM_GETNEIGHTBL = 66
RTM_NEWNEIGHTBL = 64
NDTA_NAME, NDTA_THRESH1, NDTA_THRESH2, NDTA_THRESH3, NDTA_CONFIG = 1, 2, 3, 4, 5
NDTMSG = struct.Struct("=BxH")
_U32 = struct.Struct("=I")
# struct ndt_config: key_len, entry_size, entries, last_flush, last_rand, hash_rnd,
# hash_mask, hash_chain_gc, proxy_qlen
_CONFIG = struct.Struct("=HHIIIIIII")
SYSCTL = {AF_INET: "net.ipv4.neigh.default", AF_INET6: "net.ipv6.neigh.default"}


class NeighTable(NamedTuple):
    family: int
    name: str  # "arp_cache", "ndisc_cache"
    thresh1: int
    thresh2: int
    thresh3: int
    entries: int  # in use now, all namespaces together


def ntable_dump_body(family: int = 0) -> bytes:
    return NDTMSG.pack(family, 0)


def parse_ntable(buf: Buf, off: int, end: int) -> NeighTable | None:
    """One RTM_NEWNEIGHTBL; None for the per-device parameter messages the dump also holds."""
    family = buf[off]
    name, th, entries = "", [0, 0, 0], 0
    have = False
    for kind, a, b in iter_attrs(buf, off + NDTMSG.size, end):
        if kind == NDTA_NAME:
            name = bytes(buf[a:b]).rstrip(b"\0").decode()
        elif NDTA_THRESH1 <= kind <= NDTA_THRESH3:
            th[kind - NDTA_THRESH1] = _U32.unpack_from(buf, a)[0]
            have = True
        elif kind == NDTA_CONFIG and b - a >= _CONFIG.size:
            entries = _CONFIG.unpack_from(buf, a)[2]
    if not have or not name:
        return None
    return NeighTable(family, name, th[0], th[1], th[2], entries)


HEADROOM = 256  # entries besides the peers: local pods on cni0, the underlay's routers


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def advice(table: NeighTable, peers: int) -> tuple[str, str] | None:
    """(problem, fix) when `peers` need more of `table` than it comfortably gives: their
    entries plus headroom above gc_thresh2 (constant collection, churn) or near
    gc_thresh3 (new entries refused: peers unreachable although programmed)."""
    need = peers + HEADROOM
    if need <= table.thresh2:
        return None
    sysctl = SYSCTL.get(table.family, "net.ipv4.neigh.default")
    t1, t2 = _pow2(need), 2 * _pow2(need)
    t3 = 2 * t2
    where = ("more than" if need >= table.thresh3 else
             "near" if need >= table.thresh3 * 0.9 else "")
    problem = (f"{peers} peers need about {need} {table.name} entries, "
               + (f"{where} gc_thresh3 {table.thresh3}: the kernel refuses new entries past "
                  "it (\"neighbor table overflow\"), and peers go unreachable though programmed"
                  if where else f"above gc_thresh2 {table.thresh2}: the kernel collects "
                  "entries aggressively and re-resolves peers"))
    fix = (f"sysctl -w {sysctl}.gc_thresh1={t1} {sysctl}.gc_thresh2={t2} "
           f"{sysctl}.gc_thresh3={t3} (the table is shared by every namespace of the host; "
           "persist it in /etc/sysctl.d/)")
    return problem, fix
