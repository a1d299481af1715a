"""Which subnet to take, in flannel's order (compat §1.5); pure, no etcd."""

import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

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
    # a v4-only lease of ours does not fit a dual-stack config: migrated, see below
    mine = occ("10.5.52.0/24", str(ME))
    plan = plan_acquire(cfg, [mine], ME, rng=random.Random(5))
    assert plan.delete == () and plan.source == "migrate" and plan.replace == mine.lease


DUAL = parse_network_config('{"EnableIPv6":true,"Network":"10.5.0.0/16",'
                            '"IPv6Network":"fd00:10:5::/48"}')
V6ONLY = parse_network_config('{"EnableIPv4":false,"EnableIPv6":true,'
                              '"IPv6Network":"fd00:10:5::/48"}')
ME6 = IPv6Address("fd72::3")
ANY = IPv4Address("0.0.0.0")


def occ6(v4: str | None, v6: str | None, ip: str = "0.0.0.0", ip6: str | None = "fd72::9",
         lease_id: int = 7) -> Occupied:
    n4 = IPv4Network(v4) if v4 else None
    n6 = IPv6Network(v6) if v6 else None
    attrs = LeaseAttrs(IPv4Address(ip), public_ipv6=IPv6Address(ip6) if ip6 else None)
    return Occupied(n4, n6, Lease(n4, attrs, n6, lease_id=lease_id))


def test_switching_to_dual_stack_keeps_the_ipv4_subnet_and_adds_ipv6() -> None:
    mine = occ6("10.5.52.0/24", None, str(ME), None)
    others = [occ6("10.5.3.0/24", "fd00:10:5:3::/64", "192.168.64.9")]
    for seed in range(50):
        plan = plan_acquire(DUAL, [*others, mine], ME, rng=random.Random(seed))
        assert plan.source == "migrate" and plan.replace == mine.lease
        assert plan.subnet == IPv4Network("10.5.52.0/24")  # never renumbered
        assert plan.ipv6_subnet is not None and DUAL.ipv6_subnet_fits(plan.ipv6_subnet)
        assert plan.ipv6_subnet != IPv6Network("fd00:10:5:3::/64") and plan.delete == ()
    # the previous run's IPv6 subnet (subnet.env) is preferred when free
    prev6 = IPv6Network("fd00:10:5:52::/64")
    plan = plan_acquire(DUAL, [mine], ME, previous_ipv6=prev6)
    assert (plan.subnet, plan.ipv6_subnet) == (IPv4Network("10.5.52.0/24"), prev6)


def test_switching_back_to_ipv4_only_drops_the_ipv6_half() -> None:
    mine = occ6("10.5.52.0/24", "fd00:10:5:52::/64", str(ME), "fd72::3")
    plan = plan_acquire(CFG, [mine], ME)
    assert plan.source == "migrate" and plan.replace == mine.lease
    assert (plan.subnet, plan.ipv6_subnet) == (IPv4Network("10.5.52.0/24"), None)


def test_a_moved_ipv6_network_keeps_ipv4_and_renumbers_only_ipv6() -> None:
    mine = occ6("10.5.52.0/24", "fd00:99:5:52::/64", str(ME), "fd72::3")
    plan = plan_acquire(DUAL, [mine], ME, rng=random.Random(1))
    assert plan.source == "migrate" and plan.subnet == IPv4Network("10.5.52.0/24")
    assert plan.ipv6_subnet is not None and plan.ipv6_subnet.subnet_of(
        IPv6Network("fd00:10:5::/48"))
    # and the other way round: a moved IPv4 Network keeps the IPv6 subnet
    mine = occ6("10.9.52.0/24", "fd00:10:5:52::/64", str(ME), "fd72::3")
    plan = plan_acquire(DUAL, [mine], ME, rng=random.Random(1))
    assert plan.source == "migrate" and plan.ipv6_subnet == IPv6Network("fd00:10:5:52::/64")
    assert plan.subnet is not None and plan.subnet.subnet_of(IPv4Network("10.5.0.0/16"))


def test_a_reservation_is_never_migrated() -> None:
    reserved = occ6("10.5.52.0/24", None, str(ME), None, lease_id=0)
    plan = plan_acquire(DUAL, [reserved], ME, rng=random.Random(2))
    assert plan.ignored == (reserved.lease,) and plan.replace is None
    assert plan.source == "random" and plan.subnet != IPv4Network("10.5.52.0/24")


