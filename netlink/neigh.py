"""Neighbours and FDB entries: RTM_*NEIGH bodies and the parser. Pure, import-light.

Only the backends use these (vxlan's ARP and FDB entries); resyncs parse thousands
of them, so the kernel's usual attribute order is read in one unpack.
"""

from __future__ import annotations

import struct
from _socket import AF_INET6, inet_aton, inet_ntoa, inet_ntop, inet_pton  # not `socket`: enum

from netlink.base import Buf, Row, mac_bytes, mac_str, rta, rta_u32
from netlink.uapi import (
    AF_BRIDGE,
    AF_INET,
    NDA_CACHEINFO,
    NDA_DST,
    NDA_IFINDEX,
    NDA_LLADDR,
    NDA_PORT,
    NDMSG,
    NTF_SELF,
    NUD_PERMANENT,
    RTATTR,
    RTN_UNICAST,
)

# Whole neighbour/FDB bodies in one pack: ndmsg + an IPv4 attribute + a MAC attribute.
_ND_IP_MAC = struct.Struct("=BBHiHBBHH4sHH6s2x")
_ND_IP = struct.Struct("=BBHiHBBHH4s")
_ND_MAC = struct.Struct("=BBHiHBBHH6s2x")


def neigh_body(ifindex: int, ip: str, mac: str | None) -> bytes:
    """`ip neigh replace IP lladdr MAC dev X nud permanent` (mac None: for a delete)."""
    if mac is None:
        return _ND_IP.pack(AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, RTN_UNICAST,
                           8, NDA_DST, inet_aton(ip))
    return _ND_IP_MAC.pack(AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, RTN_UNICAST,
                           8, NDA_DST, inet_aton(ip), 10, NDA_LLADDR, mac_bytes(mac))


def fdb_body(ifindex: int, mac: str, dst: str | None) -> bytes:
    """`bridge fdb replace MAC dev X dst DST self permanent` (dst None: the whole entry)."""
    if dst is None:
        return _ND_MAC.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0,
                            10, NDA_LLADDR, mac_bytes(mac))
    return _ND_IP_MAC.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0,
                           8, NDA_DST, inet_aton(dst), 10, NDA_LLADDR, mac_bytes(mac))


def neigh6_body(ifindex: int, ip: str, mac: str | None) -> bytes:
    """`ip -6 neigh replace IP lladdr MAC dev X nud permanent` (mac None: for a delete)."""
    body = (NDMSG.pack(AF_INET6, 0, 0, ifindex, NUD_PERMANENT, 0, RTN_UNICAST)
            + rta(NDA_DST, inet_pton(AF_INET6, ip)))
    return body + rta(NDA_LLADDR, mac_bytes(mac)) if mac is not None else body


def fdb6_body(ifindex: int, mac: str, dst: str | None) -> bytes:
    """`bridge fdb replace MAC dev X dst DST6 self permanent` (dst None: the whole entry)."""
    body = NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0)
    body += rta(NDA_LLADDR, mac_bytes(mac))
    return body + rta(NDA_DST, inet_pton(AF_INET6, dst)) if dst is not None else body


def neigh_dump_body(family: int, ifindex: int) -> bytes:
    """A dump request filtered by device (strict checking: AF_INET via attr, FDB via header)."""
    if family == AF_BRIDGE:
        return NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, 0, 0, 0)
    return NDMSG.pack(family, 0, 0, 0, 0, 0, 0) + rta_u32(NDA_IFINDEX, ifindex)


class NeighRow(Row):
    family: int
    ifindex: int
    state: int
    flags: int
    dst: str | None
    mac: str | None
    extra: bool  # carries port/VNI/ifindex overrides (FDB): not an entry we would write


# Fast paths: the attribute order the kernel uses for our entries, read in one unpack
# (neigh_fill_info: DST, LLADDR, ...; vxlan_fdb_info: LLADDR, DST, [PORT, VNI, IFINDEX,]
# CACHEINFO). Anything else takes the general attribute walk.
_ND_FAST = struct.Struct("=BBHiHBBHH4sHH6s")
_FDB_FAST = struct.Struct("=BBHiHBBHH6s2xHH4sHH")


def parse_neigh(buf: Buf, off: int, end: int) -> NeighRow:
    size = end - off
    if size >= _FDB_FAST.size:
        if buf[off] == AF_INET:
            (family, _, _, ifindex, state, flags, _, l1, t1, ip, l2, t2, mac
             ) = _ND_FAST.unpack_from(buf, off)
            if t1 == NDA_DST and l1 == 8 and t2 == NDA_LLADDR and l2 == 10:
                return NeighRow(family, ifindex, state, flags, inet_ntoa(ip), mac_str(mac),
                                False)
        elif buf[off] == AF_BRIDGE:
            (family, _, _, ifindex, state, flags, _, l1, t1, mac, l2, t2, ip, _, t3
             ) = _FDB_FAST.unpack_from(buf, off)
            if (t1 == NDA_LLADDR and l1 == 10 and t2 == NDA_DST and l2 == 8
                    and t3 == NDA_CACHEINFO):  # no port/VNI/ifindex overrides before it
                return NeighRow(family, ifindex, state, flags, inet_ntoa(ip), mac_str(mac),
                                False)
    return _parse_neigh_any(buf, off, end)


def _parse_neigh_any(buf: Buf, off: int, end: int) -> NeighRow:
    family, _, _, ifindex, state, flags, _ = NDMSG.unpack_from(buf, off)
    dst = mac = None
    extra = False
    p = off + NDMSG.size
    unpack = RTATTR.unpack_from
    while p + 4 <= end:
        length, kind = unpack(buf, p)
        if length < 4:
            break
        if kind == NDA_DST and length == 8:
            dst = inet_ntoa(bytes(buf[p + 4:p + 8]))
        elif kind == NDA_DST and length == 20:
            dst = inet_ntop(AF_INET6, bytes(buf[p + 4:p + 20]))
        elif kind == NDA_LLADDR:
            mac = mac_str(bytes(buf[p + 4:p + length]))
        elif NDA_PORT <= kind <= NDA_IFINDEX:  # NDA_PORT, NDA_VNI, NDA_IFINDEX: never ours
            extra = True
        p += (length + 3) & ~3
    return NeighRow(family, ifindex, state, flags, dst, mac, extra)
