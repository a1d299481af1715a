"""Has the kernel changed since we last looked? Netlink notifications say, for free.

A full reconcile dumps every route, neighbour and FDB entry, which costs about
0.1 s of CPU with 1000 peers. Drift can only come from a change in the kernel,
and every such change is announced on rtnetlink multicast groups (links,
IPv4 addresses, IPv4 routes, neighbours and FDB), and for nftables on the
netfilter group. So the periodic resync only dumps when something was
announced since the previous dump; the announcements our own writes cause
just trigger one extra, idle, run.

Our own writes are not changes: a route or IPv4 neighbour notification carrying
the backend's netlink port id (`ignore_own`) is ours, and so is an FDB
notification (the vxlan driver sends those with port id 0) for a MAC the
backend announced just before writing it (`expect_fdb`). Without this, every
lease event made the next resync tick do a full dump, and an event arriving
during that dump waited for it (~100 ms with 1000 peers; bench/daemon_latency.py).

The flag is cleared *before* a dump starts, so a change that lands during or
after it is caught by the next one. A lost notification (socket overrun,
ENOBUFS) sets the flag. Callers still force a full run now and then.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("flanneld.kwatch")

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
# Legacy group bitmask: RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
RTMGRP = 0x1 | 0x4 | 0x10 | 0x40
NFNLGRP_NFTABLES = 7
EXPECT_FOR = 2.0  # seconds an announced FDB write may take to show up as a notification


class ChangeFlag:
    """Set whenever the kernel announces a change on one of the watched groups."""

    def __init__(self) -> None:
        self.dirty = True  # nothing seen yet: assume changed
        self.blind = True  # not subscribed (yet): every take() says "changed"
        self.notifications = 0

    def mark(self) -> None:
        self.dirty = True

    def take(self) -> bool:
        """Whether anything changed since the last take(); clears the flag."""
        dirty, self.dirty = self.dirty, False
        return dirty or self.blind


class KernelWatch:
    """Two flags, `routing` (rtnetlink) and `nftables`, fed from the event loop."""

    def __init__(self) -> None:
        self.routing = ChangeFlag()
        self.nftables = ChangeFlag()
        self._socks: list[socket.socket] = []
        self.own_pid = 0
        self._device: Callable[[], int] = lambda: 0
        self._expected: dict[str, float] = {}  # MAC -> until when its FDB notification is ours

    def ignore_own(self, portid: int, device: Callable[[], int] = lambda: 0) -> None:
        """Route and neighbour notifications from this netlink port id are our own writes;
        `device()` is our vxlan device's index (0: none), whose neighbours are all ours."""
        self.own_pid = portid
        self._device = device

    def expect_fdb(self, macs: Iterable[str]) -> None:
        """The backend is about to write these FDB entries (any thread)."""
        until = time.monotonic() + EXPECT_FOR
        for mac in macs:
            self._expected[mac] = until

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Subscribe; False (flags stay set, i.e. always dump) if netlink is unavailable."""
        ok = True
        for proto, flag, groups, member in (
                (NETLINK_ROUTE, self.routing, RTMGRP, None),
                (NETLINK_NETFILTER, self.nftables, 0, NFNLGRP_NFTABLES)):
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                     proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((0, groups))
                if member is not None:
                    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, member)
            except OSError as exc:
                log.warning("cannot watch kernel changes (%s); every resync will dump", exc)
                ok = False
                continue
            loop.add_reader(sock.fileno(), self._drain, sock, flag,
                            self if proto == NETLINK_ROUTE else None)
            self._socks.append(sock)
            flag.blind = False
        return ok

    def _is_own_fdb(self, mac: str) -> bool:
        until = self._expected.pop(mac, None)
        return until is not None and until >= time.monotonic()

    @staticmethod
    def _drain(sock: socket.socket, flag: ChangeFlag, watch: KernelWatch | None = None) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: we missed some; assume the worst
                if exc.errno != errno.ENOBUFS:
                    log.debug("kernel watch: %s", exc)
                flag.mark()
                return
            flag.notifications += 1
            if watch is not None:
                found = relevant(data, watch.own_pid, watch._is_own_fdb, watch._device())
            else:
                found = relevant(data)
            if found:
                if not flag.dirty:
                    log.debug("kernel change announced (netlink message type %d)",
                              _NLMSG.unpack_from(data)[1] if len(data) >= _NLMSG.size else -1)
                flag.mark()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()


_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NUD_PERMANENT = 0x80
AF_INET, AF_BRIDGE = 2, 7


def relevant(data: bytes, own_pid: int = 0,
             own_fdb: Callable[[str], bool] | None = None, own_dev: int = 0) -> bool:
    """Whether a batch of notifications may concern our state.

    Everything counts except neighbour/FDB updates of entries that cannot be
    ours: ARP, ND and bridge learning churn all the time on a busy host (and
    the kernel ages NOARP multicast entries), while every entry we program is
    an IPv4 neighbour or an FDB entry, and permanent; and except our own
    writes: messages from port `own_pid`, FDB entries `own_fdb(mac)` claims.
    Every message is looked at (an own FDB claim is consumed once). Any
    neighbour change on our device `own_dev` counts: the kernel announces the
    deletion of a permanent neighbour with state FAILED, not PERMANENT.
    """
    offset = 0
    found = False
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            return True  # malformed: be safe
        end = offset + length
        offset += (length + 3) & ~3
        if own_pid and pid == own_pid:
            continue
        if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
            found = True
            continue
        body = end - length + _NLMSG.size
        if body + _NDMSG.size > len(data):
            return True
        family, ifindex, state = _NDMSG.unpack_from(data, body)[:3]
        ours = own_dev and ifindex == own_dev and family in (AF_INET, AF_BRIDGE)
        if not ours and not (state & NUD_PERMANENT and family in (AF_INET, AF_BRIDGE)):
            continue
        if family == AF_BRIDGE and own_fdb is not None:
            mac = _lladdr(data, body + _NDMSG.size, min(end, len(data)))
            if mac is not None and own_fdb(mac):
                continue
        found = True
    return found or offset < len(data)  # trailing bytes that are no message: be safe


NDA_LLADDR = 2


def _lladdr(data: bytes, off: int, end: int) -> str | None:
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            return None
        if atype == NDA_LLADDR and alen == 10:
            return data[off + 4:off + 10].hex(":")
        off += (alen + 3) & ~3
    return None
