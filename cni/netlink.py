"""A lean rtnetlink client: just the link, address and route messages the plugin needs.

pyroute2 costs ~200 ms to import and ~0.3 ms per request; this module imports
in about a millisecond and spends a few microseconds encoding each message, so
the plugin's fallback path stays fast and the server's per-ADD cost is
dominated by the kernel. Messages can be batched: the kernel processes the
messages of one datagram in order and acks each.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from _socket import AF_INET, AF_NETLINK, SOCK_CLOEXEC, SOCK_RAW
from _socket import socket as _rawsocket  # not `socket`: it imports enum and selectors
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

# netlink / rtnetlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
NLMSG_ERROR, NLMSG_DONE = 2, 3
F_REQUEST, F_MULTI, F_ACK, F_DUMP = 0x1, 0x2, 0x4, 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
F_ECHO = 0x8
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 16, 18, 26, 28
IFLA_PROMISCUITY = 30
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_INET_CONF, IFLA_BRPORT_MODE, VETH_INFO_PEER = 1, 4, 1
IPV4_DEVCONF_FORWARDING, IPV4_DEVCONF_ARP_NOTIFY = 1, 22
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP, IFF_PROMISC, IF_OPER_UP = 0x1, 0x100, 6
SOL_NETLINK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 11, 12
NLMSGERR_ATTR_MSG, NLM_F_ACK_TLVS = 1, 0x200
NLA_F_NESTED = 0x8000
CLONE_NEWNET = 0x40000000

_HDR = struct.Struct("=IHHII")         # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")     # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")      # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")   # rtmsg
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")


class NetlinkError(OSError):
    """A request the kernel refused; `errno` is set, the message carries the extack text."""


def attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return _ATTR.pack(length, kind) + data + b"\0" * (-length & 3)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def strz(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def parse_attrs(buf: bytes, offset: int = 0,
                wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """Attributes by type; with `wanted`, only those are copied out (a link has ~50)."""
    out: dict[int, bytes] = {}
    end = len(buf)
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            break
        kind &= 0x3FFF
        if wanted is None or kind in wanted:
            out[kind] = buf[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    kind: str
    master: int
    operstate: int
    mtu: int
    flags: int
    peer_index: int  # IFLA_LINK: a veth's peer, as an index in the peer's namespace


@dataclass(frozen=True)
class Addr:
    index: int
    family: int
    address: bytes
    prefixlen: int


@dataclass(frozen=True)
class Route:
    family: int
    dst: bytes
    dst_len: int
    gateway: bytes
    oif: int


_LINK_ATTRS = frozenset({IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER,
                         IFLA_OPERSTATE, IFLA_LINKINFO})


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
    attrs = parse_attrs(body, _IFINFO.size, _LINK_ATTRS)
    kind = ""
    if IFLA_LINKINFO in attrs:
        info = parse_attrs(attrs[IFLA_LINKINFO])
        kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()

    def num(key: int) -> int:
        return _U32.unpack(attrs[key][:4])[0] if key in attrs else 0

    return Link(index=index, name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
                mac=mac_str(attrs.get(IFLA_ADDRESS, b"")), kind=kind, master=num(IFLA_MASTER),
                operstate=attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else 0,
                mtu=num(IFLA_MTU), flags=flags, peer_index=num(IFLA_LINK))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


class Netlink:
    """One NETLINK_ROUTE socket, bound to the namespace it was opened in. Not thread-safe."""

    def __init__(self) -> None:
        self.sock = _rawsocket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # transport -------------------------------------------------------------

    def _send(self, msgs: list[tuple[int, int, bytes]]) -> list[int]:
        out, seqs = [], []
        for kind, flags, body in msgs:
            self.seq += 1
            seqs.append(self.seq)
            out.append(_HDR.pack(_HDR.size + len(body), kind, flags | F_REQUEST, self.seq, 0)
                       + body)
        self.sock.send(b"".join(out))
        return seqs

    def _replies(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(type, flags, seq, body) of every message in the next datagrams, forever."""
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
                yield kind, flags, seq, data[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3

    def batch(self, msgs: list[tuple[int, int, bytes]],
              echoed: list[tuple[int, bytes]] | None = None) -> list[NetlinkError | None]:
        """Send requests in one datagram; the per-request outcome (None = acked).

        Messages the kernel echoes back (requests sent with F_ECHO) go to `echoed`.
        """
        seqs = self._send([(k, f | F_ACK, b) for k, f, b in msgs])
        results: dict[int, NetlinkError | None] = {}
        for kind, _flags, seq, body in self._replies():
            if seq not in seqs:
                continue
            if kind == NLMSG_ERROR:
                results[seq] = _error(body, _flags)
                if len(results) == len(seqs):
                    break
            elif echoed is not None:
                echoed.append((kind, body))
        return [results[s] for s in seqs]

    def request(self, kind: int, flags: int, body: bytes) -> None:
        err = self.batch([(kind, flags, body)])[0]
        if err is not None:
            raise err

    def dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        (seq,) = self._send([(kind, F_DUMP, body)])
        found: list[tuple[int, bytes]] = []
        for mkind, flags, mseq, mbody in self._replies():
            if mseq != seq:
                continue
            if mkind == NLMSG_DONE:
                return found
            if mkind == NLMSG_ERROR:
                err = _error(mbody, flags)
                if err is not None:
                    raise err
                return found
            found.append((mkind, mbody))
        return found  # pragma: no cover (the loop above never ends by itself)

    def get_reply(self, kind: int, body: bytes) -> bytes | None:
        """One non-dump GET; None if the object does not exist (ENODEV/ENOENT)."""
        (seq,) = self._send([(kind, 0, body)])
        for mkind, flags, mseq, mbody in self._replies():
            if mseq != seq:
                continue
            if mkind == NLMSG_ERROR:
                err = _error(mbody, flags)
                if err is not None and err.errno in (errno.ENODEV, errno.ENOENT):
                    return None
                if err is not None:
                    raise err
                return None
            return mbody
        return None  # pragma: no cover

    # links -----------------------------------------------------------------

    def link(self, name: str = "", index: int = 0) -> Link | None:
        body = ifinfo(index) + (strz(IFLA_IFNAME, name) if name and not index else b"")
        reply = self.get_reply(RTM_GETLINK, body)
        return parse_link(reply) if reply is not None else None

    def links(self) -> list[Link]:
        return [parse_link(b) for k, b in self.dump(RTM_GETLINK, ifinfo()) if k == RTM_NEWLINK]

    def delete_link(self, name: str = "", index: int = 0) -> bool:
        """Delete a link; False if it was already gone."""
        body = ifinfo(index) + (strz(IFLA_IFNAME, name) if name and not index else b"")
        err = self.batch([(RTM_DELLINK, 0, body)])[0]
        if err is None:
            return True
        if err.errno in (errno.ENODEV, errno.ENOENT):
            return False
        raise err

    def set_down(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, ifinfo(index, 0, IFF_UP))

    # addresses and routes --------------------------------------------------

    def addrs(self, index: int, family: int = 0) -> list[Addr]:
        found = []
        for kind, body in self.dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, index)):
            if kind != RTM_NEWADDR:
                continue
            fam, plen, _flags, _scope, idx = _IFADDR.unpack_from(body)
            attrs = parse_attrs(body, _IFADDR.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS, b"")
            if idx == index or not index:
                found.append(Addr(idx, fam, raw, plen))
        return found

    def routes(self, family: int) -> list[Route]:
        found = []
        body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)
        for kind, msg in self.dump(RTM_GETROUTE, body):
            if kind != 24:
                continue
            fam, dst_len, _s, _t, table, _p, _sc, rtype, _f = _RTMSG.unpack_from(msg)
            attrs = parse_attrs(msg, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = _U32.unpack(attrs[RTA_TABLE][:4])[0]
            if table != RT_TABLE_MAIN or rtype != RTN_UNICAST:
                continue
            oif = _U32.unpack(attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else 0
            found.append(Route(fam, attrs.get(RTA_DST, b""), dst_len,
                               attrs.get(RTA_GATEWAY, b""), oif))
        return found


def _error(body: bytes, flags: int) -> NetlinkError | None:
    code = struct.unpack_from("=i", body)[0]
    if code == 0:
        return None
    text = os.strerror(-code)
    if flags & NLM_F_ACK_TLVS:
        # The extended ack follows the echoed request header (capped: header only).
        inner_len = _HDR.unpack_from(body, 4)[0] if not flags & 0x100 else _HDR.size
        tlvs = parse_attrs(body, 4 + ((inner_len + 3) & ~3))
        if NLMSGERR_ATTR_MSG in tlvs:
            detail = tlvs[NLMSGERR_ATTR_MSG].rstrip(b"\0").decode(errors="replace")
            text = f"{text}: {detail}"
    return NetlinkError(-code, text)


# message builders (pure; batched by callers) -------------------------------

def msg_new_bridge(name: str, mtu: int, mac: str) -> tuple[int, int, bytes]:
    body = (ifinfo(0, IFF_UP, IFF_UP) + strz(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac_bytes(mac))
            + (u32(IFLA_MTU, mtu) if mtu else b"")
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_KIND, "bridge")))
    return RTM_NEWLINK, F_CREATE | F_EXCL, body


