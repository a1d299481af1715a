"""Lease keys and values against flannel's interop vectors (flannel-compat.md, vector B)."""

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from core.lease import (
    Lease,
    LeaseAttrs,
    LeaseError,
    check_peer_lease,
    decode_attrs,
    decode_lease,
    encode_attrs,
    parse_subnet_key,
    subnet_key,
    vxlan_backend_data,
)

VXLAN = (b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
         b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')


def test_vxlan_value_is_byte_identical_to_flannel() -> None:
    attrs = LeaseAttrs(IPv4Address("192.168.64.3"), "vxlan",
                       vxlan_backend_data(1, "C6:D2:32:6F:8F:44"))
    assert encode_attrs(attrs) == VXLAN


@pytest.mark.parametrize("value", [
    b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"host-gw"}',
    b'{"PublicIP":"192.168.64.3","PublicIPv6":null}',
    VXLAN,
])
def test_round_trip(value: bytes) -> None:
    assert encode_attrs(decode_attrs(value)) == value


def test_lenient_read() -> None:
    attrs = decode_attrs(b'{"backendtype":"vxlan","publicip":"10.0.0.1",'
                         b'"BackendData":{"VtepMAC":"0e:7a:19:3b:d0:0f","VNI":1}}')
    assert attrs.public_ip == IPv4Address("10.0.0.1")
    assert attrs.vtep_mac == "0e:7a:19:3b:d0:0f" and attrs.vni == 1
    assert attrs.public_ipv6 is None


@pytest.mark.parametrize("value", [b"not json", b"[]", b'{"PublicIP":"fd00::1"}', b"{}",
                                   b'{"PublicIP":"1.2.3.4","BackendData":[1]}'])
def test_bad_values_raise_lease_error(value: bytes) -> None:
    with pytest.raises(LeaseError):
        decode_attrs(value)


def test_keys() -> None:
    assert subnet_key(IPv4Network("10.5.52.0/24")) == "10.5.52.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.52.0-24&fd00:10:5:52::-64") == (
        IPv4Network("10.5.52.0/24"), IPv6Network("fd00:10:5:52::/64"))
    lease = decode_lease("/coreos.com/network/subnets/10.5.34.0-24", VXLAN)
    assert lease.is_reservation and lease.subnet == IPv4Network("10.5.34.0/24")
    for bad in ("not-a-subnet", "10.5.52.1-24", "10.5.52.0-33", "10.5.52.0-24x"):
        with pytest.raises(LeaseError):
            parse_subnet_key(bad)


DUAL_KEY = "/coreos.com/network/subnets/10.5.52.0-24&fd00:10:5:52::-64"
DUAL = (b'{"PublicIP":"192.168.64.3","PublicIPv6":"fd00:64::3","BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
        b'"BackendV6Data":{"VNI":1,"VtepMAC":"5a:1b:2c:3d:4e:5f"}}')


def test_dual_stack_vector_round_trips() -> None:
    lease = decode_lease(DUAL_KEY, DUAL)
    assert lease.ipv6_subnet == IPv6Network("fd00:10:5:52::/64")
    assert lease.key == "10.5.52.0-24&fd00:10:5:52::-64"
    assert encode_attrs(lease.attrs) == DUAL


def test_wireguard_and_udp_vectors_round_trip() -> None:
    for value in (b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"wireguard",'
                  b'"BackendData":{"PublicKey":"abc=","Port":51820}}',
                  b'{"PublicIP":"192.168.64.3","PublicIPv6":null}'):
        assert encode_attrs(decode_attrs(value)) == value


NET = IPv4Network("10.5.0.0/16")
REMOTE = decode_lease("/coreos.com/network/subnets/10.5.34.0-24",
                      b'{"PublicIP":"192.168.64.4","PublicIPv6":null,"BackendType":"vxlan",'
                      b'"BackendData":{"VNI":1,"VtepMAC":"0e:7a:19:3b:d0:0f"}}')


def test_check_peer_lease_accepts_vector_d_peer() -> None:
    check_peer_lease(REMOTE, NET, own_subnet=IPv4Network("10.5.52.0/24"),
                     own_public_ips=[IPv4Address("192.168.64.3")])
    check_peer_lease(decode_lease(DUAL_KEY, DUAL), NET,
                     ipv6_network=IPv6Network("fd00:10:5::/48"))


