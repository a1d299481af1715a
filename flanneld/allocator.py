"""Which subnet to lease, in flannel's order; pure (the manager does the etcd writes).

1. A lease that carries our PublicIP: reuse it if it fits the config; our
   leases that no longer fit are deleted (flannel does the same). Reservations
   (no etcd lease) that do not fit are left alone and reported: they are the
   operator's, not ours to delete.
2. The subnet of the previous run (from subnet.env), if it fits and nobody
   holds anything overlapping it.
3. A random free subnet among the first 100 free candidates from SubnetMin
   upwards (randomness spreads concurrent joiners apart).
If nothing is free, the plan says "out of subnets" with the count in use.

Candidates are walked with the taken ranges sorted, so a nearly full /8 of /30s
costs as much as its number of leases, not its four million candidates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

from core.config import NetworkConfig
from core.lease import Lease

CANDIDATES = 100  # flannel picks at random among this many free subnets

Source = Literal["public-ip", "previous", "random", "none"]


@dataclass(frozen=True)
class Occupied:
    """One parseable key under `<prefix>/subnets`; `lease` is None if its value is garbage."""

    subnet: IPv4Network
    ipv6_subnet: IPv6Network | None = None
    lease: Lease | None = None


@dataclass(frozen=True)
class AcquirePlan:
    source: Source
    reuse: Lease | None = None  # step 1: keep this lease (rewrite its value)
    subnet: IPv4Network | None = None  # steps 2/3: create this key
    ipv6_subnet: IPv6Network | None = None
    delete: tuple[Lease, ...] = ()  # our own leases that no longer fit the config
    ignored: tuple[Lease, ...] = ()  # reservations for us that do not fit (left alone)
    in_use: int = 0  # subnets taken between SubnetMin and SubnetMax

    @property
    def out_of_subnets(self) -> bool:
        return self.source == "none"


def lease_fits(config: NetworkConfig, subnet: IPv4Network,
               ipv6_subnet: IPv6Network | None) -> bool:
    return config.subnet_fits(subnet) and config.ipv6_subnet_fits(ipv6_subnet)


def plan_acquire(config: NetworkConfig, occupied: Sequence[Occupied],
                 public_ip: IPv4Address, previous: IPv4Network | None = None,
                 previous_ipv6: IPv6Network | None = None,
                 rng: random.Random | None = None) -> AcquirePlan:
    """Decide how to get a subnet given every key in etcd, in key order."""
    rng = rng or random.Random()
    delete: list[Lease] = []
    ignored: list[Lease] = []
    reuse: Lease | None = None
    if not public_ip.is_unspecified:  # 0.0.0.0 would match other nodes' leases
        for occ in occupied:
            lease = occ.lease
            if lease is None or lease.attrs.public_ip != public_ip:
                continue
            if lease_fits(config, lease.subnet, lease.ipv6_subnet):
                if reuse is None:
                    reuse = lease
            elif lease.is_reservation:
                ignored.append(lease)
            else:
                delete.append(lease)
    gone = {lease.key for lease in delete}
    rest = [occ for occ in occupied if occ.lease is None or occ.lease.key not in gone]
    in_use = count_in_use(config, rest)
    if reuse is not None:
        return AcquirePlan("public-ip", reuse=reuse, delete=tuple(delete),
                           ignored=tuple(ignored), in_use=in_use)

    taken4 = [occ.subnet for occ in rest]
    taken6 = [occ.ipv6_subnet for occ in rest if occ.ipv6_subnet is not None]
    v6: IPv6Network | None = None
    if config.enable_ipv6:
        if previous_ipv6 is not None and config.ipv6_subnet_fits(previous_ipv6) \
                and not any(previous_ipv6.overlaps(t) for t in taken6):
            v6 = previous_ipv6
        else:
            v6 = _random_ipv6(config, taken6, rng)
        if v6 is None:
            return AcquirePlan("none", delete=tuple(delete), ignored=tuple(ignored),
                               in_use=in_use)

    if previous is not None and config.subnet_fits(previous) \
            and not any(previous.overlaps(t) for t in taken4):
        return AcquirePlan("previous", subnet=previous, ipv6_subnet=v6,
                           delete=tuple(delete), ignored=tuple(ignored), in_use=in_use)
    free = free_candidates(int(config.subnet_min), int(config.subnet_max), config.subnet_len,
                           32, ((int(t.network_address), int(t.broadcast_address))
                                for t in taken4))
    if not free:
        return AcquirePlan("none", delete=tuple(delete), ignored=tuple(ignored), in_use=in_use)
    subnet = IPv4Network((rng.choice(free), config.subnet_len))
    return AcquirePlan("random", subnet=subnet, ipv6_subnet=v6, delete=tuple(delete),
                       ignored=tuple(ignored), in_use=in_use)


def _random_ipv6(config: NetworkConfig, taken: Sequence[IPv6Network],
                 rng: random.Random) -> IPv6Network | None:
    assert config.ipv6_subnet_min is not None and config.ipv6_subnet_max is not None
    assert config.ipv6_subnet_len is not None
    free = free_candidates(int(config.ipv6_subnet_min), int(config.ipv6_subnet_max),
                           config.ipv6_subnet_len, 128,
                           ((int(t.network_address), int(t.broadcast_address)) for t in taken))
    return IPv6Network((IPv6Address(rng.choice(free)), config.ipv6_subnet_len)) if free else None


def free_candidates(first: int, last: int, prefixlen: int, bits: int,
                    taken: Iterable[tuple[int, int]], limit: int = CANDIDATES) -> list[int]:
    """Up to `limit` subnet starts from `first` to `last` (inclusive, step one subnet)
    that overlap none of the `taken` [start, end] address ranges."""
    step = 1 << (bits - prefixlen)
    ranges = sorted(taken)
    free: list[int] = []
    i = 0
    cand = first
    while cand <= last and len(free) < limit:
        end = cand + step - 1
        while i < len(ranges) and ranges[i][1] < cand:
            i += 1  # ranges wholly below the candidate can never matter again
        hit = None
        j = i
        while j < len(ranges) and ranges[j][0] <= end:
            if ranges[j][1] >= cand:
                hit = ranges[j][1] if hit is None else max(hit, ranges[j][1])
            j += 1
        if hit is None:
            free.append(cand)
            cand += step
        else:  # jump past everything overlapping this candidate
            cand = max(cand + step, (hit + 1 + step - 1) // step * step)
    return free


def count_in_use(config: NetworkConfig, occupied: Iterable[Occupied]) -> int:
    """Distinct keys whose subnet overlaps the SubnetMin..SubnetMax pool."""
    lo = int(config.subnet_min)
    hi = int(config.subnet_max) + (1 << (32 - config.subnet_len)) - 1
    return len({occ.subnet for occ in occupied
                if int(occ.subnet.network_address) <= hi
                and int(occ.subnet.broadcast_address) >= lo})
