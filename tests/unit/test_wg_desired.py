"""The WireGuard lease data (flannel's bytes) and backends/wg_desired.py: the devices a
config has, one peer per usable lease (and a reason for every other), flannel's
selectMode for Mode auto, and the roaming-aware plan against a device's peers."""

from __future__ import annotations

import base64
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.wg_desired import (
    ActualPeer,
    WgDeviceSpec,
    WgPeer,
    auto_family,
    desired_peers,
    device_specs,
    plan_peers,
)
from core.config import WireguardConfig
from core.lease import (
    Lease,
    LeaseAttrs,
    LeaseError,
    check_wireguard_attrs,
    decode_attrs,
    encode_attrs,
    wireguard_backend_data,
)


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


OWN_KEY = key(1)


def lease(n: int, *, ip: str | None = None, ip6: str | None = None, v4: bool = True,
          v6: bool = False, k: str | None = None, port: int | None = 51820,
          k6: str | None = None, port6: int | None = 51821, btype: str = "wireguard") -> Lease:
    data = {"PublicKey": k or key(n), **({"Port": port} if port is not None else {})}
    data6 = {"PublicKey": k6 or k or key(n), **({"Port": port6} if port6 is not None else {})}
    return Lease(IPv4Network(f"10.5.{n}.0/24") if v4 else None,
                 LeaseAttrs(IPv4Address(ip or (f"192.168.1.{n}" if v4 else "0.0.0.0")), btype,
                            data if v4 else None,
                            IPv6Address(ip6) if ip6 else None, data6 if v6 else None),
                 IPv6Network(f"fd00:10:5:{n}::/64") if v6 else None)


OWN = lease(1, k=OWN_KEY)
OWN46 = lease(1, ip6="fd72::1", v6=True, k=OWN_KEY)
SPEC4 = WgDeviceSpec("flannel-wg", (4,), 51820, 1420)
SPEC6 = WgDeviceSpec("flannel-wg-v6", (6,), 51821, 1420)

# --- lease BackendData ------------------------------------------------------------------------


def test_backend_data_is_flannels_bytes() -> None:
    k = key(9)
    attrs = LeaseAttrs(IPv4Address("192.168.1.9"), "wireguard", wireguard_backend_data(k, 51820))
    assert encode_attrs(attrs) == (
        b'{"PublicIP":"192.168.1.9","PublicIPv6":null,"BackendType":"wireguard",'
        b'"BackendData":{"PublicKey":"' + k.encode() + b'","Port":51820}}')
    dual = replace(attrs, public_ipv6=IPv6Address("fd72::9"),
                   backend_v6_data=wireguard_backend_data(k, 51821))
    assert encode_attrs(dual).endswith(
        b'"PublicIPv6":"fd72::9","BackendType":"wireguard","BackendData":{"PublicKey":"'
        + k.encode() + b'","Port":51820},"BackendV6Data":{"PublicKey":"' + k.encode()
        + b'","Port":51821}}')
    back = decode_attrs(encode_attrs(dual))
    assert check_wireguard_attrs(back) == (k, 51820)
    assert check_wireguard_attrs(back, v6=True) == (k, 51821)


def attrs_with(data: Any) -> LeaseAttrs:
    return LeaseAttrs(IPv4Address("192.168.1.2"), "wireguard", data)


@pytest.mark.parametrize("data,port", [
    ({"PublicKey": key(2)}, None),  # flannel before 0.26.6 writes no Port
    ({"PublicKey": key(2), "Port": 0}, None),
    ({"PublicKey": key(2), "Port": None}, None),
    ({"publickey": key(2), "PORT": 4000}, 4000),  # Go matches keys case-insensitively
    ({"PublicKey": key(3), "publickey": key(2), "Port": 1, "port": 4000}, 4000),  # last wins
    ({"PublicKey": key(2), "Port": 65535, "Other": 1}, 65535),
])
def test_wireguard_attrs(data: dict[str, Any], port: int | None) -> None:
    assert check_wireguard_attrs(attrs_with(data)) == (key(2), port)