@pytest.mark.parametrize("key,value,own,words", [
    ("10.6.34.0-24", None, None, "outside Network"),
    ("10.5.52.0-23", None, "10.5.52.0/24", "overlaps our own"),
    ("10.5.0.0-16", None, "10.5.52.0/24", "overlaps our own"),
    ("10.5.34.0-24", b'{"PublicIP":"192.168.64.3"}', None, "our own address"),
    ("10.5.34.0-24", b'{"PublicIP":"127.0.0.1"}', None, "loopback"),
    ("10.5.34.0-24", b'{"PublicIP":"0.0.0.0"}', None, "unspecified"),
    ("10.5.34.0-24", b'{"PublicIP":"224.0.0.5"}', None, "multicast"),
    ("10.5.34.0-24", b'{"PublicIP":"255.255.255.255"}', None, "broadcast"),
    ("10.5.34.0-24&fd00:10:5:34::-64", b'{"PublicIP":"1.2.3.4","PublicIPv6":"::1"}', None,
     "PublicIPv6 ::1"),
    ("10.5.34.0-24&fd00:10:5:34::-64", b'{"PublicIP":"1.2.3.4","PublicIPv6":"fd00::9",'
     b'"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:7a:19:3b:d0:0f"},'
     b'"BackendV6Data":{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}}', None, "BackendV6Data"),
    ("10.5.34.0-24", b'{"PublicIP":"1.2.3.4","BackendType":"vxlan",'
                     b'"BackendData":{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}}', None, "multicast"),
    ("10.5.34.0-24", b'{"PublicIP":"1.2.3.4","BackendType":"vxlan",'
                     b'"BackendData":{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}}', None, "zeros"),
    ("10.5.34.0-24", b'{"PublicIP":"1.2.3.4","BackendType":"vxlan",'
                     b'"BackendData":{"VNI":1}}', None, "VtepMAC None"),
    ("10.5.34.0-24", b'{"PublicIP":"1.2.3.4","BackendType":"vxlan",'
                     b'"BackendData":{"VNI":-1,"VtepMAC":"0e:7a:19:3b:d0:0f"}}', None, "VNI -1"),
    ("10.5.34.0-24&fd99::-64", b'{"PublicIP":"1.2.3.4"}', None, "outside IPv6Network"),
])
def test_check_peer_lease_rejects(key: str, value: bytes | None, own: str | None,
                                  words: str) -> None:
    lease = decode_lease(key, value or b'{"PublicIP":"192.168.64.4"}')
    with pytest.raises(LeaseError, match=words) as info:
        check_peer_lease(lease, NET, own_subnet=IPv4Network(own) if own else None,
                         own_public_ips=[IPv4Address("192.168.64.3")],
                         ipv6_network=IPv6Network("fd00:10:5::/48"))
    assert lease.key in str(info.value)


# -- IPv6: flannel's vectors and our IPv6-only key form ---------------------------------

# flannel's key regex (pkg/subnet/subnet.go), unanchored at the start, as Go applies it
FLANNEL_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


def test_flannel_key_vectors() -> None:
    assert parse_subnet_key("10.12.13.0-24&fd00:12:13::-56") == (
        IPv4Network("10.12.13.0/24"), IPv6Network("fd00:12:13::/56"))
    assert subnet_key(IPv4Network("10.5.1.0/24"), IPv6Network("fc00::/64")) == \
        "10.5.1.0-24&fc00::-64"
    for bad in ("10.12.13.0-24&2001::", "10.12.13.0-24&2001::-56hi", "10.5.1.0-24&FC00::-64",
                "10.5.1.0-24&fc00:0:0::-64", "&", "", "&fc00::", "&fc00::-129",
                "&fc00::1-64", "&fc00:0::-64", "fc00::-64", "-&fc00::-64"):
        with pytest.raises(LeaseError):
            parse_subnet_key(bad)


def test_ipv6_only_key_is_ours_and_flannel_skips_it() -> None:
    v6 = IPv6Network("fd00:10:5:52::/64")
    assert subnet_key(None, v6) == "&fd00:10:5:52::-64"
    assert parse_subnet_key("/coreos.com/network/subnets/&fd00:10:5:52::-64") == (None, v6)
    for prefix in ("/coreos.com/network", "/1.2.3.4/5", "/k8s.1.2/net-1.2.3.4-24"):
        for net in (v6, IPv6Network("fd00::1:0/120"), IPv6Network("2001:db8:1:2:3:4:5:0/126")):
            key = f"{prefix}/subnets/{subnet_key(None, net)}"
            assert FLANNEL_KEY_RE.search(key) is None, key  # never read as an IPv4 subnet
    # flannel's own test says so too: "&2001::-56" is invalid
    assert FLANNEL_KEY_RE.search("&2001::-56") is None
    with pytest.raises(LeaseError):
        subnet_key(None, None)