def msg_new_veth(name: str, mac: str, mtu: int, master: int, peer_name: str, peer_mac: str,
                 peer_netns_fd: int) -> tuple[int, int, bytes]:
    """A veth pair, host end up and enslaved, peer created (down) straight in its netns.

    The peer cannot be created up: veth_open() refuses (ENOTCONN) until the
    pair is linked, which happens after the peer is configured.
    """
    mtu_attr = u32(IFLA_MTU, mtu) if mtu else b""
    peer = (ifinfo() + strz(IFLA_IFNAME, peer_name)
            + attr(IFLA_ADDRESS, mac_bytes(peer_mac)) + mtu_attr
            + u32(IFLA_NET_NS_FD, peer_netns_fd))
    body = (ifinfo(0, IFF_UP, IFF_UP) + strz(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac_bytes(mac))
            + mtu_attr + u32(IFLA_MASTER, master)
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_KIND, "veth"),
                     nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))))
    return RTM_NEWLINK, F_CREATE | F_EXCL, body


def msg_hairpin(index: int, on: bool, name: str = "") -> tuple[int, int, bytes]:
    """Hairpin on a bridge port, by index or (index 0) by name: batchable with its creation."""
    body = (ifinfo(index) + (strz(IFLA_IFNAME, name) if name and not index else b"")
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_SLAVE_KIND, "bridge"),
                     nested(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_MODE, bytes([int(on)])))))
    return RTM_NEWLINK, 0, body


