"""flannel's delegate derivation (flannel-compat §6, vector F), pure."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Any

import pytest

from cni.delegate import bridge_conf, derive_delegate, load_conf, scratch_bytes
from cni.protocol import INVALID_CONFIG, UNSUPPORTED_FIELD, CniError
from core.subnetenv import SubnetEnv

KUBE = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
ENV_C = SubnetEnv(IPv4Network("10.5.0.0/16"), IPv4Interface("10.5.52.1/24"), 1450, False)


def derive(conf: dict[str, Any], env: SubnetEnv = ENV_C) -> dict[str, Any]:
    return derive_delegate(load_conf(conf), env)


def test_vector_f_exact_bytes() -> None:
    assert scratch_bytes(derive(KUBE)) == (
        b'{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":true,"ipam":{"ranges":[[{"subnet":'
        b'"10.5.52.0/24"}]],"routes":[{"dst":"10.5.0.0/16"}],"type":"host-local"},'
        b'"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}')


def test_flannel_unit_test_expectation() -> None:
    env = SubnetEnv(IPv4Network("10.1.0.0/16"), IPv4Interface("10.1.17.1/24"), 1472, True)
    d = derive({"cniVersion": "0.3.1", "name": "loopback"}, env)
    assert d["ipMasq"] is False and d["isGateway"] is True and d["type"] == "bridge"
    assert d["mtu"] == 1472
    assert d["ipam"]["ranges"] == [[{"subnet": "10.1.17.0/24"}]]
    assert d["ipam"]["routes"] == [{"dst": "10.1.0.0/16"}]


def test_explicit_delegate_keys_win() -> None:
    d = derive(dict(KUBE, delegate={"ipMasq": False, "mtu": 1400, "isGateway": False,
                                    "bridge": "br9"}))
    assert (d["ipMasq"], d["mtu"], d["isGateway"], d["bridge"]) == (False, 1400, False, "br9")


def test_non_bridge_gets_no_is_gateway() -> None:
    d = derive(dict(KUBE, delegate={"type": "ipvlan"}))
    assert d["type"] == "ipvlan" and "isGateway" not in d


def test_ipam_routes_merge_and_dual_stack() -> None:
    env = SubnetEnv(IPv4Network("10.5.0.0/16"), IPv4Interface("10.5.52.1/24"), 1450, True,
                    IPv6Network("fd00:10:5::/48"), IPv6Interface("fd00:10:5:52::1/64"))
    d = derive(dict(KUBE, ipam={"routes": [{"dst": "192.168.0.0/16", "gw": "10.5.52.254",
                                            "extra": 1}], "dataDir": "/x"}), env)
    assert d["ipam"]["routes"] == [{"dst": "192.168.0.0/16", "gw": "10.5.52.254"},
                                   {"dst": "10.5.0.0/16"}, {"dst": "fd00:10:5::/48"}]
    assert d["ipam"]["ranges"] == [[{"subnet": "10.5.52.0/24"}], [{"subnet": "fd00:10:5:52::/64"}]]
    assert d["ipam"]["dataDir"] == "/x"


def test_runtime_config_passed_and_version_copied() -> None:
    d = derive(dict(KUBE, cniVersion="1.0.0", runtimeConfig={"portMappings": []}))
    assert d["runtimeConfig"] == {"portMappings": []} and d["cniVersion"] == "1.0.0"


@pytest.mark.parametrize(("delegate", "words"), [({"name": "x"}, "'name'"),
                                                 ({"ipam": {}}, "'ipam'"),
                                                 ({"type": 5}, "'type'")])
def test_rejected_delegates(delegate: dict[str, Any], words: str) -> None:
    with pytest.raises(CniError) as info:
        load_conf(dict(KUBE, delegate=delegate))
    assert info.value.code == INVALID_CONFIG and words in info.value.msg


def test_bridge_conf_defaults_and_errors() -> None:
    bc = bridge_conf(derive(KUBE))
    assert (bc.bridge, bc.is_gateway, bc.is_default_gateway, bc.hairpin, bc.mtu) == (
        "cni0", True, True, True, 1450)
    with pytest.raises(CniError) as info:
        bridge_conf(dict(derive(KUBE), vlan=5))
    assert info.value.code == UNSUPPORTED_FIELD and "vlan" in info.value.msg
    with pytest.raises(CniError):
        bridge_conf(dict(derive(KUBE), promiscMode=True))  # with hairpin
    with pytest.raises(CniError):
        bridge_conf(dict(derive(KUBE), bridge="x" * 16))


def test_requested_ips_union_and_mac_precedence() -> None:
    from cni.delegate import requested_ips, requested_mac
    d = {"args": {"cni": {"ips": ["10.5.52.7"], "mac": "0a:00:00:00:00:02"}},
         "runtimeConfig": {"ips": ["10.5.52.8/24"], "mac": "0a:00:00:00:00:03"}}
    assert [str(ip) for ip in requested_ips({"IP": "10.5.52.6"}, d)] == [
        "10.5.52.6", "10.5.52.7", "10.5.52.8"]
    assert requested_mac({"MAC": "0a:00:00:00:00:01"}, d) == "0a:00:00:00:00:03"
    assert requested_mac({"MAC": "0A:00:00:00:00:01"}, {}) == "0a:00:00:00:00:01"
    assert requested_mac({}, {}) == ""
    for args, words in [({"IP": "nope"}, "CNI_ARGS IP"), ({"MAC": "zz"}, "CNI_ARGS MAC")]:
        with pytest.raises(CniError) as info:
            requested_ips(args, {}) if "IP" in args else requested_mac(args, {})
        assert words in info.value.msg and info.value.code == 4


# -- dual stack and IPv6-only (issue 12) -----------------------------------------------------

ENV_DUAL = SubnetEnv(IPv4Network("10.1.0.0/16"), IPv4Interface("10.1.17.1/24"), 1472, True,
                     IPv6Network("fc00::/48"), IPv6Interface("fc00::1/64"))
ENV_V6 = SubnetEnv(None, None, 1450, False, IPv6Network("fd00:10:5::/48"),
                   IPv6Interface("fd00:10:5:52::1/64"))


def test_dual_stack_is_flannels_own_test_vector() -> None:
    """flannel-io/cni-plugin flannel_linux_test.go, dual stack: two range sets, v4 first,
    the routes of both networks (v4 first); byte for byte as flannel saves it."""
    d = derive({"name": "cni-flannel"}, ENV_DUAL)
    assert scratch_bytes(d) == (
        b'{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]],'
        b'"routes":[{"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],"type":"host-local"},'
        b'"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}')


def test_ipv6_only_subnet_env_gives_one_v6_range_set() -> None:
    d = derive(KUBE, ENV_V6)
    assert d["ipam"]["ranges"] == [[{"subnet": "fd00:10:5:52::/64"}]]
    assert d["ipam"]["routes"] == [{"dst": "fd00:10:5::/48"}]
    assert d["ipMasq"] is True and d["mtu"] == 1450 and d["isGateway"] is True
    # user routes still come first, and nothing IPv4 sneaks in
    d = derive(dict(KUBE, ipam={"routes": [{"dst": "2001:db8::/32"}]}), ENV_V6)
    assert d["ipam"]["routes"] == [{"dst": "2001:db8::/32"}, {"dst": "fd00:10:5::/48"}]


def test_delegate_range_sets_parse_for_both_families() -> None:
    """What the bridge then allocates from: set 0 is IPv4, set 1 IPv6 (host-local's
    last_reserved_ip.0/.1); on an IPv6-only node set 0 is the IPv6 one."""
    from cni.context import bridge_setup

    _bc, _ipam, sets = bridge_setup(derive(KUBE, ENV_DUAL))
    assert [(str(s[0].subnet), str(s[0].gateway)) for s in sets] == [
        ("10.1.17.0/24", "10.1.17.1"), ("fc00::/64", "fc00::1")]
    _bc, _ipam, sets = bridge_setup(derive(KUBE, ENV_V6))
    assert [(str(s[0].subnet), str(s[0].start), str(s[0].gateway)) for s in sets] == [
        ("fd00:10:5:52::/64", "fd00:10:5:52::1", "fd00:10:5:52::1")]
