"""What a peer costs to keep (issue 14): each test fails if a per-peer copy comes back.

Not size measurements (bench/scale.py measures RSS): checks that the objects the daemon
keeps per peer are the slim ones and hold no duplicates.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from backends.state import RouteSpec, Tables, share_entries
from core.lease import (
    Lease,
    LeaseAttrs,
    _inside,
    _overlap,
    check_peer_lease,
    check_vxlan_attrs,
    decode_lease,
)
from flanneld import memtrim

KEY = "/coreos.com/network/subnets/10.5.34.0-24"
VALUE = json.dumps({"PublicIP": "192.168.64.34", "PublicIPv6": None, "BackendType": "vxlan",
                    "BackendData": {"VNI": 1, "VtepMAC": "0e:00:00:00:00:22"}}).encode()


def test_leases_have_no_dict_and_keep_the_key_they_were_read_with() -> None:
    a, b = decode_lease(KEY, VALUE), decode_lease(KEY, VALUE)
    assert not hasattr(a, "__dict__") and not hasattr(a.attrs, "__dict__")
    assert a.key == "10.5.34.0-24" and a == b
    # one copy of the backend data's key names and backend type for every lease
    ka, kb = next(iter(a.attrs.backend_data)), next(iter(b.attrs.backend_data))
    assert ka is kb and a.attrs.backend_type is b.attrs.backend_type


def test_a_replaced_lease_makes_its_key_again() -> None:
    from dataclasses import replace
    a = decode_lease(KEY, VALUE)
    moved = replace(a, ipv4_subnet=IPv4Network("10.5.35.0/24"))
    assert moved.key == "10.5.35.0-24"


def test_a_lowercase_vtep_mac_is_the_leases_own_string() -> None:
    lease = decode_lease(KEY, VALUE)
    mac = lease.attrs.backend_data["VtepMAC"]
    assert check_vxlan_attrs(lease.attrs)[1] is mac
    upper = LeaseAttrs(IPv4Address("192.168.64.34"), "vxlan", {"VNI": 1, "VtepMAC": mac.upper()})
    assert check_vxlan_attrs(upper)[1] == mac


def test_validating_a_peer_caches_nothing_on_its_subnet() -> None:
    """ipaddress's subnet_of/overlaps store hostmask and broadcast_address in the
    network's __dict__: two more addresses kept per peer."""
    lease = decode_lease(KEY, VALUE)
    check_peer_lease(lease, IPv4Network("10.5.0.0/16"), own_subnet=IPv4Network("10.5.1.0/24"))
    assert set(vars(lease.subnet)) == {"network_address", "netmask", "_prefixlen"}


nets4 = st.builds(lambda a, p: IPv4Network((a, p), strict=False),
                  st.integers(0, 2**32 - 1), st.integers(0, 32))
nets6 = st.builds(lambda a, p: IPv6Network((a, p), strict=False),
                  st.integers(0, 2**128 - 1), st.integers(0, 128))


@given(st.one_of(st.tuples(nets4, nets4), st.tuples(nets6, nets6)))
def test_the_int_checks_agree_with_ipaddress(pair: tuple[Any, Any]) -> None:
    a, b = pair
    assert _inside(a, b) == a.subnet_of(b)
    assert _overlap(a, b) == a.overlaps(b)


def test_share_entries_keeps_the_desired_objects_and_the_kernels_differences() -> None:
    spec = RouteSpec("10.5.2.0", 7, onlink=True)
    want = Tables({"10.5.2.0": "0e:00:00:00:00:02"}, {"0e:00:00:00:00:02": ("192.168.64.2",)},
                  {"10.5.2.0/24": (spec,), "10.5.3.0/24": (spec,)})
    # the kernel's copies: equal, but other objects (as parsed from a dump)
    have = Tables({"".join(["10.5.2.", "0"]): "".join(["0e:00:00:00:00:0", "2"])},
                  {"".join(["0e:00:00:00:00:0", "2"]): ("192.168.64.9",)},  # differs
                  {"".join(["10.5.2.0/", "24"]): (RouteSpec("".join(["10.5.2.", "0"]), 7,
                                                            onlink=True),),
                   "10.9.0.0/16": (RouteSpec("192.168.64.1", 2),)})  # not ours to want
    before = Tables(dict(have.neighs), dict(have.fdb), dict(have.routes))
    share_entries(have, want)
    assert have == before  # the same state ...
    (k, v), = have.neighs.items()
    assert k is next(iter(want.neighs)) and v is want.neighs[k]  # ... in the desired objects
    assert have.routes["10.5.2.0/24"] is want.routes["10.5.2.0/24"]
    assert have.fdb["0e:00:00:00:00:02"] == ("192.168.64.9",)


def test_memtrim_only_after_a_big_run() -> None:
    import gc
    assert not memtrim.release(memtrim.MIN_PEERS - 1)
    assert gc.get_freeze_count() == 0
    try:
        memtrim.release(memtrim.MIN_PEERS)  # glibc: calls malloc_trim; elsewhere: nothing
        assert gc.get_freeze_count() > 0  # what lives on is out of the collector's way
    finally:
        gc.unfreeze()


def test_an_own_lease_made_by_hand_still_has_its_key() -> None:
    own = Lease(IPv4Network("10.5.0.0/24"), LeaseAttrs(IPv4Address("192.168.64.1")),
                ipv6_subnet=IPv6Network("fc00:5::/64"))
    assert own.key == "10.5.0.0-24&fc00:5::-64"


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 4)), max_size=20),
       st.lists(st.tuples(st.integers(1, 30), st.integers(1, 4)), max_size=20))
def test_apply_plan_with_like_is_the_same_state_in_the_desired_objects(
        before: list[tuple[int, int]], want_l: list[tuple[int, int]]) -> None:
    from backends.state import apply_plan, diff

    def tables(spec: list[tuple[int, int]]) -> Tables:
        t = Tables()
        for i, g in spec:
            t.fdb[f"0e:00:00:00:00:{i:02x}"] = (f"192.168.64.{g}",)
            t.routes[f"10.5.{i}.0/24"] = (RouteSpec(f"10.5.{i}.{g}", 7, onlink=True),)
        return t
    have, want = tables(before), tables(want_l)
    plan = diff(want, have)
    plain = apply_plan(have, plan)
    shared = apply_plan(have, plan, like=want)
    assert shared == plain == Tables({}, want.fdb, want.routes)
    for mac, v in shared.fdb.items():
        assert v is want.fdb[mac] or (mac in have.fdb and have.fdb[mac] == v)
    for cidr, r in shared.routes.items():
        assert r is want.routes[cidr] or (cidr in have.routes and have.routes[cidr] == r)
