"""A batched rtnetlink socket, optionally opened inside another network namespace.

Many requests go out in one sendmsg; the kernel handles them one after the
other and answers only failures (no NLM_F_ACK on the requests), then a final
NLMSG_NOOP carrying NLM_F_ACK marks the end of the batch. Each error comes
back with the sequence number of the request it belongs to, so a batch of
3000 entries costs a few syscalls instead of 3000 round trips, and one bad
entry never hides the outcome of the others.

`call_in_netns` runs a function in a short-lived thread switched into a named
namespace, so sockets (and /proc/sys/net files) opened there belong to it
while the caller never leaves its own namespace.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from netlink import messages as m
from netlink.base import (
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    SOL_NETLINK,
    NetlinkError,
    setns,
)

T = TypeVar("T")
NETNS_RUN_DIR = Path("/run/netns")
NLM_F_DUMP_INTR = 0x10
CHUNK = 512  # requests per sendmsg: bounded so even all-failing chunks fit the receive buffer
RCVBUF = 8 << 20
RECV_SIZE = 64 << 10  # the kernel fills at most 32 KiB per dump skb

def netns_path(netns: str) -> Path:
    return Path(netns) if netns.startswith("/") else NETNS_RUN_DIR / netns


def call_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """`fn()` in a thread inside `netns` (a name under /run/netns or a path); None: here."""
    if netns is None:
        return fn()
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"network namespace {netns!r} does not exist ({path}); "
                                "create it first (we never create one implicitly)") from None
    out: list[Any] = []

    def worker() -> None:
        try:
            setns(fd, str(path))
            out.append((True, fn()))
        except BaseException as exc:  # re-raised in the caller's thread
            out.append((False, exc))

    try:
        t = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(fd)
    ok, value = out[0]
    if not ok:
        raise value
    return value


Result = tuple[int, str]  # (errno, extended-ack text) of one request; errno 0: it succeeded
OK: Result = (0, "")


class RtNetlink:
    """One NETLINK_ROUTE socket; thread-safe (one lock), synchronous."""

    def __init__(self, netns: str | None = None, timeout: float = 10.0) -> None:
        self.netns = netns
        self._sock = call_in_netns(netns, self._open)
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                          socket.NETLINK_ROUTE)
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
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

    # --- batches of changes -------------------------------------------------------------

    def apply(self, ops: Sequence[tuple[int, int, bytes]]) -> list[Result]:
        """Send (type, flags, body) requests in order; one Result per request."""
        results = [OK] * len(ops)
        with self._lock:
            for start in range(0, len(ops), CHUNK):
                self._apply_chunk(ops, start, min(start + CHUNK, len(ops)), results)
        return results

    def _apply_chunk(self, ops: Sequence[tuple[int, int, bytes]], start: int, stop: int,
                     results: list[Result]) -> None:
        base = self._seq + 1
        parts: list[bytes] = []
        pack = m.NLMSG_HDR.pack
        for i in range(start, stop):
            kind, flags, body = ops[i]
            parts.append(pack(16 + len(body), kind, flags | m.NLM_F_REQUEST, base + i - start, 0))
            parts.append(body)
        end_seq = base + stop - start
        self._seq = end_seq
        parts.append(pack(16, m.NLMSG_NOOP, m.NLM_F_REQUEST | m.NLM_F_ACK, end_seq, 0))
        self._sock.send(b"".join(parts))
        try:
            self._collect(base, end_seq, start, results)
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

    def _collect(self, base: int, end_seq: int, start: int, results: list[Result]) -> None:
        buf = self._buf
        while True:
            n = self._sock.recv_into(buf)
            for kind, flags, _seq, a, b in m.iter_msgs(buf, n):
                if kind != m.NLMSG_ERROR:
                    continue
                err, req_seq, text = m.parse_error(buf, a, b, flags)
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

    def check(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """One request; raise NetlinkError if it fails."""
        ((err, text),) = self.apply([(kind, flags, body)])
        if err:
            raise NetlinkError(err, what, text)

    # --- reads ----------------------------------------------------------------------------

    def dump(self, kind: int, body: bytes, parse: Callable[[m.Buf, int, int], T],
             reply: int) -> list[T]:
        """All replies of a dump request, parsed; retried if the kernel says it was interrupted."""
        for _ in range(5):
            rows, interrupted = self._dump_once(kind, body, parse, reply)
            if not interrupted:
                return rows
        return rows

    def _dump_once(self, kind: int, body: bytes, parse: Callable[[m.Buf, int, int], T],
                   reply: int) -> tuple[list[T], bool]:
        rows: list[T] = []
        interrupted = False
        with self._lock:
            for rkind, flags, data, a, b in self._exchange(kind, m.NLM_F_DUMP, body):
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if rkind == m.NLMSG_DONE:
                    return rows, interrupted
                if rkind == m.NLMSG_ERROR:
                    err, _, text = m.parse_error(data, a, b, flags)
                    raise NetlinkError(err, f"dump (type {kind})", text)
                if rkind == reply:
                    rows.append(parse(data, a, b))
        raise AssertionError("unreachable: _exchange never ends on its own")

    def get(self, kind: int, body: bytes, parse: Callable[[m.Buf, int, int], T],
            reply: int) -> T | None:
        """A single-object GET (e.g. a link by name); None if the kernel says ENODEV."""
        with self._lock:
            for rkind, flags, data, a, b in self._exchange(kind, 0, body):
                if rkind == m.NLMSG_ERROR:
                    err, _, text = m.parse_error(data, a, b, flags)
                    if err in (errno_mod.ENODEV, 0):
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
        self._sock.send(m.nlmsg(kind, m.NLM_F_REQUEST | flags, seq, body))
        while True:
            n = self._sock.recv_into(self._buf)
            data = bytes(self._buf[:n])
            for rkind, rflags, rseq, a, b in m.iter_msgs(data, n):
                if rseq == seq:
                    yield rkind, rflags, data, a, b
