"""The one rtnetlink socket: batches, dumps, single GETs, and errno -> OSError mapping.

Many requests go out in one sendmsg; the kernel handles them one after the
other and answers only failures (no NLM_F_ACK on the requests), then a final
NLMSG_NOOP carrying NLM_F_ACK marks the end of the batch. Each error comes
back with the sequence number of the request it belongs to, so a batch of
3000 entries costs a few syscalls instead of 3000 round trips, and one bad
entry never hides the outcome of the others. Requests sent with NLM_F_ECHO
have the kernel's copy of what it made handed back (`batch(..., echoed)`).

Used by the backends (thousands of entries per resync), flannelctl, and the
CNI plugin (a handful per pod, in-process path included), so import-light:
`_socket` (not `socket`, which pulls enum and selectors), no `typing` at run
time. A socket can be opened in another namespace: by name or path (in a
short-lived thread, `call_in_netns`), or by an open netns fd (`entered`).
"""

from __future__ import annotations

import errno as errno_mod
import threading
from _socket import SOCK_CLOEXEC, SOCK_RAW
from _socket import socket as _rawsocket
from collections.abc import Callable, Iterator, Sequence

from netlink.addr import AddrEntry, addr_dump_body, parse_addr_entry
from netlink.base import Buf, NetlinkError, iter_msgs, nlmsg, parse_error
from netlink.link import LinkRow, link_by, msg_down, parse_link
from netlink.netns import call_in_netns, entered
from netlink.route import RouteEntry, parse_route_entry, route_dump_body
from netlink.uapi import (
    AF_NETLINK,
    AF_UNSPEC,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDR,
    NLMSG_HDRLEN,
    NLMSG_NOOP,
    RT_TABLE_MAIN,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTN_UNICAST,
    SO_RCVBUF,
    SO_RCVBUFFORCE,
    SO_SNDBUF,
    SOL_NETLINK,
    SOL_SOCKET,
)