@pytest.mark.parametrize("data,fragment", [
    (None, "PublicKey"), ({}, "PublicKey"), ({"PublicKey": 5}, "PublicKey"),
    ({"PublicKey": key(2)[:-1]}, "PublicKey"),  # no padding
    ({"PublicKey": key(2)[:42] + "B="}, "PublicKey"),  # trailing bits set: not canonical
    ({"PublicKey": bytes(32).hex()}, "PublicKey"),
    ({"PublicKey": " " + key(2)[1:]}, "PublicKey"),
    ({"PublicKey": key(2), "Port": 65536}, "Port"),
    ({"PublicKey": key(2), "Port": -1}, "Port"),
    ({"PublicKey": key(2), "Port": "51820"}, "Port"),
    ({"PublicKey": key(2), "Port": True}, "Port"),
    ({"PublicKey": key(2), "Port": 51820.0}, "Port"),
])
def test_unusable_wireguard_attrs(data: Any, fragment: str) -> None:
    with pytest.raises(LeaseError, match=fragment):
        check_wireguard_attrs(attrs_with(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_every_real_key_is_accepted(raw: bytes) -> None:
    k = base64.b64encode(raw).decode()
    assert check_wireguard_attrs(attrs_with({"PublicKey": k})) == (k, None)


@settings(max_examples=200, deadline=None)
@given(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
               min_size=43, max_size=45))
def test_an_accepted_key_is_canonical_base64_of_32_bytes(text: str) -> None:
    try:
        check_wireguard_attrs(attrs_with({"PublicKey": text}))
    except LeaseError:
        return
    assert base64.b64encode(base64.b64decode(text, validate=True)).decode() == text


# --- devices ----------------------------------------------------------------------------------


def test_separate_mode_has_one_device_per_family() -> None:
    specs = device_specs(WireguardConfig(), True, True, 1500)
    assert [(s.name, s.families, s.listen_port, s.mtu) for s in specs] == [
        ("flannel-wg", (4,), 51820, 1420), ("flannel-wg-v6", (6,), 51821, 1420)]
    custom = WireguardConfig(listen_port=4000, listen_port_v6=4001, mtu=9000)
    assert [(s.name, s.listen_port, s.mtu) for s in device_specs(custom, False, True, 1500)] \
        == [("flannel-wg-v6", 4001, 8920)]
    assert [s.name for s in device_specs(custom, True, False, 1500)] == ["flannel-wg"]


@pytest.mark.parametrize("mode", ["auto", "ipv4", "ipv6"])
def test_other_modes_have_one_device_for_both_families(mode: str) -> None:
    wg = WireguardConfig(listen_port=4000, listen_port_v6=4001, mode=mode)
    [spec] = device_specs(wg, True, True, 1450)
    assert (spec.name, spec.families, spec.listen_port, spec.mtu, spec.mode) == \
        ("flannel-wg", (4, 6), 4000, 1370, mode)
    assert device_specs(wg, False, True, 1450)[0].families == (6,)


# --- desired peers ----------------------------------------------------------------------------


def test_one_peer_per_usable_lease_and_a_reason_for_the_rest() -> None:
    wg = WireguardConfig(psk=b"\x05" * 32, keepalive=25)
    leases = [OWN, lease(2), lease(3, btype="vxlan"), lease(4, btype=""), lease(5, k="nokey"),
              lease(6, k=OWN_KEY), lease(7, k=key(70)), lease(8, k=key(70)),
              lease(9, port=51999), lease(10, port=None)]
    out = desired_peers(OWN, leases, wg, replace(SPEC4, listen_port=40000), OWN_KEY)
    assert out.peers == {
        key(2): WgPeer(key(2), "192.168.1.2:51820", ("10.5.2.0/24",), b"\x05" * 32, 25),
        key(70): WgPeer(key(70), "192.168.1.7:51820", ("10.5.7.0/24",), b"\x05" * 32, 25),
        key(9): WgPeer(key(9), "192.168.1.9:51999", ("10.5.9.0/24",), b"\x05" * 32, 25),
        # no Port: our own device's
        key(10): WgPeer(key(10), "192.168.1.10:40000", ("10.5.10.0/24",), b"\x05" * 32, 25)}
    assert sorted(out.skipped) == ["10.5.3.0-24", "10.5.4.0-24", "10.5.5.0-24",
                                   "10.5.6.0-24", "10.5.8.0-24"]
    assert "'vxlan'" in out.skipped["10.5.3.0-24"]
    assert "udp" in out.skipped["10.5.4.0-24"]
    assert "PublicKey" in out.skipped["10.5.5.0-24"]
    assert OWN_KEY in out.skipped["10.5.6.0-24"] and "ours" in out.skipped["10.5.6.0-24"]
    assert "10.5.7.0-24" in out.skipped["10.5.8.0-24"]  # the first lease keeps the key


def test_the_duplicate_kept_does_not_depend_on_the_order_given() -> None:
    a, b = lease(7, k=key(70)), lease(8, k=key(70))
    for order in ([a, b], [b, a]):
        out = desired_peers(OWN, order, WireguardConfig(), SPEC4, OWN_KEY)
        assert out.peers[key(70)].allowed_ips == ("10.5.7.0/24",)
        assert list(out.skipped) == ["10.5.8.0-24"]


def test_the_ipv6_device_uses_backend_v6_data() -> None:
    peers = [lease(2, ip6="fd72::2", v6=True, k6=key(20), port6=4001),
             lease(3, ip6="fd72::3", v6=True, port6=None), lease(4)]
    out = desired_peers(OWN46, peers, WireguardConfig(), SPEC6, OWN_KEY)
    assert out.peers == {
        key(20): WgPeer(key(20), "[fd72::2]:4001", ("fd00:10:5:2::/64",)),
        key(3): WgPeer(key(3), "[fd72::3]:51821", ("fd00:10:5:3::/64",))}
    assert "IPv6 subnet" in out.skipped["10.5.4.0-24"]


@pytest.mark.parametrize("mode,endpoint", [
    ("ipv4", "192.168.1.2:51820"), ("ipv6", "[fd72::2]:51820"), ("auto", "192.168.1.2:51820")])
def test_one_device_carries_both_subnets(mode: str, endpoint: str) -> None:
    spec = device_specs(WireguardConfig(mode=mode), True, True, 1500)[0]
    out = desired_peers(OWN46, [lease(2, ip6="fd72::2", v6=True)],
                        WireguardConfig(mode=mode), spec, OWN_KEY)
    assert out.peers[key(2)] == WgPeer(key(2), endpoint, ("10.5.2.0/24", "fd00:10:5:2::/64"))


def test_mode_ipv6_without_a_peer_ipv6_address_is_skipped() -> None:
    spec = WgDeviceSpec("flannel-wg", (4, 6), 51820, 1420, "ipv6")
    out = desired_peers(OWN46, [lease(2, v6=True)], WireguardConfig(mode="ipv6"), spec,
                        OWN_KEY)
    assert not out.peers and "PublicIPv6" in out.skipped["10.5.2.0-24&fd00:10:5:2::-64"]


def own(ip6: str | None, v4: bool = True) -> Lease:
    return lease(1, ip6=ip6, v4=v4, v6=True, k=OWN_KEY)


@pytest.mark.parametrize("peer_ip,peer_ip6,own_ip6,family", [
    ("192.168.1.2", None, "2001:db8::1", 4),  # the peer has no IPv6: v4
    ("203.0.113.2", "2001:db8::2", "2001:db8::1", 4),  # a public v4, and we have v4
    ("172.32.0.2", "2001:db8::2", "2001:db8::1", 4),  # just outside 172.16.0.0/12
    ("192.168.1.2", "2001:db8::2", "2001:db8::1", 6),  # private v4, both v6 global
    ("172.31.255.2", "2001:db8::2", "2001:db8::1", 6),
    ("10.0.0.2", "2001:db8::2", "2001:db8::1", 6),
    ("192.168.1.2", "fd72::2", "2001:db8::1", 4),  # the peer's v6 is ULA
    ("192.168.1.2", "fc00::2", "2001:db8::1", 4),
    ("192.168.1.2", "2001:db8::2", "fdff::1", 4),  # ours is ULA
    ("192.168.1.2", "2001:db8::2", None, 4),  # we have no public v6
    ("192.168.1.2", "fe00::2", "2001:db8::1", 6),  # fe00:: is outside fc00::/7
])
def test_auto_family_is_flannels_select_mode(peer_ip: str, peer_ip6: str | None,
                                             own_ip6: str | None, family: int) -> None:
    peer = lease(2, ip=peer_ip, ip6=peer_ip6, v6=True)
    assert auto_family(peer, own(own_ip6)) == family


def test_auto_family_of_an_ipv6_only_peer_is_v6() -> None:
    assert auto_family(lease(2, ip6="fd72::2", v4=False, v6=True), own("fd72::1", False)) == 6
    assert auto_family(lease(2, ip6="2001:db8::2", v4=False, v6=True),
                       own("2001:db8::1", False)) == 6


# --- the plan ---------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def actual(p: WgPeer, *, endpoint: str | None = None, handshake: float = NOW - 10,
           **changes: Any) -> ActualPeer:
    a = ActualPeer(p.public_key, p.endpoint if endpoint is None else endpoint, p.allowed_ips,
                   p.psk, p.keepalive, handshake, 100, 200)
    return replace(a, **changes)


