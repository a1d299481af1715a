"""The IPv6 halves of lease keys and values, fuzzed like the IPv4 ones (test_parsers_fuzz.py):
dual-stack and IPv6-only keys, near misses of both, and values with PublicIPv6 and
BackendV6Data in every shape. Each parser gives a value or a LeaseError, never another
exception; what parses is canonical and round-trips byte for byte; and flannel's key
regex never reads one of our IPv6-only keys as an IPv4 subnet.
"""

from __future__ import annotations

import json
import os
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
PREFIX = "/coreos.com/network/subnets/"
FLANNEL_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")

ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(IPv6Address, st.one_of(st.integers(0, 2**128 - 1),
                                        st.integers(0, 2**16 - 1).map(lambda n: n << 112),
                                        st.integers(0, 2**32)))
v6net = st.builds(lambda a, p: IPv6Network((a, p), strict=False), ipv6, st.integers(0, 128))
v4net = st.builds(lambda a, p: IPv4Network((a, p), strict=False), ipv4, st.integers(0, 32))
hexish = st.text("0123456789abcdefABCDEF:.g-&", max_size=24)

# real keys, then every way of spelling them slightly wrong
v6_part = st.one_of(
    v6net.map(lambda n: f"{n.network_address.compressed}-{n.prefixlen}"),
    v6net.map(lambda n: f"{n.network_address.exploded}-{n.prefixlen}"),
    v6net.map(lambda n: f"{n.network_address.compressed.upper()}-{n.prefixlen}"),
    st.builds(lambda a, p: f"{a.compressed}-{p}", ipv6, st.integers(0, 300)),
    st.builds(lambda h, p: f"{h}-{p}", hexish, st.integers(-1, 200)), hexish)
v4_part = st.one_of(
    v4net.map(lambda n: f"{n.network_address}-{n.prefixlen}"),
    st.builds(lambda a, p: f"{a}-{p}", ipv4, st.integers(0, 40)), st.just(""))
keys = st.one_of(
    st.builds(lambda a, b: f"{a}&{b}", v4_part, v6_part),
    st.builds(lambda b: f"&{b}", v6_part),
    st.builds(lambda a, b, c: f"{a}&{b}&{c}", v4_part, v6_part, v6_part),
    v6_part, st.text(max_size=40))


@FUZZ
@given(keys)
def test_v6_key_parser_never_crashes_and_what_parses_is_canonical(key: str) -> None:
    try:
        v4, v6 = parse_subnet_key(PREFIX + key)
    except LeaseError as exc:
        assert 0 < len(str(exc)) < 400
        return
    assert v4 is not None or v6 is not None
    assert subnet_key(v4, v6) == key
    m = FLANNEL_KEY_RE.search(PREFIX + key)
    if v4 is None:
        assert m is None, key  # flannel skips our IPv6-only keys, never misreads them
    elif m is not None:  # where flannel reads the key, it reads the same subnets
        assert IPv4Network(f"{m.group(1)}/{m.group(2)}") == v4
        assert (IPv6Network(f"{m.group(3)}/{m.group(4)}") if m.group(3) else None) == v6


@FUZZ
@given(st.one_of(st.none(), v4net), v6net)
def test_every_key_we_write_parses_back(v4: IPv4Network | None, v6: IPv6Network) -> None:
    key = subnet_key(v4, v6)
    assert parse_subnet_key(PREFIX + key) == (v4, v6)
    assert "." not in key if v4 is None else True
    assert (FLANNEL_KEY_RE.search(PREFIX + key) is None) == (v4 is None)


macs = st.builds(lambda b: ":".join(f"{x:02x}" for x in b), st.binary(min_size=6, max_size=6))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                    st.text(max_size=8), ipv6.map(str), ipv4.map(str), macs)
backend_data = st.one_of(
    st.fixed_dictionaries({"VNI": st.one_of(st.integers(-1, 2**24), scalars),
                           "VtepMAC": st.one_of(macs, scalars)}),
    st.dictionaries(st.sampled_from(["vni", "VTEPMAC", "vtepmac", "x"]), scalars, max_size=3),
    scalars, st.lists(scalars, max_size=2))


def cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper()])


values = st.builds(
    lambda k4, ip, k6, ip6, kd, data, kd6, data6, btype: {
        k4: ip, k6: ip6, "BackendType": btype, kd: data, kd6: data6},
    cased("PublicIP"), st.one_of(ipv4.map(str), scalars), cased("PublicIPv6"),
    st.one_of(ipv6.map(str), ipv6.map(lambda a: a.exploded), scalars), cased("BackendData"),
    backend_data, cased("BackendV6Data"), backend_data,
    st.sampled_from(["vxlan", "host-gw", "", "udp"]))
NET = IPv4Network("10.5.0.0/16")
NET6 = IPv6Network("fd00:10:5::/48")


@FUZZ
@given(values, st.sampled_from(["10.5.34.0-24&fd00:10:5:34::-64", "&fd00:10:5:34::-64",
                                "10.5.34.0-24", "&fd00:10:5::-64", "10.5.52.0-24&fd99::-64"]),
       st.sampled_from([(NET, None), (NET, NET6), (None, NET6)]))
def test_v6_value_parser_never_crashes_and_round_trips(doc: dict[str, Any], key: str,
                                                       nets: tuple[Any, Any]) -> None:
    raw = json.dumps(doc)
    try:
        attrs = decode_attrs(raw)
    except LeaseError as exc:
        assert 0 < len(str(exc)) < 600
        return
    value = encode_attrs(attrs)
    assert decode_attrs(value) == attrs and encode_attrs(decode_attrs(value)) == value
    assert value.startswith(b'{"PublicIP":"') and b',"PublicIPv6":' in value
    if attrs.public_ipv6 is None:
        assert b'"PublicIPv6":null' in value
    lease = decode_lease(key, value)
    network, network6 = nets
    try:
        check_peer_lease(lease, network, ipv6_network=network6,
                         own_subnet=IPv4Network("10.5.52.0/24") if network else None,
                         own_ipv6_subnet=IPv6Network("fd00:10:5:52::/64") if network6 else None)
    except LeaseError as exc:
        assert lease.key in str(exc) and len(str(exc)) < 600
        return
    # accepted: it is usable in at least one family we run
    use4 = network is not None and lease.ipv4_subnet is not None
    use6 = network6 is not None and lease.ipv6_subnet is not None
    assert use4 or use6
    if use6 and not use4:
        assert attrs.public_ipv6 is not None and lease.ipv6_subnet is not None
        assert lease.ipv6_subnet.subnet_of(NET6)


@FUZZ
@given(ipv4, ipv6, st.integers(0, 2**24 - 1), macs, macs)
def test_dual_stack_vxlan_values_are_flannels_bytes(ip: IPv4Address, ip6: IPv6Address, vni: int,
                                                    mac: str, mac6: str) -> None:
    attrs = LeaseAttrs(ip, "vxlan", vxlan_backend_data(vni, mac), public_ipv6=ip6,
                       backend_v6_data=vxlan_backend_data(vni, mac6))
    value = encode_attrs(attrs)
    assert value == (f'{{"PublicIP":"{ip}","PublicIPv6":"{ip6.compressed}","BackendType":"vxlan",'
                     f'"BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"}},'
                     f'"BackendV6Data":{{"VNI":{vni},"VtepMAC":"{mac6}"}}}}').encode()
    assert decode_attrs(value) == attrs
    lease = Lease(None, attrs, IPv6Network("fd00:10:5:34::/64"))
    assert decode_lease(PREFIX + lease.key, value) == lease
