"""rtnetlink messages encoded and decoded with struct: pure, no sockets.

Only the handful of messages and attributes the backends use. Bodies are
returned without the 16-byte nlmsghdr; `netlink.py` adds it (with the
sequence number) when it sends them. Layouts: <linux/netlink.h>,
<linux/rtnetlink.h>, <linux/neighbour.h>, <linux/if_link.h>, <linux/if_addr.h>.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from netlink.base import (  # noqa: F401  (re-exported: callers use `m.<name>`)
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_ECHO,
    NLM_F_EXCL,
    NLM_F_MULTI,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDR,
    NLMSG_NOOP,
    NLMSGERR_ATTR_MSG,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    Buf,
    iter_attrs,
    iter_msgs,
    mac_bytes,
    mac_str,
    nlmsg,
    parse_error,
    rta,
    rta_u8,
    rta_u32,
)

AF_INET, AF_BRIDGE = socket.AF_INET, 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
RTN_UNICAST = 1
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTNH_F_ONLINK = 0x4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_TXQLEN, IFLA_LINKINFO = 1, 3, 4, 13, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFF_UP = 0x1
# IFLA_VXLAN_*
VX_ID, VX_LINK, VX_LOCAL, VX_TTL, VX_TOS, VX_LEARNING = 1, 3, 4, 5, 6, 7
VX_PROXY, VX_RSC, VX_L2MISS, VX_L3MISS, VX_PORT = 11, 12, 13, 14, 15
VX_UDP_ZERO_CSUM6_TX, VX_UDP_ZERO_CSUM6_RX, VX_GBP = 19, 20, 23

_RTA = struct.Struct("=HH")
_NDMSG = struct.Struct("=BBHiHBB")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBi")
# Whole neighbour/FDB bodies in one pack: ndmsg + an IPv4 attribute + a MAC attribute.
_ND_IP_MAC = struct.Struct("=BBHiHBBHH4sHH6s2x")
_ND_IP = struct.Struct("=BBHiHBBHH4s")
_ND_MAC = struct.Struct("=BBHiHBBHH6s2x")
_U32_ATTR = struct.Struct("=HHI")
_IP_ATTR = struct.Struct("=HH4s")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct(">I")


class _Memo(dict[bytes, str]):
    """bytes -> text, remembered: dumps repeat the same few thousand addresses every resync."""

    def __init__(self, convert: Callable[[bytes], str]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, raw: bytes) -> str:
        if len(self) > 1 << 16:
            self.clear()
        text = self[raw] = self.convert(raw)
        return text


_IP_TEXT = _Memo(socket.inet_ntoa)
_MAC_TEXT = _Memo(lambda raw: raw.hex(":"))


# --- neighbours and FDB ---------------------------------------------------------------------


def neigh_body(ifindex: int, ip: str, mac: str | None) -> bytes:
    """`ip neigh replace IP lladdr MAC dev X nud permanent` (mac None: for a delete)."""
    if mac is None:
        return _ND_IP.pack(AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, RTN_UNICAST,
                           8, NDA_DST, socket.inet_aton(ip))
    return _ND_IP_MAC.pack(AF_INET, 0, 0, ifindex, NUD_PERMANENT, 0, RTN_UNICAST,
                           8, NDA_DST, socket.inet_aton(ip), 10, NDA_LLADDR, mac_bytes(mac))


def fdb_body(ifindex: int, mac: str, dst: str | None) -> bytes:
    """`bridge fdb replace MAC dev X dst DST self permanent` (dst None: the whole entry)."""
    if dst is None:
        return _ND_MAC.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0,
                            10, NDA_LLADDR, mac_bytes(mac))
    return _ND_IP_MAC.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0,
                           8, NDA_DST, socket.inet_aton(dst), 10, NDA_LLADDR, mac_bytes(mac))


def neigh_dump_body(family: int, ifindex: int) -> bytes:
    """A dump request filtered by device (strict checking: AF_INET via attr, FDB via header)."""
    if family == AF_BRIDGE:
        return _NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, 0, 0, 0)
    return _NDMSG.pack(family, 0, 0, 0, 0, 0, 0) + rta_u32(NDA_IFINDEX, ifindex)


class NeighRow(NamedTuple):
    family: int
    ifindex: int
    state: int
    flags: int
    dst: str | None
    mac: str | None
    extra: bool  # carries port/VNI/ifindex overrides (FDB): not an entry we would write


# Fast paths: the attribute order the kernel uses for our entries, read in one unpack
# (neigh_fill_info: DST, LLADDR, ...; vxlan_fdb_info: LLADDR, DST, [PORT, VNI, IFINDEX,]
# CACHEINFO; a route with TABLE, DST, GATEWAY, OIF and nothing else). Anything else takes
# the general attribute walk. Resyncs parse thousands of these.
_ND_FAST = struct.Struct("=BBHiHBBHH4sHH6s")
_FDB_FAST = struct.Struct("=BBHiHBBHH6s2xHH4sHH")
_RT_FAST = struct.Struct("=BBBBBBBBIHHIHH4sHH4sHHI")


def parse_neigh(buf: Buf, off: int, end: int) -> NeighRow:
    size = end - off
    if size >= 44:
        if buf[off] == AF_INET:
            (family, _, _, ifindex, state, flags, _, l1, t1, ip, l2, t2, mac
             ) = _ND_FAST.unpack_from(buf, off)
            if t1 == NDA_DST and l1 == 8 and t2 == NDA_LLADDR and l2 == 10:
                return NeighRow(family, ifindex, state, flags, _IP_TEXT[ip], _MAC_TEXT[mac],
                                False)
        elif buf[off] == AF_BRIDGE:
            (family, _, _, ifindex, state, flags, _, l1, t1, mac, l2, t2, ip, _, t3
             ) = _FDB_FAST.unpack_from(buf, off)
            if (t1 == NDA_LLADDR and l1 == 10 and t2 == NDA_DST and l2 == 8
                    and t3 == 3):  # NDA_CACHEINFO next: no port/VNI/ifindex overrides
                return NeighRow(family, ifindex, state, flags, _IP_TEXT[ip], _MAC_TEXT[mac],
                                False)
    return _parse_neigh_any(buf, off, end)


def _parse_neigh_any(buf: Buf, off: int, end: int) -> NeighRow:
    family, _, _, ifindex, state, flags, _ = _NDMSG.unpack_from(buf, off)
    dst = mac = None
    extra = False
    p = off + 12
    unpack = _RTA.unpack_from
    while p + 4 <= end:
        length, kind = unpack(buf, p)
        if length < 4:
            break
        if kind == NDA_DST and length == 8:
            dst = _IP_TEXT[bytes(buf[p + 4:p + 8])]
        elif kind == NDA_LLADDR:
            mac = _MAC_TEXT[bytes(buf[p + 4:p + length])]
        elif 6 <= kind <= 8:  # NDA_PORT, NDA_VNI, NDA_IFINDEX: overrides we never write
            extra = True
        p += (length + 3) & ~3
    return NeighRow(family, ifindex, state, flags, dst, mac, extra)


# --- routes ---------------------------------------------------------------------------------


def route_body(dst_ip: str, dst_len: int, gateway: str, oif: int, *, onlink: bool,
               priority: int = 0, proto: int = 3, delete: bool = False) -> bytes:
    """`ip route replace DST via GW [dev OIF] [onlink]` in the main table (or its delete)."""
    scope = RT_SCOPE_NOWHERE if delete else RT_SCOPE_UNIVERSE
    flags = RTNH_F_ONLINK if onlink else 0
    body = _RTMSG.pack(AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, flags)
    body += _IP_ATTR.pack(8, RTA_DST, socket.inet_aton(dst_ip))
    body += _IP_ATTR.pack(8, RTA_GATEWAY, socket.inet_aton(gateway))
    if oif:
        body += _U32_ATTR.pack(8, RTA_OIF, oif)
    if priority:
        body += _U32_ATTR.pack(8, RTA_PRIORITY, priority)
    return body


def route_dump_body(table: int = RT_TABLE_MAIN) -> bytes:
    return _RTMSG.pack(AF_INET, 0, 0, 0, table, 0, 0, 0, 0)


class RouteRow(NamedTuple):
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


def parse_route(buf: Buf, off: int, end: int) -> RouteRow:
    if end - off == 44:  # rtmsg + TABLE + DST + GATEWAY + OIF: a route like ours
        (_, dst_len, _, _, _, proto, scope, rtype, flags, _, t1, table, _, t2, dst, _, t3,
         gw, _, t4, oif) = _RT_FAST.unpack_from(buf, off)
        if t1 == RTA_TABLE and t2 == RTA_DST and t3 == RTA_GATEWAY and t4 == RTA_OIF:
            return RouteRow(int.from_bytes(dst, "big"), _IP_TEXT[dst], dst_len, table, proto,
                            scope, rtype, flags, oif, _IP_TEXT[gw], 0, False)
    return _parse_route_any(buf, off, end)


def _parse_route_any(buf: Buf, off: int, end: int) -> RouteRow:
    _, dst_len, _, _, table, proto, scope, rtype, flags = _RTMSG.unpack_from(buf, off)
    dst = oif = priority = 0
    dst_text = "0.0.0.0"
    gateway = None
    multipath = False
    p = off + 12
    unpack = _RTA.unpack_from
    while p + 4 <= end:
        length, kind = unpack(buf, p)
        if length < 4:
            break
        if kind == RTA_DST:
            dst = _BE32.unpack_from(buf, p + 4)[0]
            dst_text = _IP_TEXT[bytes(buf[p + 4:p + 8])]
        elif kind == RTA_OIF:
            oif = _U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_GATEWAY:
            gateway = _IP_TEXT[bytes(buf[p + 4:p + 8])]
        elif kind == RTA_PRIORITY:
            priority = _U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_TABLE:
            table = _U32.unpack_from(buf, p + 4)[0]
        elif kind == RTA_MULTIPATH:
            multipath = True
        p += (length + 3) & ~3
    return RouteRow(dst, dst_text, dst_len, table, proto, scope, rtype, flags, oif, gateway,
                    priority, multipath)


# --- addresses ------------------------------------------------------------------------------


def addr_body(ifindex: int, ip: str, prefixlen: int) -> bytes:
    raw = socket.inet_aton(ip)
    return (_IFADDR.pack(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex)
            + _IP_ATTR.pack(8, IFA_LOCAL, raw) + _IP_ATTR.pack(8, IFA_ADDRESS, raw))


def addr_dump_body(ifindex: int) -> bytes:
    return _IFADDR.pack(AF_INET, 0, 0, 0, ifindex)


def parse_addr(buf: Buf, off: int, end: int) -> tuple[int, str | None]:
    """(ifindex, "a.b.c.d/len") of an RTM_NEWADDR."""
    family, prefixlen, _, _, ifindex = _IFADDR.unpack_from(buf, off)
    local = address = None
    for kind, a, b in iter_attrs(buf, off + _IFADDR.size, end):
        if kind == IFA_LOCAL:
            local = socket.inet_ntoa(buf[a:b])
        elif kind == IFA_ADDRESS:
            address = socket.inet_ntoa(buf[a:b])
    ip = local or address
    return ifindex, (f"{ip}/{prefixlen}" if ip and family == AF_INET else None)


# --- links ----------------------------------------------------------------------------------


def link_get_body(name: str | None = None, index: int = 0) -> bytes:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    return body + rta(IFLA_IFNAME, name.encode() + b"\0") if name else body


def link_set_body(index: int, *, up: bool | None = None, mtu: int | None = None,
                  mac: str | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mtu is not None:
        body += rta_u32(IFLA_MTU, mtu)
    if mac is not None:
        body += rta(IFLA_ADDRESS, mac_bytes(mac))
    return body


def vxlan_create_body(name: str, *, vni: int, local: str, link: int, port: int, learning: bool,
                      gbp: bool, mtu: int, mac: str) -> bytes:
    """The RTM_NEWLINK flannel's netlink library sends for its vxlan device (compat §3.1)."""
    data = (rta_u32(VX_ID, vni) + rta_u32(VX_LINK, link) + rta(VX_LOCAL, socket.inet_aton(local))
            + rta_u8(VX_TTL, 0) + rta_u8(VX_TOS, 0) + rta_u8(VX_LEARNING, int(learning))
            + rta_u8(VX_PROXY, 0) + rta_u8(VX_RSC, 0) + rta_u8(VX_L2MISS, 0)
            + rta_u8(VX_L3MISS, 0) + rta_u8(VX_UDP_ZERO_CSUM6_TX, 0)
            + rta_u8(VX_UDP_ZERO_CSUM6_RX, 0))
    if gbp:
        data += rta(VX_GBP, b"")
    if port > 0:  # otherwise the kernel default, 8472
        data += rta(VX_PORT, struct.pack(">H", port))
    info = rta(IFLA_INFO_KIND, b"vxlan") + rta(IFLA_INFO_DATA, data)
    return (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + rta(IFLA_IFNAME, name.encode() + b"\0") + rta_u32(IFLA_MTU, mtu)
            + rta_u32(IFLA_TXQLEN, 0) + rta(IFLA_ADDRESS, mac_bytes(mac))
            + rta(IFLA_LINKINFO, info))


