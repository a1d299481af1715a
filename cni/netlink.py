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

from netlink import base as nlbase

# Shared, import-light primitives; those other modules use are re-exported as `nl.<name>`.
from netlink.base import (
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    SOL_NETLINK,
    NetlinkError,
    iter_attrs,
    iter_msgs,
    mac_bytes,
    mac_str,
    nested,
    parse_error,
    setns,
    strz,
)
from netlink.base import NLM_F_ACK as F_ACK
from netlink.base import NLM_F_CREATE as F_CREATE
from netlink.base import NLM_F_DUMP as F_DUMP
from netlink.base import NLM_F_EXCL as F_EXCL
from netlink.base import NLM_F_REQUEST as F_REQUEST
from netlink.base import NLMSG_HDR as _HDR
from netlink.base import rta as attr
from netlink.base import rta_u32 as u32

CLONE_NEWNET, F_ECHO = nlbase.CLONE_NEWNET, nlbase.NLM_F_ECHO

# rtnetlink constants only the plugin uses (linux/if_link.h, linux/if_addr.h, linux/rtnetlink.h)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 16, 18, 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_INET_CONF, IFLA_BRPORT_MODE, VETH_INFO_PEER = 1, 4, 1
IPV4_DEVCONF_FORWARDING, IPV4_DEVCONF_ARP_NOTIFY = 1, 22
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP, IFF_PROMISC, IF_OPER_UP = 0x1, 0x100, 6
IFLA_PROMISCUITY = 30

_IFINFO = struct.Struct("=BxHiII")     # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")      # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")   # rtmsg
_U32 = struct.Struct("=I")


def parse_attrs(buf: bytes, offset: int = 0,
                wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """Attributes by type; with `wanted`, only those are copied out (a link has ~50)."""
    return {kind: buf[a:b] for kind, a, b in iter_attrs(buf, offset, len(buf))
            if wanted is None or kind in wanted}


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
            for kind, flags, seq, a, b in iter_msgs(data, len(data)):
                yield kind, flags, seq, data[a:b]

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
    err, _seq, text = parse_error(body, 0, len(body), flags)
    return NetlinkError(err, text=text) if err else None


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
