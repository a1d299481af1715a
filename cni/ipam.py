"""host-local IPAM, in host-local's own on-disk format and place (stdlib only).

    <dataDir>/<network>/lock                 flock'd for every allocation/release
    <dataDir>/<network>/<ip>                 "<containerID>\\r\\n<ifname>" (O_EXCL-created)
    <dataDir>/<network>/last_reserved_ip.<n> the last address handed out from range set n

A node moved from flannel + host-local keeps its pods' addresses, and host-local
itself can run against our store. Allocation is host-local's round robin: start
after last_reserved_ip, wrap across the ranges of the set, skip gateways and
taken addresses. Exhaustion is CniError code 11 (try again later): addresses
come back as pods go, and runtimes retry.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from cni.protocol import INVALID_CONFIG, TRY_AGAIN_LATER, CniError, clipped, shown

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LAST_PREFIX = "last_reserved_ip."


@dataclass(frozen=True)
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None

    def __contains__(self, ip: object) -> bool:
        return (isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
                and ip.version == self.start.version
                and int(self.start) <= int(ip) <= int(self.end))

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


RangeSet = list[Range]


def parse_range(raw: Any, where: str) -> Range:
    if not isinstance(raw, dict) or not isinstance(raw.get("subnet"), str):
        raise CniError(INVALID_CONFIG,
                       f"{where}: a range needs a \"subnet\" string, got {shown(raw)}")
    try:
        subnet = ipaddress.ip_network(raw["subnet"], strict=False)
        host_bits = ipaddress.ip_interface(raw["subnet"]).ip != subnet.network_address
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, f"{where}: invalid subnet {shown(raw['subnet'])}: "
                       f"{clipped(str(exc), 120)}") from None
    if host_bits:
        raise CniError(INVALID_CONFIG, f"{where}: subnet {raw['subnet']} has host bits set; "
                       f"use {subnet}")
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise CniError(INVALID_CONFIG, f"{where}: network {subnet} too small to allocate from")

    def addr(key: str, default: IPAddress) -> IPAddress:
        if not raw.get(key):
            return default
        try:
            value = ipaddress.ip_address(raw[key])
        except ValueError as exc:
            raise CniError(INVALID_CONFIG, f"{where}: invalid {key} {shown(raw[key])}: "
                           f"{clipped(str(exc), 120)}") from None
        if value not in subnet:
            raise CniError(INVALID_CONFIG, f"{where}: {key} {value} is not in subnet {subnet}")
        return value

    last = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
    gateway = addr("gateway", subnet.network_address + 1)
    start, end = addr("rangeStart", subnet.network_address + 1), addr("rangeEnd", last)
    if int(start) > int(end):
        raise CniError(INVALID_CONFIG, f"{where}: rangeStart {start} is after rangeEnd {end}")
    return Range(subnet, start, end, gateway)


def parse_range_sets(ipam: dict[str, Any], runtime_ranges: Any = None) -> list[RangeSet]:
    """`runtimeConfig.ipRanges` first, then `ipam.ranges` (or the legacy single range)."""
    raw_sets: list[Any] = []
    if isinstance(runtime_ranges, list):
        raw_sets += runtime_ranges
    if ipam.get("ranges"):
        raw_sets += ipam["ranges"]
    elif ipam.get("subnet"):
        raw_sets.append([{k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway")
                          if k in ipam}])
    if not raw_sets:
        raise CniError(INVALID_CONFIG, "ipam: no IP ranges specified")
    sets: list[RangeSet] = []
    for i, raw in enumerate(raw_sets):
        if not isinstance(raw, list) or not raw:
            raise CniError(INVALID_CONFIG, f"ipam.ranges[{i}] must be a non-empty list of ranges")
        sets.append([parse_range(r, f"ipam.ranges[{i}][{j}]") for j, r in enumerate(raw)])
    every = [(i, r) for i, s in enumerate(sets) for r in s]
    for a, (i, r1) in enumerate(every):
        for j, r2 in every[a + 1:]:
            if (r1.start.version == r2.start.version and int(r1.start) <= int(r2.end)
                    and int(r2.start) <= int(r1.end)):
                raise CniError(INVALID_CONFIG, f"range set {i} overlaps with {j} ({r1} and {r2})")
    return sets


class Store:
    """One network's reservation directory. Every mutation happens under `locked()`."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir or DEFAULT_DATA_DIR, network)

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        except FileNotFoundError:
            os.makedirs(self.dir, 0o755, exist_ok=True)
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def reserved(self) -> set[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        return {n for n in names if n != "lock" and not n.startswith(LAST_PREFIX)}

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, set_index: int) -> bool:
        try:
            fd = os.open(os.path.join(self.dir, str(ip)),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{container_id.strip()}\r\n{ifname}".encode())
        finally:
            os.close(fd)
        self._write(LAST_PREFIX + str(set_index), str(ip))
        return True

    def _write(self, name: str, text: str) -> None:
        # Overwrite in place, then trim: no O_TRUNC, because ext4's auto_da_alloc turns
        # "truncate to zero, write, close" into a synchronous flush (~5 ms here).
        data = text.encode()
        fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def last_reserved(self, set_index: int) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, LAST_PREFIX + str(set_index))) as f:
                return ipaddress.ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    def owner(self, name: str) -> tuple[str, str] | None:
        """(containerID, ifname) of one reservation; ifname is "" in the legacy id-only form."""
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        cid, _, ifname = text.partition("\r\n")
        return cid.strip(), ifname.strip()

    def owners(self) -> dict[str, tuple[str, str]]:
        found = {}
        for name in self.reserved():
            who = self.owner(name)
            if who is not None:
                found[name] = who
        return found

    def release(self, ip: str, container_id: str, ifname: str) -> bool:
        """Remove one reservation if it belongs to (id, ifname) (or is id-only legacy)."""
        if self.owner(ip) not in ((container_id, ifname), (container_id, "")):
            return False
        try:
            os.unlink(os.path.join(self.dir, ip))
        except FileNotFoundError:
            return False
        return True

    def release_all(self, container_id: str, ifname: str) -> list[str]:
        """host-local DEL: every reservation of (id, ifname), or id-only legacy ones."""
        gone = []
        for name, who in self.owners().items():
            if who in ((container_id, ifname), (container_id, "")):
                try:
                    os.unlink(os.path.join(self.dir, name))
                    gone.append(name)
                except FileNotFoundError:
                    pass
        return gone


