"""The underlay decoder (flannelctl trace, netns-lab capture) on IPv6 and IPv4 frames built
with scapy: VXLAN over IPv6 and IPv4, inner IPv6 (ICMPv6 echo, TCP, UDP) and IPv4, plain
IPv6 (host-gw), extension headers, what is hidden without --all, and garbage in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flanneld.capture import decode, format_line

scapy_inet = pytest.importorskip("scapy.layers.inet")
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

H1, H2 = "fd7a::1", "fd7a::2"
POD1, POD2 = "fc00:7:0:5::2", "fc00:7:0:9::2"
MAC_A, MAC_B = "0e:7a:19:3b:d0:0f", "c6:d2:32:6f:8f:44"


def eth(payload: Any) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / payload)


def inner(payload: Any) -> Any:
    return Ether(src=MAC_A, dst=MAC_B) / payload


def vxlan6(payload: Any, vni: int = 1, port: int = 8472) -> bytes:
    return eth(IPv6(src=H1, dst=H2) / UDP(sport=40000, dport=port) / VXLAN(vni=vni)
               / inner(payload))


def test_ping6_in_vxlan_over_ipv6() -> None:
    d = decode(vxlan6(IPv6(src=POD1, dst=POD2) / ICMPv6EchoRequest(id=7, seq=1)))
    assert d == {"encap": "vxlan", "outer_family": "ipv6", "outer_src": H1, "outer_dst": H2,
                 "port": 8472, "vni": 1, "len": 40 + 8 + 8 + 14 + 40 + 8,
                 "inner_mac_dst": MAC_B, "inner_mac_src": MAC_A, "inner_family": "ipv6",
                 "inner_src": POD1, "inner_dst": POD2, "inner_proto": "icmp6 echo-request"}
    assert format_line(d, 0.0).split(" ", 1)[1] == (
        f"VXLAN6 {H1} > {H2} udp/8472 vni 1 | inner {POD1} > {POD2} icmp6 echo-request")
    reply = decode(vxlan6(IPv6(src=POD2, dst=POD1) / ICMPv6EchoReply(), vni=4096, port=4789))
    assert reply is not None
    assert (reply["vni"], reply["port"], reply["inner_proto"]) == (4096, 4789, "icmp6 echo-reply")


@pytest.mark.parametrize(("l4", "want"), [
    (TCP(sport=40001, dport=80), "tcp 40001 > 80"),
    (UDP(sport=5353, dport=53), "udp 5353 > 53"),
])
def test_tcp_and_udp_over_ipv6_inside_vxlan(l4: Any, want: str) -> None:
    d = decode(vxlan6(IPv6(src=POD1, dst=POD2) / l4))
    assert d is not None and (d["inner_family"], d["inner_proto"]) == ("ipv6", want)


def test_families_mix_both_ways() -> None:
    # flannel.<VNI> (IPv4 underlay) never carries IPv6, but the decoder does not assume it
    v4_outer = eth(IP(src="192.168.100.1", dst="192.168.100.2") / UDP(sport=1, dport=8472)
                   / VXLAN(vni=1) / inner(IPv6(src=POD1, dst=POD2) / ICMPv6EchoRequest()))
    d = decode(v4_outer)
    assert d is not None and (d["outer_family"], d["inner_family"]) == ("ipv4", "ipv6")
    assert format_line(d, 0.0).split(" ")[1] == "VXLAN"
    d = decode(vxlan6(IP(src="10.7.5.2", dst="10.7.9.2") / ICMP(type=8)))
    assert d is not None and (d["outer_family"], d["inner_family"]) == ("ipv6", "ipv4")
    assert d["inner_proto"] == "icmp echo-request"


def test_ipv4_vxlan_is_decoded_as_before() -> None:
    d = decode(eth(IP(src="192.168.64.4", dst="192.168.64.3") / UDP(sport=40000, dport=8472)
                   / VXLAN(vni=1) / inner(IP(src="10.5.34.2", dst="10.5.52.2") / ICMP(type=8))))
    assert d is not None
    assert (d["encap"], d["outer_src"], d["outer_dst"], d["vni"], d["inner_proto"]) == (
        "vxlan", "192.168.64.4", "192.168.64.3", 1, "icmp echo-request")
    assert "VXLAN 192.168.64.4 > 192.168.64.3 udp/8472 vni 1 | inner 10.5.34.2 > 10.5.52.2 " \
           "icmp echo-request" in format_line(d, 0.0)
    arp = decode(eth(IP(src="192.168.64.4", dst="192.168.64.3") / UDP(dport=8472)
                     / VXLAN(vni=1) / inner(ARP(psrc="10.5.34.0", pdst="10.5.52.0"))))
    assert arp is not None and arp["inner_proto"] == "arp" and arp["inner_dst"] == "10.5.52.0"


def test_plain_ipv6_is_host_gw() -> None:
    d = decode(eth(IPv6(src=POD1, dst=POD2) / ICMPv6EchoReply()))
    assert d == {"encap": "none", "family": "ipv6", "src": POD1, "dst": POD2,
                 "proto": "icmp6 echo-reply", "len": 48}
    assert format_line(d, 0.0).split(" ", 1)[1] == (
        f"IP6   {POD1} > {POD2} icmp6 echo-reply (not encapsulated)")
    d = decode(eth(IPv6(src=H1, dst=H2) / ICMPv6PacketTooBig(mtu=1430) / IPv6()))
    assert d is not None and d["proto"] == "icmp6 packet-too-big mtu 1430"
    d = decode(eth(IP(src="10.5.1.1", dst="10.5.2.2") / ICMP(type=3, code=4, nexthopmtu=1450)))
    assert d is not None and d["proto"] == "icmp unreachable frag-needed mtu 1450"


def test_underlay_chatter_is_hidden_unless_all() -> None:
    noise = [eth(IPv6(src=H1, dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt=H2)),
             eth(IPv6(src=H2, dst=H1) / ICMPv6ND_NA(tgt=H2)),
             eth(IPv6(src="fe80::1", dst="ff02::16") / IPv6ExtHdrHopByHop() / ICMPv6MLReport2()),
             eth(IPv6(src=H1, dst="fd7a::250") / TCP(sport=50000, dport=2379)),
             eth(ARP(psrc="192.168.100.1", pdst="192.168.100.2"))]
    assert [decode(f) for f in noise] == [None] * len(noise)
    shown = [decode(f, show_all=True) for f in noise]
    assert all(d is not None for d in shown)
    assert shown[0] is not None and shown[0]["proto"] == f"icmp6 neighbor-solicitation {H2}"
    assert shown[2] is not None and shown[2]["proto"] == "icmp6 mldv2-report"
    assert shown[4] is not None and (shown[4]["encap"], shown[4]["op"]) == ("arp", 1)


def test_extension_headers_vlan_tags_and_fragments() -> None:
    d = decode(eth(IPv6(src=H1, dst=H2) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0)
                   / UDP(sport=40000, dport=8472) / VXLAN(vni=3)
                   / inner(IPv6(src=POD1, dst=POD2) / ICMPv6EchoRequest())))
    assert d is not None and (d["encap"], d["vni"], d["inner_proto"]) == (
        "vxlan", 3, "icmp6 echo-request")
    later = decode(eth(IPv6(src=H1, dst=H2) / IPv6ExtHdrFragment(offset=100, nh=17)
                       / (b"\x00" * 40)))
    assert later is not None and (later["encap"], later["proto"]) == ("none", "udp fragment")
    tagged = bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=10) / IPv6(src=H1, dst=H2)
                   / UDP(dport=8472) / VXLAN(vni=1) / inner(IPv6(src=POD1, dst=POD2)))
    assert (decode(tagged) or {}).get("outer_family") == "ipv6"


def test_bare_ip_frames_and_other_ports() -> None:
    raw = bytes(IPv6(src=H1, dst=H2) / UDP(sport=1, dport=9999) / VXLAN(vni=2)
                / inner(IPv6(src=POD1, dst=POD2) / ICMPv6EchoRequest()))
    assert (decode(raw, ethernet=False) or {}).get("encap") == "none"
    d = decode(raw, frozenset({9999}), ethernet=False)
    assert d is not None and (d["encap"], d["vni"], d["port"]) == ("vxlan", 2, 9999)


def test_netns_lab_capture_decodes_with_the_same_code() -> None:
    import netns_lab.capture

    import flanneld.capture

    assert netns_lab.capture.decode is flanneld.capture.decode
    assert netns_lab.capture.format_line is flanneld.capture.format_line


SAMPLE = vxlan6(IPv6(src=POD1, dst=POD2) / TCP(sport=1, dport=2))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_garbage_never_raises(frame: bytes, show_all: bool, ethernet: bool) -> None:
    d = decode(frame, show_all=show_all, ethernet=ethernet)
    assert d is None or format_line(d, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SAMPLE)), st.integers(0, len(SAMPLE) - 1), st.integers(0, 255))
def test_truncated_or_flipped_frames_never_raise(cut: int, at: int, value: int) -> None:
    flipped = bytearray(SAMPLE)
    flipped[at] = value
    for frame in (SAMPLE[:cut], bytes(flipped)):
        for show_all in (False, True):
            d = decode(frame, show_all=show_all)
            assert d is None or format_line(d, 0.0)
