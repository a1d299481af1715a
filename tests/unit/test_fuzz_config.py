"""The network config in etcd, fuzzed in the thousands: wrong types, huge numbers,
overlapping and misaligned ranges, IPv6 halves. Whatever etcd holds, the parser gives
a usable config or a ConfigError that names the field, in a message of sane length.

(tests/unit/test_parsers_fuzz.py covers near-miss documents; these go for the
semantics: ranges, alignment, sizes and every field's type.) Each hypothesis example
checks a family of documents derived from it (every range edge against every other,
a wrong value in every field), so thousands of documents take a few seconds.
"""

from __future__ import annotations

import itertools
import json
import os
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import MAX_VNI, ConfigError, VxlanConfig, parse_network_config

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
FIELDS = ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableIPv4", "EnableIPv6",
          "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables",
          "Backend")
BACKEND_FIELDS = ("Type", "VNI", "Port", "MTU", "DirectRouting", "GBP", "Learning")
WRONG = [None, True, False, -1, 0, 1.5, -0.0, 1e308, 2**31, 2**32, 2**63, 2**70, -2**70, "",
         "x", "24", "10.5.0.0/16", "fd00::/64", "true", [], [24], {}, {"Type": "vxlan"}]
EDGES = ("base", "top", "second", "last", "below", "above", "misaligned", "middle")

v4net = st.builds(lambda a, p: IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1),
                  st.integers(0, 32))
v6net = st.builds(lambda a, p: IPv6Network((a << 64, p), strict=False),
                  st.integers(0, 2**64 - 1), st.integers(0, 128))