def test_a_fitting_lease_wins_and_a_half_fitting_one_of_ours_is_deleted() -> None:
    old = occ6("10.5.7.0/24", None, str(ME), None)
    good = occ6("10.5.52.0/24", "fd00:10:5:52::/64", str(ME), "fd72::3")
    plan = plan_acquire(DUAL, [old, good], ME)
    assert plan.source == "public-ip" and plan.reuse == good.lease
    assert plan.delete == (old.lease,)


def test_ipv6_subnet_is_chosen_independently_of_ipv4() -> None:
    pairs = set()
    for seed in range(200):
        plan = plan_acquire(DUAL, [], ME, rng=random.Random(seed))
        assert plan.subnet is not None and plan.ipv6_subnet is not None
        pairs.add((plan.subnet.network_address.packed[2],
                   plan.ipv6_subnet.network_address.packed[7]))
    assert len({a - b for a, b in pairs}) > 50  # not one offset for both (flannel 2654f9d8)


def test_ipv6_only_allocation() -> None:
    taken = [occ6(None, f"fd00:10:5:{i:x}::/64") for i in range(1, 40)]
    seen = set()
    for seed in range(100):
        plan = plan_acquire(V6ONLY, taken, ANY, rng=random.Random(seed), public_ipv6=ME6)
        assert plan.source == "random" and plan.subnet is None
        assert plan.ipv6_subnet is not None and V6ONLY.ipv6_subnet_fits(plan.ipv6_subnet)
        assert all(not plan.ipv6_subnet.overlaps(t.ipv6_subnet) for t in taken
                   if t.ipv6_subnet is not None)
        seen.add(plan.ipv6_subnet)
    assert len(seen) > 50
    assert plan_acquire(V6ONLY, taken, ANY, public_ipv6=ME6).in_use == 39
    # 0.0.0.0 is everybody's PublicIP there: never a match, our PublicIPv6 is
    plan = plan_acquire(V6ONLY, taken, ANY, rng=random.Random(1))
    assert plan.source == "random"
    mine = occ6(None, "fd00:10:5:52::/64", "0.0.0.0", str(ME6))
    plan = plan_acquire(V6ONLY, [*taken, mine], ANY, public_ipv6=ME6)
    assert plan.source == "public-ip" and plan.reuse == mine.lease
    prev6 = IPv6Network("fd00:10:5:99::/64")
    plan = plan_acquire(V6ONLY, taken, ANY, previous=IPv4Network("10.5.9.0/24"),
                        previous_ipv6=prev6, public_ipv6=ME6)
    assert (plan.source, plan.subnet, plan.ipv6_subnet) == ("previous", None, prev6)


def test_dual_stack_to_ipv6_only_keeps_ipv6() -> None:
    mine = occ6("10.5.52.0/24", "fd00:10:5:52::/64", str(ME), str(ME6))
    plan = plan_acquire(V6ONLY, [mine], ME, public_ipv6=ME6)
    assert plan.source == "migrate" and plan.replace == mine.lease
    assert (plan.subnet, plan.ipv6_subnet) == (None, IPv6Network("fd00:10:5:52::/64"))


def test_out_of_ipv6_subnets() -> None:
    cfg = parse_network_config('{"EnableIPv6":true,"Network":"10.5.0.0/16",'
                               '"IPv6Network":"fd00:10:5::/62"}')
    full = [occ6(f"10.5.{i}.0/24", f"fd00:10:5:{i}::/64", "192.168.64.9") for i in (1, 2, 3)]
    plan = plan_acquire(cfg, full, ME)
    assert plan.out_of_subnets and plan.full == "IPv6"
    v6cfg = parse_network_config('{"EnableIPv4":false,"EnableIPv6":true,'
                                 '"IPv6Network":"fd00:10:5::/62"}')
    plan = plan_acquire(v6cfg, [occ6(None, f"fd00:10:5:{i}::/64") for i in (1, 2, 3)], ANY,
                        public_ipv6=ME6)
    assert plan.out_of_subnets and plan.full == "IPv6" and plan.in_use == 3
