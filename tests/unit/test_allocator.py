"""Which subnet to take, in flannel's order (compat §1.5); pure, no etcd."""

import random
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from core.config import parse_network_config
from core.lease import Lease, LeaseAttrs
from flanneld.allocator import Occupied, count_in_use, free_candidates, plan_acquire

CFG = parse_network_config('{"Network":"10.5.0.0/16"}')
ME = IPv4Address("192.168.64.3")


def occ(subnet: str, ip: str | None = "192.168.64.9", lease_id: int = 7) -> Occupied:
    net = IPv4Network(subnet)
    lease = None if ip is None else Lease(net, LeaseAttrs(IPv4Address(ip)), lease_id=lease_id)
    return Occupied(net, None, lease)


def test_reuses_our_lease_by_public_ip_first() -> None:
    plan = plan_acquire(CFG, [occ("10.5.3.0/24"), occ("10.5.52.0/24", str(ME))], ME,
                        previous=IPv4Network("10.5.9.0/24"))
    assert plan.source == "public-ip" and plan.reuse is not None
    assert plan.reuse.subnet == IPv4Network("10.5.52.0/24") and plan.delete == ()


def test_our_lease_that_no_longer_fits_is_deleted_reservation_left_alone() -> None:
    stale = occ("10.5.0.0/24", str(ME))  # below SubnetMin
    reserved = occ("10.5.0.0/25", str(ME), lease_id=0)
    plan = plan_acquire(CFG, [stale, reserved], ME, rng=random.Random(1))
    assert plan.delete == (stale.lease,) and plan.ignored == (reserved.lease,)
    assert plan.source == "random" and plan.subnet is not None
    assert not plan.subnet.overlaps(IPv4Network("10.5.0.0/25"))


def test_unspecified_public_ip_never_matches() -> None:
    plan = plan_acquire(CFG, [occ("10.5.3.0/24", "0.0.0.0")], IPv4Address("0.0.0.0"),
                        rng=random.Random(1))
    assert plan.source == "random" and plan.subnet != IPv4Network("10.5.3.0/24")


def test_previous_subnet_if_free_and_fitting() -> None:
    prev = IPv4Network("10.5.9.0/24")
    assert plan_acquire(CFG, [occ("10.5.3.0/24")], ME, previous=prev).subnet == prev
    # held by someone (even a garbage value, even an overlapping /23): not used
    for taken in (occ("10.5.9.0/24"), occ("10.5.9.0/24", None), occ("10.5.8.0/23")):
        plan = plan_acquire(CFG, [taken], ME, previous=prev, rng=random.Random(2))
        assert plan.source == "random" and plan.subnet != prev
    # outside SubnetMin..SubnetMax or wrong size: not used
    for bad in ("10.5.0.0/24", "10.5.9.0/25", "10.6.9.0/24"):
        plan = plan_acquire(CFG, [], ME, previous=IPv4Network(bad), rng=random.Random(3))
        assert plan.source == "random"


def test_random_choice_is_among_the_first_100_free() -> None:
    taken = [occ(f"10.5.{i}.0/24") for i in range(1, 30)]
    seen = set()
    for seed in range(300):
        plan = plan_acquire(CFG, taken, ME, rng=random.Random(seed))
        assert plan.subnet is not None
        seen.add(int(plan.subnet.network_address.packed[2]))
    assert min(seen) == 30 and max(seen) == 129  # 100 candidates: 10.5.30.0 .. 10.5.129.0
    assert len(seen) > 80  # spread out, so concurrent joiners rarely collide


def test_out_of_subnets_counts_what_is_in_use() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0",'
                               '"SubnetMax":"10.5.3.0"}')
    full = [occ("10.5.1.0/24"), occ("10.5.2.0/24", None), occ("10.5.3.0/24"),
            occ("10.5.200.0/24")]  # outside the pool: not counted
    plan = plan_acquire(cfg, full, ME)
    assert plan.out_of_subnets and plan.in_use == 3
    assert count_in_use(cfg, full) == 3


def test_free_candidates_jump_over_big_and_unsorted_ranges() -> None:
    # /24 candidates in 10.0.0.0/8 with a /9 and a stray /30 taken, out of order
    base = int(IPv4Address("10.0.0.0"))
    nine = (base, base + (1 << 23) - 1)
    stray = (base + (1 << 23) + 256 + 4, base + (1 << 23) + 256 + 7)
    free = free_candidates(base, base + (1 << 24) - 256, 24, 32, [stray, nine], limit=3)
    assert [str(IPv4Address(f)) for f in free] == ["10.128.0.0", "10.128.2.0", "10.128.3.0"]


def test_a_full_slash8_of_slash30s_is_out_of_subnets() -> None:
    cfg = parse_network_config('{"Network":"10.0.0.0/8","SubnetLen":30}')
    # one lease covering everything but the last candidate
    big = Occupied(IPv4Network("10.0.0.0/9"))
    rest = Occupied(IPv4Network("10.128.0.0/10"))
    plan = plan_acquire(cfg, [big, rest, Occupied(IPv4Network("10.192.0.0/10"))], ME)
    assert plan.out_of_subnets


def test_dual_stack_picks_both_and_reuses_previous_v6() -> None:
    cfg = parse_network_config('{"EnableIPv6":true,"Network":"10.5.0.0/16",'
                               '"IPv6Network":"fd00:10:5::/48"}')
    prev6 = IPv6Network("fd00:10:5:52::/64")
    plan = plan_acquire(cfg, [], ME, previous=IPv4Network("10.5.52.0/24"),
                        previous_ipv6=prev6)
    assert (plan.subnet, plan.ipv6_subnet) == (IPv4Network("10.5.52.0/24"), prev6)
    taken6 = Occupied(IPv4Network("10.5.9.0/24"), prev6)
    plan = plan_acquire(cfg, [taken6], ME, previous_ipv6=prev6, rng=random.Random(4))
    assert plan.ipv6_subnet is not None and plan.ipv6_subnet != prev6
    # a v4-only lease of ours does not fit a dual-stack config
    mine = occ("10.5.52.0/24", str(ME))
    plan = plan_acquire(cfg, [mine], ME, rng=random.Random(5))
    assert plan.delete == (mine.lease,) and plan.source == "random"
