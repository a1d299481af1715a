"""The IPv6 half of interface choice: the global v6 address of the chosen interface,
permanent before dynamic, never deprecated or temporary; --iface with an IPv6 address;
--public-ipv6; IPv6-only; a clear error naming the interface when it has none."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address as A
from ipaddress import IPv6Address as A6

import pytest

from flanneld.iface import (
    IFA_F_DADFAILED,
    IFA_F_DEPRECATED,
    IFA_F_PERMANENT,
    IFA_F_TEMPORARY,
    Addr6,
    IfaceError,
    LinkInfo,
    choose_interface,
    parse_addr6,
    usable_ipv6,
)

DYNAMIC = 0  # a SLAAC/DHCPv6 address: no IFA_F_PERMANENT

ETH0 = LinkInfo("eth0", 2, (A("192.168.64.3"),), 1500, is_default_route=True, addresses6=(
    Addr6(A6("fe80::1"), IFA_F_PERMANENT),
    Addr6(A6("2001:db8::aaaa"), DYNAMIC | IFA_F_TEMPORARY),
    Addr6(A6("2001:db8::dead"), IFA_F_PERMANENT | IFA_F_DEPRECATED),
    Addr6(A6("2001:db8::d1"), DYNAMIC),
    Addr6(A6("fd72::3"), IFA_F_PERMANENT),
    Addr6(A6("fd72::bad"), IFA_F_PERMANENT | IFA_F_DADFAILED),
))
ETH1 = LinkInfo("eth1", 3, (A("10.10.0.7"),), 9000, is_default_route6=True, addresses6=(
    Addr6(A6("fd99::7")),))
ONLY_LL = LinkInfo("eth2", 4, (A("172.16.0.9"),), 1500, addresses6=(
    Addr6(A6("fe80::9")), Addr6(A6("2001:db8::9"), IFA_F_DEPRECATED)))
LINKS = [LinkInfo("lo", 1, (A("127.0.0.1"),), 65536, addresses6=(Addr6(A6("::1")),)),
         ETH0, ETH1, ONLY_LL]


def test_usable_order_permanent_first_never_deprecated_temporary_or_link_local() -> None:
    assert usable_ipv6(ETH0) == [A6("fd72::3"), A6("2001:db8::d1")]
    assert usable_ipv6(ONLY_LL) == [] and usable_ipv6(LINKS[0]) == []


def test_dual_stack_default_route_carries_its_ipv6_address() -> None:
    c = choose_interface(LINKS, ipv6=True)
    assert (c.name, c.address, c.address6, c.public_ipv6) == (
        "eth0", A("192.168.64.3"), A6("fd72::3"), A6("fd72::3"))
    c = choose_interface(LINKS, ipv6=True, public_ipv6=A6("2001:db8:ffff::1"))
    assert (c.address6, c.public_ipv6) == (A6("fd72::3"), A6("2001:db8:ffff::1"))
    assert choose_interface(LINKS).address6 is None  # IPv4-only: no IPv6 looked at


def test_iface_accepts_an_ipv6_address() -> None:
    c = choose_interface(LINKS, iface=["2001:db8::d1"], ipv6=True)
    assert (c.name, c.address, c.address6, c.how) == (
        "eth0", A("192.168.64.3"), A6("2001:db8::d1"), "--iface 2001:db8::d1")
    c = choose_interface(LINKS, iface=["fd99::7"], ipv4=False, ipv6=True)
    assert (c.name, c.address, c.public_ip, c.public_ipv6) == (
        "eth1", A("0.0.0.0"), A("0.0.0.0"), A6("fd99::7"))
    with pytest.raises(IfaceError, match="fd00::77: no interface has this address"):
        choose_interface(LINKS, iface=["fd00::77"], ipv6=True)
    # and by name or v4 address, the interface's own v6 address comes along
    assert choose_interface(LINKS, iface=["10.10.0.7"], ipv6=True).address6 == A6("fd99::7")


def test_no_usable_ipv6_address_names_the_interface() -> None:
    with pytest.raises(IfaceError) as info:
        choose_interface(LINKS, iface=["eth2"], ipv6=True)
    msg = str(info.value)
    assert "eth2" in msg and "no usable IPv6 address" in msg and "--public-ipv6" in msg
    assert "fe80::9" in msg  # what it does have
    # --public-ipv6 (e.g. behind NAT66) is enough
    c = choose_interface(LINKS, iface=["eth2"], ipv6=True, public_ipv6=A6("2001:db8::99"))
    assert (c.address6, c.public_ipv6) == (None, A6("2001:db8::99"))


def test_ipv6_only_uses_the_ipv6_default_route_and_needs_no_ipv4() -> None:
    bare = LinkInfo("v6only", 7, (), 1500, is_default_route6=True,
                    addresses6=(Addr6(A6("fd00:1::7")),))
    c = choose_interface([LINKS[0], bare], ipv4=False, ipv6=True)
    assert (c.name, c.address, c.public_ip, c.public_ipv6) == (
        "v6only", A("0.0.0.0"), A("0.0.0.0"), A6("fd00:1::7"))
    c = choose_interface(LINKS, ipv4=False, ipv6=True, public_ipv6=A6("fd72::3"))
    assert (c.name, c.address6, c.how) == ("eth0", A6("fd72::3"), "owner of --public-ipv6 fd72::3")
    with pytest.raises(IfaceError, match="no IPv6 default route"):
        choose_interface([ETH0], ipv4=False, ipv6=True)
    c = choose_interface(LINKS, iface_regex=[r"^fd99:"], ipv4=False, ipv6=True)
    assert (c.name, c.address6) == ("eth1", A6("fd99::7"))


def _newaddr(family: int, flags8: int, index: int, attrs: list[tuple[int, bytes]]) -> bytes:
    body = struct.pack("=BBBBI", family, 64, flags8, 0, index)
    for kind, data in attrs:
        size = 4 + len(data)
        body += struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)
    return body


def test_parse_addr6_reads_the_32_bit_flags() -> None:
    raw = A6("2001:db8::1").packed
    msg = _newaddr(10, 0x20, 5, [(1, raw), (8, struct.pack("=I", 0x180))])
    assert parse_addr6(msg, 0, len(msg)) == (5, Addr6(A6("2001:db8::1"), 0x180))
    msg = _newaddr(10, IFA_F_TEMPORARY, 6, [(1, raw)])  # no IFA_FLAGS: the header's 8 bits
    assert parse_addr6(msg, 0, len(msg)) == (6, Addr6(A6("2001:db8::1"), IFA_F_TEMPORARY))
    msg = _newaddr(2, 0, 5, [(2, A("10.0.0.1").packed)])
    assert parse_addr6(msg, 0, len(msg)) is None
