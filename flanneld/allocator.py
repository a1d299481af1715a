"""Which subnet to lease, in flannel's order; pure (the manager does the etcd writes).

1. A lease that is ours: reuse it if it fits the config in every family (the
   families it has are the families the config enables, each subnet inside its
   pool). Ours means it carries our PublicIP (flannel's rule); on an IPv6-only
   network, where every node's PublicIP is 0.0.0.0, it carries our PublicIPv6.
2. A lease of ours that fits in one family but not the other (the typical case:
   a running IPv4 cluster switched to dual-stack): "migrate", i.e. keep the part
   that fits and add (or drop) the other, in a new key that replaces the old one
   in one transaction. flannel deletes the lease and allocates both anew, which
   renumbers every running node's IPv4 subnet; we never do.
   Our other leases that do not fit are deleted (flannel does the same).
   Reservations (no etcd lease) that do not fit are left alone and reported:
   they are the operator's, not ours to delete or rewrite.
3. For each enabled family on its own (flannel's order: IPv4, then IPv6,
   independently): the subnet of the previous run (from subnet.env), if it fits
   and nobody holds anything overlapping it; else a random free subnet among
   the first 100 free candidates from SubnetMin upwards (randomness spreads
   concurrent joiners apart).
If a family has nothing free, the plan says "out of subnets" with the count in use.

Candidates are walked with the taken ranges sorted, so a nearly full /8 of /30s
costs as much as its number of leases, not its four million candidates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Literal

from core.config import NetworkConfig
from core.lease import Lease

CANDIDATES = 100  # flannel picks at random among this many free subnets

Source = Literal["public-ip", "migrate", "previous", "random", "none"]


@dataclass(frozen=True)
class Occupied:
    """One parseable key under `<prefix>/subnets`; `lease` is None if its value is garbage."""

    subnet: IPv4Network | None  # None: an IPv6-only key
    ipv6_subnet: IPv6Network | None = None
    lease: Lease | None = None


@dataclass(frozen=True)
class AcquirePlan:
    source: Source
    reuse: Lease | None = None  # step 1: keep this lease (rewrite its value)
    subnet: IPv4Network | None = None  # steps 2/3: create this key (None: IPv6-only)
    ipv6_subnet: IPv6Network | None = None
    replace: Lease | None = None  # step 2: the key the new one replaces (same transaction)
    delete: tuple[Lease, ...] = ()  # our own leases that no longer fit the config
    ignored: tuple[Lease, ...] = ()  # reservations for us that do not fit (left alone)
    in_use: int = 0  # subnets taken between SubnetMin and SubnetMax
    full: str = ""  # out of subnets: "IPv4" or "IPv6"

    @property
    def out_of_subnets(self) -> bool:
        return self.source == "none"


def lease_fits(config: NetworkConfig, subnet: IPv4Network | None,
               ipv6_subnet: IPv6Network | None) -> bool:
    """Does a lease with these subnets fit the config in every family?"""
    return config.subnet_fits(subnet) and config.ipv6_subnet_fits(ipv6_subnet)


def is_ours(config: NetworkConfig, lease: Lease, public_ip: IPv4Address,
            public_ipv6: IPv6Address | None) -> bool:
    """flannel finds our lease by PublicIP. 0.0.0.0 never matches (it would match other
    nodes' leases); an IPv6-only network, where PublicIP is 0.0.0.0, matches PublicIPv6."""
    if not public_ip.is_unspecified and lease.attrs.public_ip == public_ip:
        return True
    return (not config.enable_ipv4 and public_ipv6 is not None
            and lease.attrs.public_ipv6 == public_ipv6)


def plan_acquire(config: NetworkConfig, occupied: Sequence[Occupied],
                 public_ip: IPv4Address, previous: IPv4Network | None = None,
                 previous_ipv6: IPv6Network | None = None,
                 rng: random.Random | None = None, *,
                 public_ipv6: IPv6Address | None = None) -> AcquirePlan:
    """Decide how to get a subnet given every key in etcd, in key order."""
    rng = rng or random.Random()
    delete: list[Lease] = []
    ignored: list[Lease] = []
    reuse: Lease | None = None
    migrate: Lease | None = None
    for occ in occupied:
        lease = occ.lease
        if lease is None or not is_ours(config, lease, public_ip, public_ipv6):
            continue
        if lease_fits(config, lease.ipv4_subnet, lease.ipv6_subnet):
            reuse = reuse or lease  # a second fitting one is left alone, as before
            continue
        if lease.is_reservation:
            ignored.append(lease)
            continue
        elif migrate is None and _keepable(config, lease) != (None, None):
            migrate = lease
            continue
        if not lease.is_reservation:
            delete.append(lease)
    if reuse is not None and migrate is not None:
        delete.append(migrate)  # we have a lease that fits: the half-fitting one goes
        migrate = None
    gone = {lease.key for lease in delete}
    if migrate is not None:
        gone.add(migrate.key)  # replaced: its subnets are ours to keep, not taken
    rest = [occ for occ in occupied if occ.lease is None or occ.lease.key not in gone]
    in_use = count_in_use(config, rest)

    def plan(source: Source, **fields: Any) -> AcquirePlan:
        return AcquirePlan(source, delete=tuple(delete), ignored=tuple(ignored),
                           in_use=in_use, **fields)

    if reuse is not None:
        return plan("public-ip", reuse=reuse)

    keep4, keep6 = _keepable(config, migrate) if migrate is not None else (None, None)
    v4: IPv4Network | None = keep4
    v6: IPv6Network | None = keep6
    fresh_previous = False
    if config.enable_ipv4 and v4 is None:
        taken4 = [occ.subnet for occ in rest if occ.subnet is not None]
        if previous is not None and config.subnet_fits(previous) \
                and not any(previous.overlaps(t) for t in taken4):
            v4, fresh_previous = previous, True
        else:
            v4 = _random_ipv4(config, taken4, rng)
        if v4 is None:
            return plan("none", full="IPv4")
    if config.enable_ipv6 and v6 is None:
        taken6 = [occ.ipv6_subnet for occ in rest if occ.ipv6_subnet is not None]
        if previous_ipv6 is not None and config.ipv6_subnet_fits(previous_ipv6) \
                and not any(previous_ipv6.overlaps(t) for t in taken6):
            v6 = previous_ipv6
            fresh_previous = fresh_previous or not config.enable_ipv4
        else:
            v6 = _random_ipv6(config, taken6, rng)
        if v6 is None:
            return plan("none", full="IPv6")
    source: Source = "migrate" if migrate is not None else \
        "previous" if fresh_previous else "random"
    return plan(source, subnet=v4, ipv6_subnet=v6, replace=migrate)


def _keepable(config: NetworkConfig, lease: Lease
              ) -> tuple[IPv4Network | None, IPv6Network | None]:
    """The parts of a lease that fit the config's enabled families (None: not kept)."""
    v4 = lease.ipv4_subnet if config.enable_ipv4 and lease.ipv4_subnet is not None \
        and config.subnet_fits(lease.ipv4_subnet) else None
    v6 = lease.ipv6_subnet if config.enable_ipv6 and lease.ipv6_subnet is not None \
        and config.ipv6_subnet_fits(lease.ipv6_subnet) else None
    return v4, v6


def _random_ipv4(config: NetworkConfig, taken: Sequence[IPv4Network],
                 rng: random.Random) -> IPv4Network | None:
    free = free_candidates(int(config.subnet_min), int(config.subnet_max), config.subnet_len,
                           32, ((int(t.network_address), int(t.broadcast_address))
                                for t in taken))
    return IPv4Network((rng.choice(free), config.subnet_len)) if free else None


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
    """Distinct subnets overlapping the SubnetMin..SubnetMax pool (IPv6-only: the IPv6 one)."""
    if not config.enable_ipv4:
        assert config.ipv6_subnet_min is not None and config.ipv6_subnet_max is not None
        assert config.ipv6_subnet_len is not None
        lo6 = int(config.ipv6_subnet_min)
        hi6 = int(config.ipv6_subnet_max) + (1 << (128 - config.ipv6_subnet_len)) - 1
        return len({occ.ipv6_subnet for occ in occupied if occ.ipv6_subnet is not None
                    and int(occ.ipv6_subnet.network_address) <= hi6
                    and int(occ.ipv6_subnet.broadcast_address) >= lo6})
    lo = int(config.subnet_min)
    hi = int(config.subnet_max) + (1 << (32 - config.subnet_len)) - 1
    return len({occ.subnet for occ in occupied if occ.subnet is not None
                and int(occ.subnet.network_address) <= hi
                and int(occ.subnet.broadcast_address) >= lo})
