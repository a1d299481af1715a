"""Interface choice as flannel makes it: --iface, --iface-regex, can-reach, then default."""

from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest

from flanneld.iface import (
    IfaceError,
    LinkInfo,
    choose_interface,
    links_from_ip_json,
    usable_addresses,
)

LINKS = [
    LinkInfo("lo", 1, (A("127.0.0.1"),), 65536),
    LinkInfo("eth0", 2, (A("169.254.3.3"), A("192.168.64.3")), 1500, is_default_route=True),
    LinkInfo("eth1", 3, (A("10.10.0.7"),), 9000),
    LinkInfo("ens5", 4, (A("172.16.0.9"), A("172.16.0.10")), 1450,
             dynamic=frozenset({A("172.16.0.9")})),
    LinkInfo("bare", 5, (), 1500),
]


def test_default_route_interface_and_its_first_global_address() -> None:
    c = choose_interface(LINKS)
    assert (c.name, c.index, c.address, c.mtu, c.public_ip) == (
        "eth0", 2, A("192.168.64.3"), 1500, A("192.168.64.3"))
    assert c.how == "default route"


def test_address_order_global_then_link_local_permanent_then_dynamic() -> None:
    assert usable_addresses(LINKS[1]) == [A("192.168.64.3"), A("169.254.3.3")]
    assert usable_addresses(LINKS[3]) == [A("172.16.0.10"), A("172.16.0.9")]
    assert usable_addresses(LINKS[0]) == []  # loopback addresses never carry the overlay


def test_iface_by_name_by_ip_and_first_that_fits_wins() -> None:
    assert choose_interface(LINKS, iface=["eth1"]).name == "eth1"
    c = choose_interface(LINKS, iface=["172.16.0.9"])
    assert (c.name, c.address) == ("ens5", A("172.16.0.9"))
    c = choose_interface(LINKS, iface=["nope", "bare", "eth1", "eth0"])
    assert c.name == "eth1" and c.how == "--iface eth1"


def test_iface_list_failing_falls_to_regex_not_default() -> None:
    c = choose_interface(LINKS, iface=["nope"], iface_regex=["^ens"])
    assert c.name == "ens5" and c.address == A("172.16.0.10")


def test_regex_matches_ips_before_names() -> None:
    # "1" appears in eth1's name but 10.10.0.7's IP is checked first, on any interface.
    c = choose_interface(LINKS, iface_regex=[r"^10\.10\."])
    assert (c.name, c.address) == ("eth1", A("10.10.0.7"))
    c = choose_interface(LINKS, iface_regex=["^172", "eth0"])
    assert (c.name, c.address) == ("ens5", A("172.16.0.10"))  # a matching IP itself
    assert choose_interface(LINKS, iface_regex=["^eth1$"]).address == A("10.10.0.7")
    assert choose_interface(LINKS, iface_regex=["zzz", "^eth"]).name == "eth0"


def test_can_reach_uses_the_route_lookup_result() -> None:
    c = choose_interface(LINKS, can_reach=(A("10.10.0.1"), 3))
    assert c.name == "eth1" and c.how.startswith("--iface-can-reach")


def test_public_ip_overrides_and_alone_picks_its_owner() -> None:
    c = choose_interface(LINKS, iface=["eth1"], public_ip=A("203.0.113.5"))
    assert c.address == A("10.10.0.7") and c.public_ip == A("203.0.113.5")
    c = choose_interface(LINKS, public_ip=A("10.10.0.7"))
    assert c.name == "eth1" and c.public_ip == A("10.10.0.7")
    # A NAT address nobody owns: default route, with that public IP (flannel fails here).
    c = choose_interface(LINKS, public_ip=A("203.0.113.5"))
    assert c.name == "eth0" and c.address == A("192.168.64.3")
    assert c.public_ip == A("203.0.113.5")


@pytest.mark.parametrize(("kwargs", "needles"), [
    ({"iface": ["eth9"]}, ["--iface eth9: no such interface", "lo, eth0, eth1, ens5, bare"]),
    ({"iface": ["10.9.9.9"]}, ["--iface 10.9.9.9: no interface has this address"]),
    ({"iface": ["bare"]}, ["bare has no usable IPv4 address"]),
    ({"iface": ["lo"]}, ["lo has no usable IPv4 address"]),
    ({"iface_regex": ["^wlan"]}, ["--iface-regex ^wlan: matches no interface"]),
    ({"iface": ["eth9"], "iface_regex": ["^wlan"]}, ["eth9", "^wlan"]),
    ({"can_reach": (A("8.8.8.8"), None)}, ["--iface-can-reach 8.8.8.8: no route"]),
])
def test_clear_errors_when_nothing_fits(kwargs: dict, needles: list[str]) -> None:
    with pytest.raises(IfaceError) as exc:
        choose_interface(LINKS, **kwargs)
    for needle in needles:
        assert needle in str(exc.value)


def test_no_default_route_says_what_to_pass() -> None:
    links = [LinkInfo("eth0", 2, (A("192.168.64.3"),), 1500)]
    with pytest.raises(IfaceError, match=r"no default route.*--iface"):
        choose_interface(links)
    bare = [LinkInfo("eth0", 2, (), 1500, is_default_route=True)]
    with pytest.raises(IfaceError, match="eth0 has no usable IPv4"):
        choose_interface(bare)


# `ip -j addr show` and `ip -j -4 route show table main default`, as iproute2 6.1 prints them.
IP_ADDR = [
    {"ifindex": 1, "ifname": "lo", "mtu": 65536, "addr_info": [
        {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"},
        {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host"}]},
    {"ifindex": 2, "ifname": "eth0", "mtu": 1500, "addr_info": [
        {"family": "inet", "local": "192.168.7.1", "prefixlen": 24, "scope": "global",
         "dynamic": True},
        {"family": "inet", "local": "10.1.1.1", "prefixlen": 24, "scope": "global"}]},
    {"ifindex": 3, "ifname": "eth1", "mtu": 9000, "addr_info": [
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
]
DEFAULTS = [
    {"dst": "default", "gateway": "10.9.0.1", "dev": "eth1", "metric": 100, "flags": []},
    {"dst": "default", "gateway": "192.168.7.2", "dev": "eth0", "metric": 5, "flags": []},
]


def test_links_from_ip_json() -> None:
    links = links_from_ip_json(IP_ADDR, DEFAULTS)
    assert [lk.name for lk in links] == ["lo", "eth0", "eth1"]
    eth0 = links[1]
    assert eth0.addresses == (A("192.168.7.1"), A("10.1.1.1")) and eth0.mtu == 1500
    assert eth0.dynamic == frozenset({A("192.168.7.1")})
    assert eth0.is_default_route and not links[2].is_default_route  # lowest metric wins
    assert links[2].addresses == ()
    c = choose_interface(links)
    assert (c.name, c.address) == ("eth0", A("10.1.1.1"))  # permanent before DHCP
    multipath = [{"dst": "default", "nexthops": [{"gateway": "10.9.0.1", "dev": "eth1"}]}]
    assert links_from_ip_json(IP_ADDR, multipath)[2].is_default_route