def candidates(rset: RangeSet, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """host-local's RangeIter: from last+1 (if last is in the set), wrapping, last itself last."""
    idx, cur = 0, None
    if last is not None:
        for i, r in enumerate(rset):
            if last in r:
                idx, cur = i, last
                break
    start: tuple[int, IPAddress] | None = None
    while True:
        r = rset[idx]
        if cur is None:
            cur = r.start
        elif cur == r.end:
            idx = (idx + 1) % len(rset)
            r = rset[idx]
            cur = r.start
        else:
            cur = cur + 1
        if start is None:
            start = (idx, cur)
        elif start == (idx, cur):
            return
        if cur != r.gateway:
            yield cur, r


@dataclass(frozen=True)
class Choice:
    ip: IPAddress
    range: Range
    set_index: int

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.range.subnet.prefixlen}"


def choose(store: Store, sets: Sequence[RangeSet], requested: Sequence[IPAddress]
           ) -> list[Choice]:
    """One address per range set (requested ones where they fit), without reserving.

    Call under the lock, then `commit`: in between the caller writes down what
    it is about to take, so a crash at any point leaves a trail.
    """
    wanted = list(dict.fromkeys(requested))
    taken = store.reserved()
    chosen = [_choose_one(store, rset, index, wanted, taken) for index, rset in enumerate(sets)]
    if wanted:
        raise CniError(INVALID_CONFIG, f"could not allocate IP {wanted[0]}: it is in no "
                       f"range set ({', '.join(_describe(s) for s in sets)})")
    return chosen


def _choose_one(store: Store, rset: RangeSet, index: int, wanted: list[IPAddress],
                taken: set[str]) -> Choice:
    for ip in wanted:
        for r in rset:
            if ip in r:
                wanted.remove(ip)
                if ip == r.gateway:
                    raise CniError(INVALID_CONFIG, f"requested ip {ip} is subnet's gateway")
                if str(ip) in taken:
                    raise CniError(INVALID_CONFIG, f"requested IP address {ip} is not available "
                                   f"in range set {_describe(rset)}")
                return Choice(ip, r, index)
    for ip, r in candidates(rset, store.last_reserved(index)):
        if str(ip) not in taken:
            return Choice(ip, r, index)
    raise CniError(TRY_AGAIN_LATER, f"no IP addresses available in range set: {_describe(rset)}",
                   f"every address of {store.dir} is reserved; remove stale pods or wait")


def commit(store: Store, chosen: Sequence[Choice], container_id: str, ifname: str) -> None:
    """Create the reservation files; all or nothing."""
    done: list[Choice] = []
    try:
        for c in chosen:
            if not store.reserve(c.ip, container_id, ifname, c.set_index):
                # Someone wrote it without taking the lock: refuse to share an address.
                raise CniError(TRY_AGAIN_LATER, f"IP address {c.ip} was reserved concurrently "
                               f"in {store.dir}; retry")
            done.append(c)
    except BaseException:
        for c in done:
            store.release(str(c.ip), container_id, ifname)
        raise


def allocate(store: Store, sets: Sequence[RangeSet], container_id: str, ifname: str,
             requested: Sequence[IPAddress] = ()) -> list[Choice]:
    """choose + commit under the lock (for callers with nothing to write in between)."""
    with store.locked():
        chosen = choose(store, sets, requested)
        commit(store, chosen, container_id, ifname)
    return chosen


def _describe(rset: RangeSet) -> str:
    return ",".join(str(r) for r in rset)


def capacity(rset: RangeSet) -> int:
    total = 0
    for r in rset:
        total += int(r.end) - int(r.start) + 1
        if r.gateway is not None and r.gateway in r:
            total -= 1
    return total
