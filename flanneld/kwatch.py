"""Has the kernel changed since we last looked? Netlink notifications say, for free.

A full reconcile dumps every route, neighbour and FDB entry, which costs about
0.1 s of CPU with 1000 peers. Drift can only come from a change in the kernel,
and every such change is announced on rtnetlink multicast groups (links,
IPv4 and, with IPv6 on, IPv6 addresses and routes, neighbours and FDB), and for nftables on the
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
import threading
import time
from collections.abc import Callable, Iterable

from netlink.base import iter_attrs, iter_headers
from netlink.uapi import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    NDA_LLADDR,
    NDMSG,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_NETFILTER,
    NETLINK_ROUTE,
    NFNLGRP_NFTABLES,
    NLMSG_HDR,
    NUD_FAILED,
    NUD_PERMANENT,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    SOL_NETLINK,
)

log = logging.getLogger("flanneld.kwatch")

RTMGRP = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
OURS = (AF_INET, AF_INET6, AF_BRIDGE)  # the neighbour families we program
RTMGRP6 = RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE  # subscribed when IPv6 is enabled
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
        self._expect_lock = threading.Lock()  # the backend's thread adds, the loop takes

    def ignore_own(self, portid: int, device: Callable[[], int] = lambda: 0) -> None:
        """Route and neighbour notifications from this netlink port id are our own writes;
        `device()` is our vxlan device's index (0: none), whose neighbours are all ours."""
        self.own_pid = portid
        self._device = device

    def expect_fdb(self, macs: Iterable[str]) -> None:
        """The backend is about to write these FDB entries (any thread)."""
        now = time.monotonic()
        until = now + EXPECT_FOR
        with self._expect_lock:
            if len(self._expected) > 256:  # lost notifications (ENOBUFS) leave entries
                self._expected = {m: t for m, t in self._expected.items() if t >= now}
            for mac in macs:
                self._expected[mac] = until

    def start(self, loop: asyncio.AbstractEventLoop, *, ipv6: bool = False) -> bool:
        """Subscribe; False (flags stay set, i.e. always dump) if netlink is unavailable.
        `ipv6`: IPv6 routes and addresses count too (the node programs IPv6)."""
        ok = True
        for proto, flag, groups, member in (
                (NETLINK_ROUTE, self.routing, RTMGRP | (RTMGRP6 if ipv6 else 0), None),
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
        with self._expect_lock:
            until = self._expected.pop(mac, None)
            if not self._expected:
                self._expected = {}  # an emptied dict keeps its table: one slot per peer
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
                              NLMSG_HDR.unpack_from(data)[1] if len(data) >= NLMSG_HDR.size else -1)
                flag.mark()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self._socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()


def relevant(data: bytes, own_pid: int = 0,
             own_fdb: Callable[[str], bool] | None = None, own_dev: int = 0) -> bool:
    """Whether a batch of notifications may concern our state.

    Everything counts except neighbour/FDB updates of entries that cannot be
    ours: ARP, ND and bridge learning churn all the time on a busy host (and
    the kernel ages NOARP multicast entries), while every entry we program is
    a neighbour (IPv4 or IPv6) or an FDB entry, and permanent; and except our own
    writes: messages from port `own_pid`, FDB entries `own_fdb(mac)` claims.
    Every message is looked at (an own FDB claim is consumed once). Any
    neighbour change on our device `own_dev` counts: the kernel announces the
    deletion of a permanent neighbour with state FAILED, not PERMANENT, from the
    port that asked for it (ours, or `ip neigh del`'s). The entry's destruction that
    follows (RTM_DELNEIGH, FAILED, port 0) repeats that and is not counted again:
    counted, it made every lease removal look like drift, and the next resync tick
    dump the kernel (a 5000-peer dump the next events then waited for).
    """
    size = len(data)
    stop = [0]
    found = False
    for kind, _flags, _seq, pid, body, end in iter_headers(data, size, stop):
        if own_pid and pid == own_pid:
            continue
        if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
            found = True
            continue
        if body + NDMSG.size > size:
            return True
        family, _, _, ifindex, state, _, _ = NDMSG.unpack_from(data, body)
        ours = own_dev and ifindex == own_dev and family in OURS
        if (ours and kind == RTM_DELNEIGH and not pid and state & NUD_FAILED
                and family != AF_BRIDGE):
            continue  # the destruction after a delete already announced (see above)
        if not ours and not (state & NUD_PERMANENT and family in OURS):
            continue
        if family == AF_BRIDGE and own_fdb is not None:
            mac = _lladdr(data, body + NDMSG.size, min(end, size))
            if mac is not None and own_fdb(mac):
                continue
        found = True
    return found or stop[0] < size  # a malformed header, or trailing bytes: be safe


def _lladdr(data: bytes, off: int, end: int) -> str | None:
    for kind, a, b in iter_attrs(data, off, end):
        if kind == NDA_LLADDR and b - a == 6:
            return data[a:b].hex(":")
    return None
