"""Lease keys and values against flannel's interop vectors (flannel-compat.md, vector B)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from core.lease import (
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
    ("10.5.34.0-24", b'{"PublicIP":"1.2.3.4","PublicIPv6":"::1"}', None, "PublicIPv6 ::1"),
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
