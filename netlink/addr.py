"""Addresses: RTM_*ADDR bodies and parsers. Pure, import-light (the CNI path loads it).

`addr_body`/`parse_addr` speak IPv4 text for the backends; `msg_new_addr`,
`msg_del_addr` and `parse_addr_entry` any family in packed bytes for the CNI plugin.
"""

from __future__ import annotations

from _socket import inet_aton, inet_ntoa  # not `socket`: it imports enum and selectors

from netlink.base import Buf, Row, iter_attrs, rta, rta_u32
from netlink.uapi import (
    AF_INET,
    IFA_ADDRESS,
    IFA_F_NODAD,
    IFA_F_PERMANENT,
    IFA_FLAGS,
    IFA_LOCAL,
    IFADDRMSG,
    IP4_ATTR,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RT_SCOPE_UNIVERSE,
    RTM_DELADDR,
    RTM_NEWADDR,
)


def addr_body(ifindex: int, ip: str, prefixlen: int) -> bytes:
    raw = inet_aton(ip)
    return (IFADDRMSG.pack(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex)
            + IP4_ATTR.pack(8, IFA_LOCAL, raw) + IP4_ATTR.pack(8, IFA_ADDRESS, raw))


def addr_dump_body(ifindex: int, family: int = AF_INET) -> bytes:
    return IFADDRMSG.pack(family, 0, 0, 0, ifindex)


class AddrEntry(Row):
    ifindex: int
    family: int
    address: bytes  # IFA_LOCAL, else IFA_ADDRESS, packed (4 or 16 bytes)
    prefixlen: int


def parse_addr_entry(buf: Buf, off: int, end: int) -> AddrEntry:
    """An RTM_NEWADDR of any family."""
    family, prefixlen, _, _, ifindex = IFADDRMSG.unpack_from(buf, off)
    local = address = b""
    for kind, a, b in iter_attrs(buf, off + IFADDRMSG.size, end):
        if kind == IFA_LOCAL:
            local = bytes(buf[a:b])
        elif kind == IFA_ADDRESS:
            address = bytes(buf[a:b])
    return AddrEntry(ifindex, family, local or address, prefixlen)


def parse_addr(buf: Buf, off: int, end: int) -> tuple[int, str | None]:
    """(ifindex, "a.b.c.d/len") of an RTM_NEWADDR (None: not IPv4)."""
    e = parse_addr_entry(buf, off, end)
    ok = e.family == AF_INET and len(e.address) == 4
    return e.ifindex, (f"{inet_ntoa(e.address)}/{e.prefixlen}" if ok else None)


def msg_new_addr(index: int, family: int, address: bytes, prefixlen: int,
                 nodad: bool = False) -> tuple[int, int, bytes]:
    flags = IFA_F_PERMANENT | (IFA_F_NODAD if nodad else 0)
    body = (IFADDRMSG.pack(family, prefixlen, flags & 0xFF, 0, index) + rta(IFA_LOCAL, address)
            + rta(IFA_ADDRESS, address) + rta_u32(IFA_FLAGS, flags))
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body


def msg_del_addr(index: int, family: int, address: bytes, prefixlen: int
                 ) -> tuple[int, int, bytes]:
    body = IFADDRMSG.pack(family, prefixlen, 0, 0, index) + rta(IFA_LOCAL, address)
    return RTM_DELADDR, 0, body