__all__ = ["CHUNK", "OK", "NetlinkError", "Result", "RtNetlink", "call_in_netns"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

CHUNK = 512  # requests per sendmsg: bounded so even all-failing chunks fit the receive buffer
RCVBUF = 8 << 20
SNDBUF = 1 << 20
RECV_SIZE = 64 << 10  # the kernel fills at most 32 KiB per dump skb
_ABSENT = (errno_mod.ENODEV, errno_mod.ENOENT)  # what a GET or DEL of a missing object says

Result = tuple[int, str]  # (errno, extended-ack text) of one request; errno 0: it succeeded
OK: Result = (0, "")
Request = tuple[int, int, bytes]  # (type, flags, body)


class RtNetlink:
    """One NETLINK_ROUTE socket; thread-safe (one lock), synchronous.

    `netns`: None (ours), a name under /run/netns or a path, or an open netns fd.
    """

    def __init__(self, netns: str | int | None = None, timeout: float | None = 10.0) -> None:
        self.netns = netns
        if netns is None:
            self._sock = self._open()
        elif isinstance(netns, int):
            with entered(netns):
                self._sock = self._open()
        else:
            self._sock = call_in_netns(netns, self._open)
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)

    @staticmethod
    def _open() -> _rawsocket:
        s = _rawsocket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            s.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)  # root only
        except OSError:
            s.setsockopt(SOL_SOCKET, SO_RCVBUF, RCVBUF)
        s.setsockopt(SOL_SOCKET, SO_SNDBUF, SNDBUF)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            s.setsockopt(SOL_NETLINK, opt, 1)
        s.bind((0, 0))
        return s

    @property
    def portid(self) -> int:
        """Our socket's netlink port id: route and neighbour notifications caused by our
        requests carry it in nlmsg_pid, so a watcher can tell our own writes apart."""
        return int(self._sock.getsockname()[0])

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- batches of changes -------------------------------------------------------------

    def apply(self, ops: Sequence[Request],
              echoed: list[tuple[int, bytes]] | None = None) -> list[Result]:
        """Send (type, flags, body) requests in order; one Result per request.

        Messages the kernel sends back for the requests (those sent with NLM_F_ECHO)
        go to `echoed` as (type, body), in order.
        """
        results = [OK] * len(ops)
        with self._lock:
            for start in range(0, len(ops), CHUNK):
                self._apply_chunk(ops, start, min(start + CHUNK, len(ops)), results, echoed)
        return results

    def batch(self, ops: Sequence[Request],
              echoed: list[tuple[int, bytes]] | None = None) -> list[NetlinkError | None]:
        """`apply`, with each outcome as the NetlinkError to raise (None: it succeeded)."""
        return [NetlinkError(err, text=text) if err else None
                for err, text in self.apply(ops, echoed)]

    def check(self, kind: int, flags: int, body: bytes, what: str = "") -> None:
        """One request; raise NetlinkError if it fails."""
        ((err, text),) = self.apply([(kind, flags, body)])
        if err:
            raise NetlinkError(err, what, text)

    def _apply_chunk(self, ops: Sequence[Request], start: int, stop: int,
                     results: list[Result], echoed: list[tuple[int, bytes]] | None) -> None:
        base = self._seq + 1
        parts: list[bytes] = []
        pack = NLMSG_HDR.pack
        for i in range(start, stop):
            kind, flags, body = ops[i]
            parts.append(pack(NLMSG_HDRLEN + len(body), kind, flags | NLM_F_REQUEST,
                              base + i - start, 0))
            parts.append(body)
        end_seq = base + stop - start
        self._seq = end_seq
        parts.append(pack(NLMSG_HDRLEN, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, end_seq, 0))
        self._sock.send(b"".join(parts))
        try:
            self._collect(base, end_seq, start, results, echoed)
        except OSError as exc:
            if exc.errno != errno_mod.ENOBUFS:
                raise
            # Replies were dropped: outcomes in this chunk are unknown, so call them failed
            # (the caller then does a full dump + diff).
            lost = (errno_mod.ENOBUFS, "netlink replies lost; state unknown")
            for i in range(start, stop):
                if results[i] == OK:
                    results[i] = lost
            self._drain()

    def _collect(self, base: int, end_seq: int, start: int, results: list[Result],
                 echoed: list[tuple[int, bytes]] | None) -> None:
        buf = self._buf
        while True:
            n = self._sock.recv_into(buf)
            for kind, flags, seq, a, b in iter_msgs(buf, n):
                if kind != NLMSG_ERROR:
                    if echoed is not None and base <= seq < end_seq:
                        echoed.append((kind, bytes(buf[a:b])))
                    continue
                err, req_seq, text = parse_error(buf, a, b, flags)
                if req_seq == end_seq:
                    return
                if base <= req_seq < end_seq and err:
                    results[start + req_seq - base] = (err, text)

    def _drain(self) -> None:
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0.2)
        try:
            while True:
                self._sock.recv_into(self._buf)
        except (TimeoutError, BlockingIOError, OSError):
            pass
        finally:
            self._sock.settimeout(timeout)

    # --- reads ----------------------------------------------------------------------------

    def dump(self, kind: int, body: bytes, parse: Callable[[Buf, int, int], T],
             reply: int) -> list[T]:
        """All replies of a dump request, parsed; retried if the kernel says it was interrupted."""
        rows: list[T] = []
        self.dump_into(kind, body, parse, reply, rows.append, rows.clear)
        return rows

    def dump_into(self, kind: int, body: bytes, parse: Callable[[Buf, int, int], T],
                  reply: int, take: Callable[[T], object], restart: Callable[[], object]
                  ) -> None:
        """`dump`, handing each row to `take` as it is parsed: a resync's dump of thousands
        of entries is never held as rows all at once. An interrupted dump is retried
        after `restart()`, which must undo what `take` was given."""
        for attempt in range(5):
            if attempt:
                restart()
            if not self._dump_once(kind, body, parse, reply, take):
                return

    def _dump_once(self, kind: int, body: bytes, parse: Callable[[Buf, int, int], T],
                   reply: int, take: Callable[[T], object]) -> bool:
        """One dump into `take`; True if the kernel says it was interrupted."""
        interrupted = False
        with self._lock:
            for rkind, flags, data, a, b in self._exchange(kind, NLM_F_DUMP, body):
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if rkind == NLMSG_DONE:
                    return interrupted
                if rkind == NLMSG_ERROR:
                    err, _, text = parse_error(data, a, b, flags)
                    raise NetlinkError(err, f"dump (type {kind})", text)
                if rkind == reply:
                    take(parse(data, a, b))
        raise AssertionError("unreachable: _exchange never ends on its own")

    def get(self, kind: int, body: bytes, parse: Callable[[Buf, int, int], T],
            reply: int) -> T | None:
        """A single-object GET (e.g. a link by name); None if it does not exist."""
        with self._lock:
            for rkind, flags, data, a, b in self._exchange(kind, 0, body):
                if rkind == NLMSG_ERROR:
                    err, _, text = parse_error(data, a, b, flags)
                    if err == 0 or err in _ABSENT:
                        return None
                    raise NetlinkError(err, f"get (type {kind})", text)
                if rkind == reply:
                    return parse(data, a, b)
        raise AssertionError("unreachable: _exchange never ends on its own")

    def _exchange(self, kind: int, flags: int, body: bytes
                  ) -> Iterator[tuple[int, int, bytes, int, int]]:
        """Send one request; yield (type, flags, datagram, start, end) of each reply to it.

        Endless: the caller stops when it has what it wants. Hold the lock.
        """
        self._seq += 1
        seq = self._seq
        self._sock.send(nlmsg(kind, NLM_F_REQUEST | flags, seq, body))
        while True:
            n = self._sock.recv_into(self._buf)
            data = bytes(self._buf[:n])
            for rkind, rflags, rseq, a, b in iter_msgs(data, n):
                if rseq == seq:
                    yield rkind, rflags, data, a, b

    # --- the CNI plugin's reads and removals ----------------------------------------------

    def link(self, name: str = "", index: int = 0) -> LinkRow | None:
        """A link by index, or (index 0) by name; None if there is none."""
        return self.get(RTM_GETLINK, link_by(name, index), parse_link, RTM_NEWLINK)

    def delete_link(self, name: str = "", index: int = 0) -> bool:
        """Delete a link; False if it was already gone."""
        ((err, text),) = self.apply([(RTM_DELLINK, 0, link_by(name, index))])
        if err in _ABSENT:
            return False
        if err:
            raise NetlinkError(err, text=text)
        return True

    def set_down(self, index: int) -> None:
        self.check(*msg_down(index))

    def addrs(self, index: int, family: int = AF_UNSPEC) -> list[AddrEntry]:
        """The addresses of link `index` (0: every link), of `family` (AF_UNSPEC: all)."""
        found = self.dump(RTM_GETADDR, addr_dump_body(index, family), parse_addr_entry,
                          RTM_NEWADDR)
        return [a for a in found if a.ifindex == index or not index]

    def routes(self, family: int) -> list[RouteEntry]:
        """The unicast routes of the main table, of `family`."""
        found = self.dump(RTM_GETROUTE, route_dump_body(RT_TABLE_MAIN, family),
                          parse_route_entry, RTM_NEWROUTE)
        return [r for r in found if r.table == RT_TABLE_MAIN and r.rtype == RTN_UNICAST]
