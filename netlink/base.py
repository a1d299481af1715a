"""Netlink primitives shared by the backends and the CNI plugin: pure, import-light.

The CNI's in-process fallback imports this, so stdlib only and nothing heavy
(no `socket`, which pulls enum and selectors; no `typing` at run time).
Layouts: <linux/netlink.h>, <linux/rtnetlink.h>.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Buf = bytes | bytearray  # what the parsers accept: a received datagram or our receive buffer

# nlmsghdr
NLMSG_HDR = struct.Struct("=IHHII")
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in NLMSG_ERROR replies
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 10, 11, 12
CLONE_NEWNET = 0x40000000

_RTA = struct.Struct("=HH")
_U32_ATTR = struct.Struct("=HHI")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: Buf) -> str:
    return raw.hex(":")


def rta(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return _RTA.pack(length, kind) + data + b"\0" * (-length % 4)


def rta_u32(kind: int, value: int) -> bytes:
    return _U32_ATTR.pack(8, kind, value)


def rta_u8(kind: int, value: int) -> bytes:
    return rta(kind, bytes([value]))


def strz(kind: int, value: str) -> bytes:
    return rta(kind, value.encode() + b"\0")


def nested(kind: int, *children: bytes) -> bytes:
    return rta(kind | NLA_F_NESTED, b"".join(children))


def nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG_HDR.pack(16 + len(body), kind, flags, seq, 0) + body


def iter_attrs(buf: Buf, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each rtattr in buf[off:end]; nested/byte-order bits masked off."""
    unpack = _RTA.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4:
            break
        yield kind & 0x3FFF, off + 4, off + length
        off += (length + 3) & ~3


def iter_msgs(buf: Buf, size: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, body start, end) of each message in buf[:size]."""
    off = 0
    unpack = NLMSG_HDR.unpack_from
    while off + 16 <= size:
        length, kind, flags, seq, _ = unpack(buf, off)
        if length < 16:
            break
        yield kind, flags, seq, off + 16, off + length
        off += (length + 3) & ~3


def parse_error(buf: Buf, off: int, end: int, flags: int) -> tuple[int, int, str]:
    """(errno, seq of the request, extended-ack message) of an NLMSG_ERROR."""
    (error,) = struct.unpack_from("=i", buf, off)
    _, _, _, seq, _ = NLMSG_HDR.unpack_from(buf, off + 4)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        tlv = off + 4 + (16 if flags & NLM_F_CAPPED else NLMSG_HDR.unpack_from(buf, off + 4)[0])
        for kind, a, b in iter_attrs(buf, tlv, end):
            if kind == NLMSGERR_ATTR_MSG:
                text = bytes(buf[a:b]).rstrip(b"\0").decode(errors="replace")
    return -error, seq, text


class NetlinkError(OSError):
    """A request the kernel refused: errno, what we asked (optional), the extended-ack text.

    Message: "what: strerror (text)" with `what`, else "strerror: text".
    """

    def __init__(self, err: int, what: str = "", text: str = "") -> None:
        msg = os.strerror(err)
        if what:
            msg = f"{what}: {msg} ({text})" if text else f"{what}: {msg}"
        elif text:
            msg = f"{msg}: {text}"
        super().__init__(err, msg)
        self.text = text


_libc: Any = None  # ctypes.CDLL, loaded on first use


def setns(fd: int, where: str = "") -> None:
    """Switch the calling thread into the network namespace open at `fd`."""
    import ctypes
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns{f'({where})' if where else ''}: {os.strerror(err)}")