class LinkRow(NamedTuple):
    ifindex: int
    flags: int
    name: str
    mtu: int
    mac: str
    kind: str
    info: dict[int, bytes]  # IFLA_INFO_DATA attributes by type


def parse_link(buf: Buf, off: int, end: int) -> LinkRow:
    _, _, index, flags, _ = _IFINFO.unpack_from(buf, off)
    name = mac = kind = ""
    mtu = 0
    info: dict[int, bytes] = {}
    for k, a, b in iter_attrs(buf, off + _IFINFO.size, end):
        if k == IFLA_IFNAME:
            name = bytes(buf[a:b]).rstrip(b"\0").decode()
        elif k == IFLA_MTU:
            mtu = int.from_bytes(buf[a:b], "little")
        elif k == IFLA_ADDRESS:
            mac = mac_str(buf[a:b])
        elif k == IFLA_LINKINFO:
            for k2, a2, b2 in iter_attrs(buf, a, b):
                if k2 == IFLA_INFO_KIND:
                    kind = bytes(buf[a2:b2]).rstrip(b"\0").decode()
                elif k2 == IFLA_INFO_DATA:
                    info = {k3: bytes(buf[a3:b3]) for k3, a3, b3 in iter_attrs(buf, a2, b2)}
    return LinkRow(index, flags, name, mtu, mac, kind, info)