def test_ipv6_only_lease() -> None:
    value = (b'{"PublicIP":"0.0.0.0","PublicIPv6":"fd72::3","BackendType":"vxlan",'
             b'"BackendV6Data":{"VNI":1,"VtepMAC":"5a:1b:2c:3d:4e:5f"}}')
    lease = decode_lease("/coreos.com/network/subnets/&fd00:10:5:52::-64", value)
    assert lease.ipv4_subnet is None and lease.families == (False, True)
    assert lease.key == "&fd00:10:5:52::-64" and encode_attrs(lease.attrs) == value
    with pytest.raises(LeaseError, match="IPv6-only"):
        _ = lease.subnet
    with pytest.raises(LeaseError):
        Lease(None, lease.attrs)
    net6 = IPv6Network("fd00:10:5::/48")
    check_peer_lease(lease, None, ipv6_network=net6)  # an IPv6-only node programs it
    with pytest.raises(LeaseError, match="no IPv4 subnet"):
        check_peer_lease(lease, IPv4Network("10.5.0.0/16"))  # an IPv4-only node cannot
    check_peer_lease(lease, IPv4Network("10.5.0.0/16"), ipv6_network=net6)  # dual: its v6
    with pytest.raises(LeaseError, match="BackendV6Data"):
        check_peer_lease(decode_lease("&fd00:10:5:52::-64", value.replace(b"5a:", b"01:")),
                         None, ipv6_network=net6)
    with pytest.raises(LeaseError, match="PublicIPv6 is null"):
        check_peer_lease(decode_lease("&fd00:10:5:52::-64", value.replace(b'"fd72::3"', b"null")),
                         None, ipv6_network=net6)
    with pytest.raises(LeaseError, match="outside IPv6Network"):
        check_peer_lease(lease, None, ipv6_network=IPv6Network("fd00:99::/48"))


def test_dual_stack_value_byte_identical_to_flannel() -> None:
    attrs = LeaseAttrs(IPv4Address("192.168.1.10"), "vxlan",
                       vxlan_backend_data(1, "AA:BB:CC:00:00:01"),
                       public_ipv6=IPv6Address("2001:db8::10"),
                       backend_v6_data=vxlan_backend_data(1, "BB:CC:DD:00:00:02"))
    assert encode_attrs(attrs) == (
        b'{"PublicIP":"192.168.1.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:01"},'
        b'"BackendV6Data":{"VNI":1,"VtepMAC":"bb:cc:dd:00:00:02"}}')
    # Go prints IPv6 per RFC 5952: lowercase, the longest zero run as ::, a lone 0 kept
    odd = LeaseAttrs(IPv4Address("1.2.3.4"), public_ipv6=IPv6Address("2001:DB8:0:1:0:0:0:1"))
    assert encode_attrs(odd) == b'{"PublicIP":"1.2.3.4","PublicIPv6":"2001:db8:0:1::1"}'
    with pytest.raises(LeaseError, match="BackendV6Data"):
        decode_attrs(b'{"PublicIP":"1.2.3.4","BackendV6Data":"x"}')
    with pytest.raises(LeaseError, match="PublicIPv6"):
        decode_attrs(b'{"PublicIP":"1.2.3.4","PublicIPv6":"1.2.3.4"}')


def test_ipv4_only_node_ignores_a_dual_stack_peers_ipv6_half() -> None:
    bad6 = (b'{"PublicIP":"192.168.64.3","PublicIPv6":"::1","BackendType":"vxlan",'
            b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
            b'"BackendV6Data":{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}}')
    lease = decode_lease("10.5.52.0-24&fd99::-64", bad6)
    check_peer_lease(lease, IPv4Network("10.5.0.0/16"))  # only its IPv4 half is used
    with pytest.raises(LeaseError):
        check_peer_lease(lease, IPv4Network("10.5.0.0/16"),
                         ipv6_network=IPv6Network("fd99::/48"))