def near(net: IPv4Network | IPv6Network, edge: str, bits: int) -> str:
    """An address in, at the edge of, or just outside `net`, on a /`bits` boundary or not."""
    size = 1 << max(0, net.max_prefixlen - bits)
    base, top = int(net.network_address), int(net.broadcast_address)
    value = {"base": base, "top": top, "second": base + size, "last": top + 1 - size,
             "below": base - size, "above": top + 1, "misaligned": base + size + 1,
             "middle": (base + top) // 2 // size * size}[edge]
    value = max(0, min(value, (1 << net.max_prefixlen) - 1))
    return str(type(net.network_address)(value))


def check(raw: str | bytes) -> None:
    try:
        cfg = parse_network_config(raw)
    except ConfigError as exc:
        msg = str(exc)
        assert any(f.lower() in msg.lower() for f in FIELDS) or "network config" in msg, msg
        assert len(msg) < 600, f"an error message of {len(msg)} characters: {msg[:200]}"
        return
    # what parses is usable: aligned, ordered ranges inside the network, sane sizes
    assert cfg.enable_ipv4 or cfg.enable_ipv6
    assert (cfg.ipv4_network is not None) == cfg.enable_ipv4
    if cfg.enable_ipv4:
        size = 1 << (32 - cfg.subnet_len)
        assert cfg.network.prefixlen + 2 <= cfg.subnet_len <= 30
        assert cfg.subnet_min in cfg.network and cfg.subnet_max in cfg.network
        assert int(cfg.subnet_min) % size == 0 and int(cfg.subnet_max) % size == 0
        assert cfg.subnet_min <= cfg.subnet_max and cfg.subnet_count() >= 1
        assert IPv4Network((cfg.subnet_max, cfg.subnet_len)).subnet_of(cfg.network)
    else:
        assert cfg.subnet_count() == 0 and cfg.subnet_len == 0
    if cfg.enable_ipv6:
        assert cfg.ipv6_network is not None and cfg.ipv6_subnet_len is not None
        assert cfg.ipv6_subnet_min is not None and cfg.ipv6_subnet_max is not None
        assert cfg.ipv6_network.prefixlen + 2 <= cfg.ipv6_subnet_len <= 126
        assert cfg.ipv6_subnet_min <= cfg.ipv6_subnet_max
        assert cfg.ipv6_subnet_count() >= 1
    if isinstance(cfg.backend, VxlanConfig):
        b = cfg.backend
        assert 0 <= b.vni <= MAX_VNI and 0 <= b.port <= 65535
        assert b.mtu is None or 68 <= b.mtu <= 65535


@settings(FUZZ, max_examples=max(50, EXAMPLES // 8))
@given(v4net, st.integers(-1, 34), st.sampled_from(["", "host", "bare"]),
       st.one_of(st.none(), st.tuples(v6net, st.integers(-1, 130))))
def test_every_range_edge_against_every_other(net: IPv4Network, len_delta: int, form: str,
                                              six: tuple[IPv6Network, int] | None) -> None:
    """SubnetMin and SubnetMax at every edge (in, out, misaligned), IPv4 and IPv6."""
    slen = max(0, net.prefixlen + len_delta)
    text = {"": str(net), "host": f"{net.network_address + 1}/{net.prefixlen}",
            "bare": str(net.network_address)}[form]
    for lo, hi in itertools.product(EDGES, EDGES):
        doc: dict[str, Any] = {"Network": text, "SubnetLen": slen,
                               "SubnetMin": near(net, lo, slen), "SubnetMax": near(net, hi, slen)}
        if six is not None:
            net6, d6 = six
            s6 = max(0, net6.prefixlen + d6)
            doc.update(EnableIPv6=True, IPv6Network=str(net6), IPv6SubnetLen=s6,
                       IPv6SubnetMin=near(net6, hi, s6), IPv6SubnetMax=near(net6, lo, s6))
        check(json.dumps(doc))


@settings(FUZZ, max_examples=max(50, EXAMPLES // 8))
@given(v6net, st.integers(-1, 130), st.sampled_from([None, "10.5.0.0/16", "x", 5]))
def test_ipv6_only_range_edges(net6: IPv6Network, d6: int, network: Any) -> None:
    """IPv6-only (EnableIPv4 false): every IPv6 range edge, with or without a Network."""
    s6 = max(0, net6.prefixlen + d6)
    for lo, hi in itertools.product(EDGES, EDGES):
        doc: dict[str, Any] = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": str(net6),
                               "IPv6SubnetLen": s6, "IPv6SubnetMin": near(net6, lo, s6),
                               "IPv6SubnetMax": near(net6, hi, s6)}
        if network is not None:
            doc["Network"] = network
        check(json.dumps(doc))


VALID: dict[str, Any] = {"Network": "10.5.0.0/16", "SubnetLen": 24, "SubnetMin": "10.5.1.0",
         "SubnetMax": "10.5.200.0", "EnableIPv4": True, "EnableIPv6": True,
         "IPv6Network": "fd00:10:5::/48", "IPv6SubnetLen": 64, "EnableNFTables": False,
         "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "MTU": 1450,
                     "DirectRouting": False, "GBP": False, "Learning": False}}


@FUZZ
@given(st.one_of(st.sampled_from(WRONG), st.integers(-2**70, 2**70), st.floats(),
                 st.text(max_size=20)), st.sampled_from([str, str.lower, str.upper]))
def test_any_value_in_any_field(value: Any, case: Any) -> None:
    """The same wrong (or huge, or merely odd) value in each field of a valid config."""
    check(json.dumps(VALID))
    for name in FIELDS:
        check(json.dumps({**VALID, case(name): value}))
        check(json.dumps({case(name): value}))
    for name in BACKEND_FIELDS:
        check(json.dumps({**VALID, "Backend": {**VALID["Backend"], case(name): value}}))


big_text = st.builds(lambda c, n: c * n, st.sampled_from(["0", "a", "/", "1.", "é", "\x00"]),
                     st.integers(1000, 20000))


@settings(FUZZ, max_examples=max(50, EXAMPLES // 10))
@given(st.one_of(
    st.builds(lambda n: '{"Network":"10.5.0.0/16","SubnetLen":' + n + "}",
              st.sampled_from(["1e999", "-0", "24.0", "0x18", "1" * 5000, "NaN", "Infinity"])),
    st.builds(lambda depth: '{"Network":"10.5.0.0/16","Backend":' + "[" * depth + "]" * depth
              + "}", st.integers(1, 20000)),
    st.builds(lambda s: json.dumps({"Network": s}), big_text),
    st.builds(lambda s: json.dumps({"Network": s + "/16"}), big_text),
    st.builds(lambda s: json.dumps({"Network": "10.5.0.0/16", "SubnetMin": s}), big_text),
    st.builds(lambda s: json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": s}}),
              big_text),
    st.binary(max_size=200)))
def test_hostile_documents_give_short_clear_errors(raw: str | bytes) -> None:
    check(raw)