P2 = WgPeer(key(2), "192.168.1.2:51820", ("10.5.2.0/24",))
P3 = WgPeer(key(3), "[fd72::3]:51821", ("fd00:10:5:3::/64", "10.5.3.0/24"), b"\x01" * 32, 25)


def test_new_peers_are_set_and_strays_removed() -> None:
    plan = plan_peers({P3.public_key: P3, P2.public_key: P2},
                      {key(9): actual(replace(P2, public_key=key(9))),
                       key(8): actual(replace(P2, public_key=key(8))), key(2): actual(P2)}, NOW)
    assert plan.upsert == (P3,) and plan.remove == (key(8), key(9))


@pytest.mark.parametrize("changes", [
    {"allowed_ips": ("10.5.2.0/25",)}, {"allowed_ips": ()},
    {"allowed_ips": ("10.5.2.0/24", "10.5.99.0/24")}, {"psk": b"\x02" * 32},
    {"keepalive": 5}])
def test_an_altered_peer_is_set_again(changes: dict[str, Any]) -> None:
    assert plan_peers({key(2): P2}, {key(2): actual(P2, **changes)}, NOW).upsert == (P2,)


def test_what_the_device_may_spell_differently_is_no_change() -> None:
    have = actual(P3, endpoint="[fd72:0:0::3]:51821", handshake=0,
                  allowed_ips=tuple(reversed(P3.allowed_ips)))
    assert plan_peers({key(3): P3}, {key(3): have}, NOW).upsert == ()


