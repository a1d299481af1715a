"""Routes: RTM_*ROUTE bodies and parsers. Pure, import-light (the CNI path loads it).

`route_body`/`parse_route` are the backends' IPv4 routes (parsed by the thousand on a
resync: a one-unpack fast path for routes shaped like ours); `msg_new_route` and
`parse_route_entry` any family in packed bytes, for the CNI plugin.
"""

from __future__ import annotations

import struct
from _socket import AF_INET6, inet_aton, inet_ntoa, inet_pton  # not `socket`: enum, selectors

from netlink.base import Buf, Row, iter_attrs, rta, rta_u32
from netlink.uapi import (
    AF_INET,
    BE32,
    IP4_ATTR,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_OIF,
    RTA_PRIORITY,
    RTA_TABLE,
    RTATTR,
    RTM_NEWROUTE,
    RTMSG,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    U32,
    U32_ATTR,
)


def route_body(dst_ip: str, dst_len: int, gateway: str, oif: int, *, onlink: bool,
               priority: int = 0, proto: int = RTPROT_BOOT, delete: bool = False) -> bytes:
    """`ip route replace DST via GW [dev OIF] [onlink]` in the main table (or its delete)."""
    scope = RT_SCOPE_NOWHERE if delete else RT_SCOPE_UNIVERSE
    flags = RTNH_F_ONLINK if onlink else 0
    body = RTMSG.pack(AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, flags)
    body += IP4_ATTR.pack(8, RTA_DST, inet_aton(dst_ip))
    body += IP4_ATTR.pack(8, RTA_GATEWAY, inet_aton(gateway))
    if oif:
        body += U32_ATTR.pack(8, RTA_OIF, oif)
    if priority:
        body += U32_ATTR.pack(8, RTA_PRIORITY, priority)
    return body


def route6_body(dst_ip: str, dst_len: int, gateway: str, oif: int, *, onlink: bool,
                proto: int = RTPROT_BOOT, delete: bool = False) -> bytes:
    """`ip -6 route replace DST via GW [dev OIF] [onlink]` in the main table (or its delete)."""
    scope = RT_SCOPE_NOWHERE if delete else RT_SCOPE_UNIVERSE
    body = RTMSG.pack(AF_INET6, dst_len, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST,
                      RTNH_F_ONLINK if onlink else 0)
    body += rta(RTA_DST, inet_pton(AF_INET6, dst_ip)) + rta(RTA_GATEWAY,
                                                             inet_pton(AF_INET6, gateway))
    return body + rta_u32(RTA_OIF, oif) if oif else body


def route_dump_body(table: int = RT_TABLE_MAIN, family: int = AF_INET) -> bytes:
    return RTMSG.pack(family, 0, 0, 0, table, 0, 0, 0, 0)


class RouteRow(Row):
    dst: int  # network address as an int, for cheap "inside the Network" checks
    dst_text: str
    dst_len: int
    table: int
    proto: int
    scope: int
    rtype: int
    flags: int
    oif: int
    gateway: str | None
    priority: int
    multipath: bool

    @property
    def cidr(self) -> str:
        return f"{self.dst_text}/{self.dst_len}"


# rtmsg + TABLE + DST + GATEWAY + OIF, in the kernel's attribute order: a route like ours
_RT_FAST = struct.Struct("=BBBBBBBBIHHIHH4sHH4sHHI")


def parse_route(buf: Buf, off: int, end: int) -> RouteRow:
    """An IPv4 RTM_NEWROUTE."""
    if end - off == _RT_FAST.size:
        (_, dst_len, _, _, _, proto, scope, rtype, flags, _, t1, table, _, t2, dst, _, t3,
         gw, _, t4, oif) = _RT_FAST.unpack_from(buf, off)
        if t1 == RTA_TABLE and t2 == RTA_DST and t3 == RTA_GATEWAY and t4 == RTA_OIF:
            return RouteRow(int.from_bytes(dst, "big"), inet_ntoa(dst), dst_len, table, proto,
                            scope, rtype, flags, oif, inet_ntoa(gw), 0, False)
    return _parse_route_any(buf, off, end)


def _parse_route_any(buf: Buf, off: int, end: int) -> RouteRow:
    _, dst_len, _, _, table, proto, scope, rtype, flags = RTMSG.unpack_from(buf, off)
    dst = oif = priority = 0
    dst_text = "0.0.0.0"
    gateway = None
    multipath = False
    p = off + RTMSG.size
    unpack = RTATTR.unpack_from
    while p + 4 <= end:
        length, kind = unpack(buf, p)
        if length < 4:
            break
        if kind == RTA_DST:
            dst = BE32.unpack_from(buf, p + 4)[0]
            dst_text = inet_ntoa(bytes(buf[p + 4:p + 8]))
        elif kind == RTA_OIF:
            oif = U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_GATEWAY:
            gateway = inet_ntoa(bytes(buf[p + 4:p + 8]))
        elif kind == RTA_PRIORITY:
            priority = U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_TABLE:
            table = U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_MULTIPATH:
            multipath = True
        p += (length + 3) & ~3
    return RouteRow(dst, dst_text, dst_len, table, proto, scope, rtype, flags, oif, gateway,
                    priority, multipath)


class RouteEntry(Row):
    family: int
    dst: bytes  # packed; b"" for a default route
    dst_len: int
    gateway: bytes  # packed; b"" without one
    oif: int
    table: int
    rtype: int


def parse_route_entry(buf: Buf, off: int, end: int) -> RouteEntry:
    """An RTM_NEWROUTE of any family (RTA_TABLE, when present, overrides rtm_table)."""
    family, dst_len, _, _, table, _, _, rtype, _ = RTMSG.unpack_from(buf, off)
    dst = gateway = b""
    oif = 0
    for kind, a, b in iter_attrs(buf, off + RTMSG.size, end):
        if kind == RTA_DST:
            dst = bytes(buf[a:b])
        elif kind == RTA_GATEWAY:
            gateway = bytes(buf[a:b])
        elif kind == RTA_OIF:
            oif = U32.unpack_from(buf, a)[0]
        elif kind == RTA_TABLE:
            table = U32.unpack_from(buf, a)[0]
    return RouteEntry(family, dst, dst_len, gateway, oif, table, rtype)


def msg_new_route(oif: int, family: int, dst: bytes, dst_len: int,
                  gateway: bytes | None) -> tuple[int, int, bytes]:
    """A route in the main table via `gateway` (None: on-link, scope link) out of `oif`."""
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = (RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
            + (rta(RTA_DST, dst) if dst_len else b"") + rta_u32(RTA_OIF, oif)
            + (rta(RTA_GATEWAY, gateway) if gateway else b""))
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body
