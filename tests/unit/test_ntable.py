"""The neighbour-table reader and its advice (flannel#928), without root: messages encoded
by pyroute2 (the oracle) parse to the thresholds and entry count they carry; the advice
names the sysctl and values; doctor's finding and flanneld's once-only warning."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ndtmsg import ndtmsg

from flanneld import neightables
from flanneld.ctl import doctor
from netlink import ntable
from netlink.uapi import AF_INET, AF_INET6


def encoded(family: int, name: str, t1: int, t2: int, t3: int, entries: int) -> bytes:
    msg = ndtmsg()
    msg["family"] = family
    msg["attrs"] = [["NDTA_NAME", name], ["NDTA_THRESH1", t1], ["NDTA_THRESH2", t2],
                    ["NDTA_THRESH3", t3],
                    ["NDTA_CONFIG", {"key_len": 4, "entry_size": 400, "entries": entries,
                                     "last_flush": 1, "last_rand": 2, "hash_rnd": 3,
                                     "hash_mask": 7, "hash_chain_gc": 0, "proxy_qlen": 0}]]
    msg.encode()
    return bytes(msg.data)


@given(st.sampled_from([AF_INET, AF_INET6]), st.integers(0, 2**31), st.integers(0, 2**31),
       st.integers(0, 2**31), st.integers(0, 2**31))
def test_parse_matches_pyroute2(family: int, t1: int, t2: int, t3: int, entries: int) -> None:
    data = encoded(family, "arp_cache", t1, t2, t3, entries)
    row = ntable.parse_ntable(data, 16, len(data))  # past the 16-byte nlmsghdr
    assert row == ntable.NeighTable(family, "arp_cache", t1, t2, t3, entries)


def test_per_device_parameter_messages_are_not_tables() -> None:
    msg = ndtmsg()
    msg["family"] = AF_INET
    msg["attrs"] = [["NDTA_NAME", "arp_cache"]]  # the dump's per-device parms have no thresholds
    msg.encode()
    data = bytes(msg.data)
    assert ntable.parse_ntable(data, 16, len(data)) is None


ARP = ntable.NeighTable(AF_INET, "arp_cache", 128, 512, 1024, 40)
ND = ntable.NeighTable(AF_INET6, "ndisc_cache", 128, 512, 1024, 9)


def test_advice_thresholds() -> None:
    assert ntable.advice(ARP, 512 - ntable.HEADROOM) is None  # exactly at gc_thresh2: fine
    problem, fix = ntable.advice(ARP, 300) or ("", "")
    assert "above gc_thresh2 512" in problem and "556 arp_cache entries" in problem
    assert fix.startswith("sysctl -w net.ipv4.neigh.default.gc_thresh1=1024 "
                          "net.ipv4.neigh.default.gc_thresh2=2048 "
                          "net.ipv4.neigh.default.gc_thresh3=4096")
    problem, _ = ntable.advice(ARP, 700) or ("", "")
    assert "near gc_thresh3 1024" in problem
    problem, fix = ntable.advice(ND, 4031) or ("", "")
    assert "more than gc_thresh3 1024" in problem and "net.ipv6.neigh.default.gc_thresh3" in fix


@pytest.mark.parametrize("peers", [0, 1, 255, 256, 1000, 5000, 10000])
def test_the_advised_values_fit(peers: int) -> None:
    found = ntable.advice(ARP, peers)
    if found is None:
        assert peers + ntable.HEADROOM <= ARP.thresh2
        return
    values = [int(part.split("=")[1]) for part in found[1].split()[2:5]]
    t1, t2, t3 = values
    assert peers + ntable.HEADROOM <= t1 < t2 < t3  # every entry below the first threshold
    assert ntable.advice(ntable.NeighTable(AF_INET, "arp_cache", t1, t2, t3, 0), peers) is None


def test_doctor_finding() -> None:
    assert doctor.check_neigh(None, 5, (AF_INET,)).status == doctor.SKIP
    ok = doctor.check_neigh([ARP, ND], 63, (AF_INET,))
    assert ok.status == doctor.OK and "ndisc" not in ok.detail and "gc_thresh3 1024" in ok.detail
    warn = doctor.check_neigh([ARP, ND], 400, (AF_INET, AF_INET6))
    assert warn.status == doctor.WARN and "arp_cache" in warn.detail and "ndisc" in warn.detail
    assert "net.ipv4.neigh" in warn.what_to_do and "net.ipv6.neigh" in warn.what_to_do
    assert doctor.check_neigh([ARP], 900, (AF_INET,)).status == doctor.FAIL


def test_flanneld_warns_once_per_problem(caplog: pytest.LogCaptureFixture) -> None:
    # this kernel's own tables (an RTM_GETNEIGHTBL dump needs no privilege)
    (arp,) = [t for t in neightables.read_tables() if t.family == AF_INET]
    assert arp.name == "arp_cache" and 0 < arp.thresh1 <= arp.thresh2 <= arp.thresh3
    many = arp.thresh3  # surely too many for this table
    watch = neightables.NeighTableWatch(ipv4=True, ipv6=False)
    caplog.set_level(logging.WARNING, "pyflannel.neightables")
    watch.check(0)
    watch.check(many)
    watch.check(many)  # the same count: not read again, not said again
    watch.check(many + 1)  # the same problem in other words is a new warning
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 2, texts
    assert f"{many} peers" in texts[0] and f"{many + 1} peers" in texts[1]
    assert f"gc_thresh3 {arp.thresh3}" in texts[0] and "sysctl -w" in texts[0]