@pytest.mark.parametrize("handshake,reset", [
    (NOW - 5, False), (NOW - 180, False),  # live: it roamed, WireGuard knows best
    (NOW - 180.5, True), (NOW - 3600, True), (0.0, True)])  # dead or never: the lease's
def test_a_roamed_endpoint_is_reset_only_when_the_peer_is_not_live(handshake: float,
                                                                     reset: bool) -> None:
    for roamed in ("203.0.113.7:40000", ""):
        have = actual(P2, endpoint=roamed, handshake=handshake)
        assert plan_peers({key(2): P2}, {key(2): have}, NOW).upsert == ((P2,) if reset else ())


peers_st = st.builds(
    WgPeer, st.integers(2, 12).map(key),
    st.sampled_from(["192.168.1.2:51820", "[fd72::2]:51821", "10.0.0.9:4000"]),
    st.lists(st.sampled_from(["10.5.2.0/24", "10.5.3.0/24", "fd00:10:5:2::/64"]), max_size=2,
             unique=True).map(lambda a: tuple(sorted(a))),
    st.sampled_from([None, b"\x03" * 32]), st.sampled_from([0, 25]))
actual_st = st.builds(
    ActualPeer, st.integers(2, 12).map(key),
    st.sampled_from(["", "192.168.1.2:51820", "[fd72::2]:51821", "198.51.100.1:1"]),
    st.lists(st.sampled_from(["10.5.2.0/24", "fd00:10:5:2::/64", "10.9.0.0/16"]), max_size=2,
             unique=True).map(tuple),
    st.sampled_from([None, b"\x03" * 32]), st.sampled_from([0, 25]),
    st.sampled_from([0.0, NOW - 10, NOW - 500]), st.just(0), st.just(0))


