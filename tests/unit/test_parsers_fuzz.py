"""Property tests: every parser gives a value or its own clear error, never another exception.

Inputs are both arbitrary and "near misses" built from the real vocabulary
(field names in random case, plausible addresses, wrong JSON types), which is
where parsers usually break.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import ConfigError, parse_network_config
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
from core.subnetenv import SubnetEnv, SubnetEnvError, parse_subnet_env, render_subnet_env
from flanneld.events import LeaseEvent, PeerView, apply_event

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
cidr4 = st.builds(lambda a, p: f"{a}/{p}", ipv4, st.integers(0, 34))
ipv6_text = st.builds(lambda a: str(IPv6Network((a << 64, 64))), st.integers(0, 2**64 - 1))
plausible = st.one_of(
    ipv4.map(str), cidr4, ipv6_text, st.sampled_from(["", "0.0.0.0", "10.5.0.0/16", "x/8",
                                                      "10.5.1.0", "fd00::/48", "vxlan",
                                                      "host-gw", "VXLAN", "udp"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True), plausible, st.text(max_size=8))


def cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


def json_doc(names: list[str], nested: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    def obj(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        keys = st.one_of(*(cased(n) for n in fields), st.text(max_size=6))
        return st.dictionaries(keys, scalars, max_size=len(fields) + 1)
    top = obj(names)
    subs = {k: st.one_of(obj(v), scalars) for k, v in nested.items()}
    return st.builds(lambda base, extra: {**base, **extra}, top,
                     st.fixed_dictionaries({}, optional=subs))


CONFIG_NAMES = ["Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableIPv4", "EnableIPv6",
                "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax",
                "EnableNFTables"]
BACKEND_NAMES = ["Type", "VNI", "Port", "MTU", "GBP", "Learning", "DirectRouting"]
small_ints = st.integers(-1, 130)
networks = st.builds(lambda a, p: str(IPv4Network((a, p), strict=False)),
                     st.integers(0, 2**32 - 1), st.integers(8, 30))
# mostly-valid documents: a real Network plus random (often sensible) fields
config_docs = st.builds(
    lambda net, key, doc, extra: {key: net, **doc, **extra},
    networks, cased("Network"), json_doc(CONFIG_NAMES, {"Backend": BACKEND_NAMES}),
    st.dictionaries(st.sampled_from(["SubnetLen", "subnetlen", "IPv6SubnetLen"]), small_ints,
                    max_size=1))
macs = st.builds(lambda b: ":".join(f"{x:02x}" for x in b), st.binary(min_size=6, max_size=6))
lease_docs = st.builds(
    lambda ip, key, data, doc: {key: ip, "BackendType": "vxlan", "BackendData": data, **doc},
    ipv4.map(str), cased("PublicIP"),
    st.fixed_dictionaries({"VNI": st.one_of(st.integers(-1, 2**24), scalars),
                           "VtepMAC": st.one_of(macs, scalars)}),
    json_doc(["PublicIP", "PublicIPv6", "BackendType"],
             {"BackendData": ["VNI", "VtepMAC"], "BackendV6Data": ["VNI", "VtepMAC"]}))


@FUZZ
@given(st.one_of(config_docs.map(json.dumps), st.text(), st.binary()))
def test_config_parser_never_crashes(raw: str | bytes) -> None:
    try:
        cfg = parse_network_config(raw)
    except ConfigError as exc:
        assert str(exc)
        return
    # whatever parses is usable: a non-empty, aligned pool inside the network
    if not cfg.enable_ipv4:  # IPv6-only: test_fuzz_config checks the IPv6 pool
        assert cfg.ipv4_network is None and cfg.ipv6_subnet_count() >= 1
        return
    size = 1 << (32 - cfg.subnet_len)
    assert cfg.subnet_count() >= 1
    assert cfg.subnet_min in cfg.network and cfg.subnet_max in cfg.network
    assert int(cfg.subnet_min) % size == 0 and int(cfg.subnet_max) % size == 0
    assert cfg.backend_type in ("vxlan", "host-gw")


key_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, p: f"{a}-{p}", ipv4, st.integers(0, 40)),
    st.builds(lambda a, p, b, q: f"{a}-{p}&{b}-{q}", ipv4, st.integers(0, 33),
              st.text("0123456789abcdef:", max_size=20), st.integers(0, 200)),
    st.builds(lambda a, b, exploded: f"{a}-24&" + (
        IPv6Network((b << 64, 64)).network_address.exploded if exploded
        else IPv6Network((b << 64, 64)).network_address.compressed) + "-64",
        ipv4, st.integers(0, 2**64 - 1), st.booleans()),
)


@FUZZ
@given(key_text)
def test_lease_key_parser_never_crashes(key: str) -> None:
    try:
        v4, v6 = parse_subnet_key("/coreos.com/network/subnets/" + key)
    except LeaseError:
        return
    assert subnet_key(v4, v6) == key  # what parses is canonical


@FUZZ
@given(st.one_of(lease_docs.map(json.dumps), st.text(), st.binary()))
def test_lease_value_parser_never_crashes(value: str | bytes) -> None:
    try:
        attrs = decode_attrs(value)
    except LeaseError:
        return
    again = decode_attrs(encode_attrs(attrs))  # what we read we can write and read back
    assert again == attrs
    lease = Lease(IPv4Network("10.5.34.0/24"), attrs)
    try:
        check_peer_lease(lease, IPv4Network("10.5.0.0/16"),
                         own_subnet=IPv4Network("10.5.52.0/24"))
    except LeaseError:
        pass



@FUZZ
@given(ipv4, st.integers(0, 2**24 - 1), macs)
def test_vxlan_values_round_trip_byte_identically(ip: IPv4Address, vni: int, mac: str) -> None:
    value = encode_attrs(LeaseAttrs(ip, "vxlan", vxlan_backend_data(vni, mac)))
    assert value == (f'{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan",'
                     f'"BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"}}}}').encode()
    assert encode_attrs(decode_attrs(value)) == value


env_names = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
             "FLANNEL_MTU", "FLANNEL_IPMASQ", "OTHER"]
env_line = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(env_names),
              st.one_of(plausible, st.integers(-5, 70000).map(str),
                        st.sampled_from(["true", "false", "True", "1", "yes"]))),
    st.text(max_size=20), st.just("# comment"), st.just(""))
VALID_ENV = ["FLANNEL_NETWORK=10.5.0.0/16", "FLANNEL_SUBNET=10.5.52.1/24",
             "FLANNEL_IPV6_NETWORK=fd00:10:5::/48", "FLANNEL_IPV6_SUBNET=fd00:10:5:52::1/64",
             "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=false"]


def mutate(lines: list[str], edits: list[tuple[int, str | None]]) -> list[str]:
    out = list(lines)
    for index, line in edits:  # replace, delete (None) or append (index past the end)
        if index < len(out):
            if line is None:
                del out[index]
            else:
                out[index] = line
        elif line is not None:
            out.append(line)
    return out


env_texts = st.builds(
    lambda edits, sep, tail: sep.join(mutate(VALID_ENV, edits)) + tail,
    st.lists(st.tuples(st.integers(0, 8), st.one_of(st.none(), env_line)), max_size=3),
    st.sampled_from(["\n", "\r\n"]), st.sampled_from(["", "\n", "  \n# end\n"]))


@FUZZ
@given(st.one_of(env_texts, st.text()))
def test_subnet_env_parser_never_crashes(text: str) -> None:
    try:
        env = parse_subnet_env(text)
    except SubnetEnvError as exc:
        assert str(exc)
        return
    assert parse_subnet_env(render_subnet_env(env)) == env


@FUZZ
@given(st.integers(0, 2**64 - 1), st.integers(1, 62), st.integers(68, 65535), st.booleans(),
       st.booleans())
def test_subnet_env_ipv6_only_round_trip(addr: int, plen: int, mtu: int, masq: bool,
                                         dual: bool) -> None:
    net6 = IPv6Network((addr << 64, plen), strict=False)
    sub6 = IPv6Network((int(net6.network_address) + (1 << 64), 64))
    v4 = (IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24")) if dual else (None, None)
    env = SubnetEnv.for_lease(*v4, mtu, masq, net6, sub6)
    text = render_subnet_env(env)
    assert ("FLANNEL_NETWORK=" in text) == dual and text.count("\n") == 4 + 2 * dual
    assert parse_subnet_env(text) == env


@FUZZ
@given(st.integers(8, 28), st.integers(0, 2**32 - 1), st.integers(68, 65535), st.booleans(),
       st.booleans())
def test_subnet_env_round_trip(plen: int, addr: int, mtu: int, masq: bool, dual: bool) -> None:
    network = IPv4Network((addr, plen), strict=False)
    subnet = IPv4Network((int(network.network_address), min(plen + 2, 30)))
    v6 = (IPv6Network("fd00:10:5::/48"), IPv6Network("fd00:10:5:52::/64")) if dual else \
        (None, None)
    env = SubnetEnv.for_lease(network, subnet, mtu, masq, *v6)
    assert env.subnet == IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
    if dual:
        assert env.ipv6_subnet == IPv6Interface("fd00:10:5:52::1/64")
    assert parse_subnet_env(render_subnet_env(env)) == env


# PeerView: whatever sequence of puts, deletes and re-lists etcd shows us, the
# consumer's view after the events equals a fresh listing of the final content.
PREFIX = "/coreos.com/network/subnets"
kv_keys = st.sampled_from([f"{PREFIX}/10.5.{i}.0-24" for i in (1, 2, 3, 52)]
                          + [f"{PREFIX}/10.5.2.0-23", f"{PREFIX}/junk", f"{PREFIX}/10.6.1.0-24"])
kv_values = st.one_of(
    st.builds(lambda n, m: encode_attrs(LeaseAttrs(
        IPv4Address(f"192.168.1.{n}"), "vxlan", vxlan_backend_data(1, f"0e:00:00:00:00:{m:02x}"))),
        st.integers(1, 4), st.integers(0, 3)),
    st.sampled_from([b"{", b'{"PublicIP":"127.0.0.1"}', b'{"PublicIP":"192.168.1.9"}']))
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), kv_keys, kv_values),
    st.tuples(st.just("del"), kv_keys, st.just(b"")),
    st.tuples(st.just("relist"), st.just(""), st.just(b"")),
    st.tuples(st.just("own"), st.sampled_from(["10.5.52.0/24", "10.5.3.0/24", ""]),
              st.just(b""))), max_size=25)


def validator(lease: Lease, own: IPv4Network | None) -> None:
    check_peer_lease(lease, IPv4Network("10.5.0.0/16"), own_subnet=own)


@FUZZ
@given(ops)
def test_peer_view_incremental_equals_relist(steps: list[tuple[str, str, bytes]]) -> None:
    etcd: dict[str, bytes] = {}
    view = PeerView(PREFIX, validator, lambda msg: None)
    own: IPv4Network | None = IPv4Network("10.5.52.0/24")
    consumer: dict[IPv4Network, Lease] = {}
    rev = 1

    def listing() -> list[tuple[str, bytes, int, int]]:
        return [(k, v, 0, rev) for k, v in sorted(etcd.items())]

    events: list[LeaseEvent] = view.reset(listing(), own)
    for kind, key, value in steps:
        rev += 1
        if kind == "put":
            etcd[key] = value
            events += view.put(key, value, 0, rev, own)
        elif kind == "del":
            etcd.pop(key, None)
            events += view.delete(key, own)
        elif kind == "own":
            own = IPv4Network(key) if key else None
            events += view.set_own(own)
        else:
            events += view.reset(listing(), own)
    for event in events:
        apply_event(consumer, event)
    fresh = PeerView(PREFIX, validator, lambda msg: None)
    [snapshot] = fresh.reset(listing(), own)
    assert consumer == {le.subnet: le for le in snapshot.snapshot} == view.view
    assert all(decode_lease(le.key, encode_attrs(le.attrs)).attrs == le.attrs
               for le in consumer.values())
