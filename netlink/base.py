"""Netlink primitives every user shares: attributes, headers, errors, rows. Pure, import-light.

The CNI plugin's in-process path imports this, so stdlib only and nothing heavy
(no `socket`, which pulls enum and selectors; no `typing` at run time: `Row` is
`typing.NamedTuple` for the type checker and a `collections.namedtuple` maker
at run time). Numbers and layouts live in `netlink.uapi`.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterator

from netlink.uapi import (  # noqa: F401  (re-exported: the header vocabulary, `base.<name>`)
    CLONE_NEWNET,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NLA_F_NESTED,
    NLA_TYPE_MASK,
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
    NLMSG_HDRLEN,
    NLMSG_NOOP,
    NLMSGERR,
    NLMSGERR_ATTR_MSG,
    RTATTR,
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
    SOL_NETLINK,
    U32_ATTR,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from typing import NamedTuple as Row
else:
    class _RowMaker(type):
        """`class X(Row): a: int; b: str = ""` makes a namedtuple, as typing.NamedTuple does."""

        def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> type:
            if not bases:
                return super().__new__(mcls, name, bases, ns)
            fields = list(ns.get("__annotations__", {}))
            defaults = [ns[f] for f in fields if f in ns]
            base = namedtuple(name, fields, defaults=defaults, module=ns["__module__"])
            body = {k: v for k, v in ns.items() if k not in fields and k != "__annotations__"}
            return type(name, (base,), dict(body, __slots__=()))

    class Row(metaclass=_RowMaker):
        pass

Buf = bytes | bytearray  # what the parsers accept: a received datagram or our receive buffer


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: Buf) -> str:
    return raw.hex(":")


def rta(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return RTATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def rta_u32(kind: int, value: int) -> bytes:
    return U32_ATTR.pack(8, kind, value)


def rta_u8(kind: int, value: int) -> bytes:
    return rta(kind, bytes([value]))


def strz(kind: int, value: str) -> bytes:
    return rta(kind, value.encode() + b"\0")


def nested(kind: int, *children: bytes) -> bytes:
    return rta(kind | NLA_F_NESTED, b"".join(children))


def nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDRLEN + len(body), kind, flags, seq, 0) + body


def iter_attrs(buf: Buf, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each rtattr in buf[off:end]; nested/byte-order bits masked off."""
    unpack = RTATTR.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4:
            break
        yield kind & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3


def attrs_dict(buf: Buf, off: int, end: int) -> dict[int, bytes]:
    """All attributes of buf[off:end] by type (the last one wins), copied out."""
    return {kind: bytes(buf[a:b]) for kind, a, b in iter_attrs(buf, off, end)}


def iter_msgs(buf: Buf, size: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, body start, end) of each message in buf[:size]."""
    off = 0
    unpack = NLMSG_HDR.unpack_from
    while off + NLMSG_HDRLEN <= size:
        length, kind, flags, seq, _ = unpack(buf, off)
        if length < NLMSG_HDRLEN:
            break
        yield kind, flags, seq, off + NLMSG_HDRLEN, off + length
        off += (length + 3) & ~3


def iter_headers(buf: Buf, size: int, stop: list[int] | None = None
                 ) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(type, flags, seq, port id, body start, end) of each message in buf[:size].

    For readers of notifications, which care who caused a message (the port id).
    `end` may lie past `size` for a truncated last message. The walk stops at a
    malformed header; `stop`, if given, receives the offset where it stopped, so
    `stop[0] < size` means bytes were left that are no message.
    """
    off = 0
    unpack = NLMSG_HDR.unpack_from
    while off + NLMSG_HDRLEN <= size:
        length, kind, flags, seq, pid = unpack(buf, off)
        if length < NLMSG_HDRLEN:
            break
        start = off
        off += (length + 3) & ~3
        yield kind, flags, seq, pid, start + NLMSG_HDRLEN, start + length
    if stop is not None:
        stop[:] = [off]


def parse_error(buf: Buf, off: int, end: int, flags: int) -> tuple[int, int, str]:
    """(errno, seq of the request, extended-ack message) of an NLMSG_ERROR body."""
    (error,) = NLMSGERR.unpack_from(buf, off)
    req_len, _, _, seq, _ = NLMSG_HDR.unpack_from(buf, off + 4)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        tlv = off + 4 + (NLMSG_HDRLEN if flags & NLM_F_CAPPED else req_len)
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
