"""Lease keys and values against flannel's interop vectors (flannel-compat.md, vector B)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from flanneld.lease import (
    LeaseAttrs,
    LeaseError,
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