@settings(max_examples=300, deadline=None)
@given(st.lists(peers_st), st.lists(actual_st))
def test_applying_the_plan_gives_the_desired_peers(want_l: list[WgPeer],
                                                   have_l: list[ActualPeer]) -> None:
    want = {p.public_key: p for p in want_l}
    have = {a.public_key: a for a in have_l}
    plan = plan_peers(want, have, NOW)
    assert len(set(plan.remove)) == len(plan.remove) and not set(plan.remove) & set(want)
    device = {k: a for k, a in have.items() if k not in plan.remove}
    for p in plan.upsert:  # what a UAPI set does: the endpoint too; the handshake stays
        old = device.get(p.public_key)
        device[p.public_key] = ActualPeer(p.public_key, p.endpoint, p.allowed_ips, p.psk,
                                          p.keepalive, old.last_handshake if old else 0.0, 0, 0)
    assert set(device) == set(want)
    for k, p in want.items():
        a = device[k]
        assert (set(a.allowed_ips), a.psk, a.keepalive) == (set(p.allowed_ips), p.psk,
                                                           p.keepalive)
        live = 0 < a.last_handshake and NOW - a.last_handshake <= 180
        assert a.endpoint == p.endpoint or live
    assert plan_peers(want, device, NOW).upsert == () == plan_peers(want, device, NOW).remove


def test_the_cache_decides_each_lease_object_once() -> None:
    wg = WireguardConfig()
    peers = [lease(n) for n in range(2, 40)] + [lease(40, btype="vxlan")]
    first = desired_peers(OWN, peers, wg, SPEC4, OWN_KEY)
    assert set(first.cache) == {id(p) for p in peers}
    # a cached answer is taken as it is: put a marker in for one lease object
    marker = WgPeer(key(99), "192.0.2.99:1", ("10.5.99.0/24",))
    cache = {**first.cache, id(peers[0]): (peers[0], marker)}
    again = desired_peers(OWN, peers, wg, SPEC4, OWN_KEY, cache)
    assert again.peers[key(99)] == marker and key(2) not in again.peers
    # a new lease object (the same lease, rewritten) is decided afresh
    peers[0] = lease(2, port=4000)
    third = desired_peers(OWN, peers, wg, SPEC4, OWN_KEY, cache)
    assert third.peers[key(2)].endpoint == "192.168.1.2:4000" and key(99) not in third.peers
    assert third.skipped == first.skipped and len(third.peers) == len(first.peers)
    # leases gone are dropped from the cache
    assert set(desired_peers(OWN, peers[:5], wg, SPEC4, OWN_KEY, third.cache).cache) == {
        id(p) for p in peers[:5]}
