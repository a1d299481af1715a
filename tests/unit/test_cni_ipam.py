"""host-local store and allocator: format, round robin, requests, exhaustion (temp dirs)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cni import ipam
from cni.protocol import INVALID_CONFIG, TRY_AGAIN_LATER, CniError


def sets(*subnets: str, **extra: str) -> list[ipam.RangeSet]:
    return ipam.parse_range_sets({"ranges": [[dict({"subnet": s}, **extra)] for s in subnets]})


def test_on_disk_format_is_host_locals(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "cbr0")
    chosen = ipam.allocate(store, sets("10.5.52.0/24"), "cid1", "eth0")
    assert chosen[0].cidr == "10.5.52.2/24" and str(chosen[0].range.gateway) == "10.5.52.1"
    d = tmp_path / "cbr0"
    assert (d / "10.5.52.2").read_bytes() == b"cid1\r\neth0"
    assert (d / "last_reserved_ip.0").read_text() == "10.5.52.2"
    assert (d / "lock").exists()


def test_round_robin_skips_released_and_gateway(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "n")
    rs = sets("10.9.0.0/29")  # .1 gateway, .2-.6 usable
    got = [ipam.allocate(store, rs, f"c{i}", "eth0")[0].ip for i in range(3)]
    assert [str(ip) for ip in got] == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    assert store.release("10.9.0.3", "c1", "eth0")
    assert str(ipam.allocate(store, rs, "c3", "eth0")[0].ip) == "10.9.0.5"  # not .3 again
    assert str(ipam.allocate(store, rs, "c4", "eth0")[0].ip) == "10.9.0.6"
    assert str(ipam.allocate(store, rs, "c5", "eth0")[0].ip) == "10.9.0.3"  # wrapped
    with pytest.raises(CniError) as info:
        ipam.allocate(store, rs, "c6", "eth0")
    assert info.value.code == TRY_AGAIN_LATER
    assert "no IP addresses available in range set: 10.9.0.1-10.9.0.6" in info.value.msg


def test_last_reserved_outside_set_starts_at_range_start(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "n")
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "last_reserved_ip.0").write_text("192.168.9.9")
    assert str(ipam.allocate(store, sets("10.9.0.0/29"), "c", "eth0")[0].ip) == "10.9.0.2"


def test_requested_ips(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "n")
    rs = sets("10.9.0.0/24")
    want = ipaddress.ip_address("10.9.0.77")
    assert ipam.allocate(store, rs, "a", "eth0", [want])[0].ip == want
    for bad, words in [("10.9.0.77", "not available"), ("10.9.0.1", "gateway"),
                       ("10.10.0.5", "in no range set")]:
        with pytest.raises(CniError) as info:
            ipam.allocate(store, rs, "b", "eth0", [ipaddress.ip_address(bad)])
        assert words in info.value.msg and info.value.code == INVALID_CONFIG


def test_dual_stack_one_per_set_and_all_or_nothing(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "n")
    rs = sets("10.9.0.0/24", "fd00:9::/120")
    got = ipam.allocate(store, rs, "a", "eth0")
    assert [c.cidr for c in got] == ["10.9.0.2/24", "fd00:9::2/120"]
    assert (tmp_path / "n" / "last_reserved_ip.1").read_text() == "fd00:9::2"
    with pytest.raises(CniError):  # v6 request not available: the v4 one must not stay
        ipam.allocate(store, rs, "b", "eth0", [ipaddress.ip_address("fd00:9::2")])
    assert store.reserved() == {"10.9.0.2", "fd00:9::2"}


def test_release_only_own_and_legacy(tmp_path: Path) -> None:
    store = ipam.Store(str(tmp_path), "n")
    ipam.allocate(store, sets("10.9.0.0/24"), "a", "eth0")
    assert not store.release("10.9.0.2", "a", "eth1")
    assert not store.release("10.9.0.2", "b", "eth0")
    (tmp_path / "n" / "10.9.0.50").write_text("legacy")
    assert store.release_all("legacy", "eth0") == ["10.9.0.50"]
    assert store.release("10.9.0.2", "a", "eth0")


@pytest.mark.parametrize(("ranges", "words"), [
    ([[{"subnet": "10.0.0.0/31"}]], "too small"),
    ([[{"subnet": "10.0.0.1/24"}]], "host bits"),
    ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.1.0.1"}]], "not in subnet"),
    ([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]], "overlaps"),
    ([[{"nosubnet": 1}]], "subnet"), ([], "no IP ranges")])
def test_range_validation(ranges: list[object], words: str) -> None:
    with pytest.raises(CniError) as info:
        ipam.parse_range_sets({"ranges": ranges})
    assert words in info.value.msg


def test_runtime_ip_ranges_prepended_and_legacy_form() -> None:
    rs = ipam.parse_range_sets({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10"},
                               [[{"subnet": "10.1.0.0/24"}]])
    assert [str(s[0].subnet) for s in rs] == ["10.1.0.0/24", "10.0.0.0/24"]
    assert str(rs[1][0].start) == "10.0.0.10"
    assert ipam.capacity(rs[0]) == 253