def msg_up(index: int) -> tuple[int, int, bytes]:
    return RTM_NEWLINK, 0, ifinfo(index, IFF_UP, IFF_UP)


def msg_promisc(index: int) -> tuple[int, int, bytes]:
    return RTM_NEWLINK, 0, ifinfo(index, IFF_PROMISC, IFF_PROMISC)


def msg_inet_conf(index: int, values: dict[int, int]) -> tuple[int, int, bytes]:
    conf = nested(IFLA_INET_CONF, *(u32(k, v) for k, v in values.items()))
    return RTM_NEWLINK, 0, ifinfo(index) + nested(IFLA_AF_SPEC, nested(AF_INET, conf))


def msg_new_addr(index: int, family: int, address: bytes, prefixlen: int,
                 nodad: bool = False) -> tuple[int, int, bytes]:
    flags = IFA_F_PERMANENT | (IFA_F_NODAD if nodad else 0)
    body = (_IFADDR.pack(family, prefixlen, flags & 0xFF, 0, index) + attr(IFA_LOCAL, address)
            + attr(IFA_ADDRESS, address) + u32(IFA_FLAGS, flags))
    return RTM_NEWADDR, F_CREATE | F_EXCL, body


def msg_del_addr(index: int, family: int, address: bytes, prefixlen: int
                 ) -> tuple[int, int, bytes]:
    body = _IFADDR.pack(family, prefixlen, 0, 0, index) + attr(IFA_LOCAL, address)
    return RTM_DELADDR, 0, body


def msg_new_route(oif: int, family: int, dst: bytes, dst_len: int,
                  gateway: bytes | None) -> tuple[int, int, bytes]:
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = (_RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
            + (attr(RTA_DST, dst) if dst_len else b"") + u32(RTA_OIF, oif)
            + (attr(RTA_GATEWAY, gateway) if gateway else b""))
    return RTM_NEWROUTE, F_CREATE | F_EXCL, body


# namespaces ----------------------------------------------------------------

_libc: Any = None  # ctypes.CDLL, loaded on first use


def setns(fd: int) -> None:
    import ctypes
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns_fd: int) -> Iterator[None]:
    """Switch this thread into a netns for the block, and back (or die trying)."""
    home = _home_ns()
    setns(netns_fd)
    try:
        yield
    finally:
        try:
            setns(home)
        except OSError:  # a thread stuck in a pod's netns must not do host work
            os._exit(70)


_homes = threading.local()


def _home_ns() -> int:
    """This thread's own netns, opened once per thread (threads start in the host's)."""
    fd: int | None = getattr(_homes, "fd", None)
    if fd is None:
        fd = _homes.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return fd


def netlink_in(netns_fd: int) -> Netlink:
    """A netlink socket that lives in another namespace (opened there, used from here)."""
    with entered(netns_fd):
        return Netlink()
