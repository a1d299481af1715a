"""Network namespaces for netlink sockets: switch a thread in (and back), or run a function there.

`call_in_netns` runs a function in a short-lived thread switched into a named
namespace, so sockets (and /proc/sys/net files) opened there belong to it while
the caller never leaves its own namespace; `entered` switches the calling thread
for a block and back (cheaper: no thread; the CNI plugin's per-pod path).
Import-light: os, threading, contextlib; ctypes on the first setns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from netlink.uapi import CLONE_NEWNET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
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


def netns_path(netns: str) -> str:
    """A namespace name under /run/netns, or a path as it is."""
    return netns if netns.startswith("/") else f"{NETNS_RUN_DIR}/{netns}"


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
            setns(fd, path)
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
