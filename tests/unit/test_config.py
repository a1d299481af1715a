"""Network config parsing: flannel's defaults and checks (compat §1.2, vector A)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from core.config import ConfigError, HostGwConfig, VxlanConfig, parse_network_config


def test_minimal_vxlan_vector() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}')
    assert cfg.network == IPv4Network("10.5.0.0/16")
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (
        24, IPv4Address("10.5.1.0"), IPv4Address("10.5.255.0"))
    assert cfg.enable_ipv4 and not cfg.enable_ipv6 and not cfg.enable_nftables
    assert cfg.backend_type == "vxlan" and cfg.backend == VxlanConfig(vni=1, port=0, mtu=None)
    assert cfg.subnet_count() == 255


def test_explicit_vector_equals_defaults() -> None:
    explicit = parse_network_config(
        b'{"Network":"10.5.0.0/16","SubnetLen":24,"SubnetMin":"10.5.1.0",'
        b'"SubnetMax":"10.5.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472,'
        b'"DirectRouting":false}}')
    assert explicit.subnet_min == IPv4Address("10.5.1.0")
    assert explicit.backend == VxlanConfig(vni=1, port=8472)


def test_dual_stack_vector() -> None:
    cfg = parse_network_config(
        '{"EnableIPv4":true,"EnableIPv6":true,"Network":"10.5.0.0/16",'
        '"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"vxlan"}}')
    assert cfg.enable_ipv6 and cfg.ipv6_network == IPv6Network("fd00:10:5::/48")
    assert cfg.ipv6_subnet_len == 64
    assert cfg.ipv6_subnet_min == IPv6Address("fd00:10:5:1::")
    assert cfg.ipv6_subnet_max == IPv6Address("fd00:10:5:ffff::")
    assert cfg.ipv6_subnet_count() == 0xffff


@pytest.mark.parametrize(("net", "length", "first", "last"), [
    ("fd00::/48", 64, "fd00:0:0:1::", "fd00:0:0:ffff::"),  # <= /62: /64
    ("fd00::/62", 64, "fd00:0:0:1::", "fd00:0:0:3::"),
    ("fd00::/63", 65, "fd00::8000:0:0:0", "fd00:0:0:1:8000::"),  # > /62: prefix + 2
    ("fd00::/100", 102, "fd00::400:0", "fd00::c00:0"),
    ("fd00::/124", 126, "fd00::4", "fd00::c"),
])
def test_ipv6_subnet_len_defaults_like_flannel(net: str, length: int, first: str,
                                               last: str) -> None:
    cfg = parse_network_config(f'{{"Network":"10.5.0.0/16","EnableIPv6":true,'
                               f'"IPv6Network":"{net}"}}')
    assert cfg.ipv6_subnet_len == length
    assert cfg.ipv6_subnet_min == IPv6Address(first)  # the first subnet is skipped
    assert cfg.ipv6_subnet_max == IPv6Address(last)


def test_ipv6_only_needs_no_network() -> None:
    cfg = parse_network_config('{"enableipv4":false,"ENABLEIPV6":true,'
                               '"ipv6network":"fd00:10:5::/48","IPv6SubnetLen":64}')
    assert not cfg.enable_ipv4 and cfg.enable_ipv6 and cfg.ipv4_network is None
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (0, IPv4Address(0),
                                                                IPv4Address(0))
    assert cfg.subnet_count() == 0 and cfg.ipv6_subnet_count() == 0xffff
    assert cfg.subnet_fits(None) and not cfg.subnet_fits(IPv4Network("10.5.1.0/24"))
    assert cfg.ipv6_subnet_fits(IPv6Network("fd00:10:5:1::/64"))
    assert not cfg.ipv6_subnet_fits(IPv6Network("fd00:10:5::/64"))  # the first is skipped
    with pytest.raises(ConfigError, match="IPv6-only"):
        _ = cfg.network


def test_ipv6_only_ignores_a_network_it_does_not_use() -> None:
    cfg = parse_network_config('{"EnableIPv4":false,"Network":"10.5.0.0/16","EnableIPv6":true,'
                               '"IPv6Network":"fd00::/48","SubnetLen":24}')
    assert cfg.ipv4_network is None and cfg.subnet_len == 0


def test_explicit_ipv6_range_and_length() -> None:
    cfg = parse_network_config(
        '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48",'
        '"IPv6SubnetLen":56,"IPv6SubnetMin":"fd00:10:5:200::","IPv6SubnetMax":"fd00:10:5:500::"}')
    assert cfg.ipv6_subnet_len == 56 and cfg.ipv6_subnet_count() == 4
    assert not cfg.ipv6_subnet_fits(None) and not cfg.ipv6_subnet_fits(
        IPv6Network("fd00:10:5:200::/64"))


def test_keys_are_case_insensitive_and_unknown_keys_ignored() -> None:
    cfg = parse_network_config('{"network":"10.3.0.0/16","subnetlen":25,"whatever":[1],'
                               '"BACKEND":{"type":"VXLAN","vni":7,"directrouting":true,'
                               '"MacPrefix":"0E-2A"}}')
    assert cfg.network == IPv4Network("10.3.0.0/16") and cfg.subnet_len == 25
    assert cfg.backend_type == "vxlan"
    assert cfg.backend == VxlanConfig(vni=7, direct_routing=True)


def test_last_duplicate_key_wins_like_go() -> None:
    cfg = parse_network_config('{"Network":"10.1.0.0/16","NETWORK":"10.2.0.0/16"}')
    assert cfg.network == IPv4Network("10.2.0.0/16")


def test_host_bits_are_masked_like_go_parsecidr() -> None:
    assert parse_network_config('{"Network":"10.5.3.4/16"}').network == \
        IPv4Network("10.5.0.0/16")


def test_null_means_default() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","SubnetLen":null,"Backend":null}')
    assert cfg.subnet_len == 24 and cfg.backend_type == "vxlan"


def test_missing_backend_is_vxlan_not_udp() -> None:
    assert parse_network_config('{"Network":"10.5.0.0/16"}').backend_type == "vxlan"


def test_host_gw() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}')
    assert cfg.backend_type == "host-gw" and cfg.backend == HostGwConfig()


@pytest.mark.parametrize("network,subnet_len,smin,smax", [
    ("10.5.0.0/24", 26, "10.5.0.64", "10.5.0.192"),   # vector A: /24 gives /26
    ("10.5.0.0/22", 24, "10.5.1.0", "10.5.3.0"),
    ("10.5.0.0/23", 25, "10.5.0.128", "10.5.1.128"),
    ("10.5.0.0/28", 30, "10.5.0.4", "10.5.0.12"),
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
])
def test_subnet_defaults(network: str, subnet_len: int, smin: str, smax: str) -> None:
    cfg = parse_network_config(f'{{"Network":"{network}"}}')
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (subnet_len, smin, smax)


def test_subnet_count_with_min_max() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0",'
                               '"SubnetMax":"10.5.49.0"}')
    assert cfg.subnet_count() == 40
    assert cfg.subnet_fits(IPv4Network("10.5.10.0/24"))
    assert not cfg.subnet_fits(IPv4Network("10.5.50.0/24"))
    assert not cfg.subnet_fits(IPv4Network("10.5.10.0/25"))


def test_zero_subnet_min_means_default() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","SubnetMin":"0.0.0.0"}')
    assert cfg.subnet_min == IPv4Address("10.5.1.0")


@pytest.mark.parametrize("raw,words", [
    ('{"Network":"10.5.0.0/16","SubnetLen":31}', ["SubnetLen 31", "/30"]),
    ('{"Network":"10.5.0.0/29"}', ["10.5.0.0/29", "/28"]),
    ('{"Network":"10.5.0.0/16","SubnetLen":17}', ["SubnetLen 17", "four subnets", "18"]),
    ('{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', ["SubnetMin 10.6.0.0", "inside"]),
    ('{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7"}', ["SubnetMax 10.5.3.7", "boundary",
                                                          "10.5.3.0"]),
    ('{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0"}',
     ["SubnetMin 10.5.9.0", "above"]),
    ('{"Network":"10.5.0.0/16","SubnetMin":"fd00::"}', ["SubnetMin", "IPv4"]),
    ('{"Network":"10.5.0.0"}', ["Network", "prefix length"]),
    ('{"Network":"10.5.0.0/255.255.0.0"}', ["Network", "prefix length"]),
    ('{"Network":"fd00::/48"}', ["Network", "IPv4"]),
    ('{"Network":"10.5.0.0/16","SubnetLen":"24"}', ["SubnetLen", '"24"', "integer"]),
    ('{"Network":"10.5.0.0/16","SubnetLen":24.0}', ["SubnetLen", "integer"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":"yes"}', ["EnableIPv6", "true or false"]),
    ('{"SubnetLen":24}', ["Network is missing"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true}', ["IPv6Network is missing"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}',
     ["IPv6Network", "/124"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetLen":127}', ["IPv6SubnetLen 127", "126"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetMin":"fd00:0:0:1::1"}', ["IPv6SubnetMin", "boundary"]),
    ('{"EnableIPv4":false,"Network":"10.5.0.0/16"}', ["EnableIPv4", "EnableIPv6", "both"]),
    ('{"EnableIPv4":false,"EnableIPv6":true}', ["IPv6Network is missing"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetLen":49}', ["IPv6SubnetLen 49", "four subnets", "50"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetMax":"fd00:0:0:ffff::1"}', ["IPv6SubnetMax", "boundary", "fd00:0:0:ffff::"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetMin":"fd01::"}', ["IPv6SubnetMin fd01::", "inside"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:3::"}',
     ["IPv6SubnetMin fd00:0:0:9::", "above"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"10.6.0.0/16"}',
     ["IPv6Network", "IPv6"]),
    ('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
     '"IPv6SubnetMin":"10.5.1.0"}', ["IPv6SubnetMin", "IPv6"]),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}', ["udp", "unsupported",
                                                             "vxlan", "host-gw"]),
    ('{"Network":"10.5.0.0/16","Backend":{}}', ["Backend.Type", "missing"]),
    ('{"Network":"10.5.0.0/16","Backend":"vxlan"}', ["Backend", "object"]),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}', ["Backend.VNI"]),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":70000}}', ["Backend.Port"]),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","MTU":40}}', ["Backend.MTU 40"]),
    ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","GBP":1}}', ["Backend.GBP"]),
    ("[1,2]", ["JSON object"]),
    ("{", ["not valid JSON"]),
    (b"\xff\xfe", ["not valid JSON"]),
])
def test_errors_name_field_value_and_rule(raw: str | bytes, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config(raw)
    for word in words:
        assert word in str(info.value)


def test_vxlan_options() -> None:
    cfg = parse_network_config('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":42,'
                               '"Port":4789,"MTU":1400,"GBP":true,"Learning":true,'
                               '"DirectRouting":true}}')
    assert cfg.backend == VxlanConfig(vni=42, port=4789, mtu=1400, direct_routing=True,
                                      gbp=True, learning=True)
    assert parse_network_config('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan",'
                                '"MTU":0}}').backend == VxlanConfig()


def test_enable_nftables() -> None:
    assert parse_network_config('{"Network":"10.5.0.0/16","EnableNFTables":true}'
                                ).enable_nftables
