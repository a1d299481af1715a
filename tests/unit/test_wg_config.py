"""Backend {"Type":"wireguard", ...} through parse_network_config: flannel's defaults
(51820, 51821, no PSK, keepalive 0, Mode separate), Go's JSON rules (keys of any case,
null is the default, wrong types refused), errors naming the field, a bad PSK never
echoed, and the Mode checks against the families the network runs."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core.config import ConfigError, WireguardConfig, parse_network_config

PSK = base64.b64encode(bytes(range(100, 132))).decode()


def parse(backend: dict[str, Any], **net: Any) -> Any:
    doc: dict[str, Any] = {"Network": "10.5.0.0/16", **net, "Backend": backend}
    return parse_network_config(json.dumps(doc))


def wg(**fields: Any) -> WireguardConfig:
    config = parse({"Type": "wireguard", **fields})
    assert config.backend_type == "wireguard"
    assert isinstance(config.backend, WireguardConfig)
    return config.backend


def test_flannels_defaults() -> None:
    b = wg()
    assert (b.listen_port, b.listen_port_v6, b.psk, b.keepalive, b.mode, b.mtu) == \
        (51820, 51821, None, 0, "separate", None)


def test_every_field_is_read() -> None:
    b = wg(ListenPort=4000, ListenPortV6=4001, PSK=PSK, PersistentKeepaliveInterval=25,
           Mode="auto", MTU=9000)
    assert (b.listen_port, b.listen_port_v6, b.keepalive, b.mode, b.mtu) == \
        (4000, 4001, 25, "auto", 9000)
    assert b.psk == bytes(range(100, 132))


def test_keys_of_any_case_and_null_as_default() -> None:
    config = parse_network_config(
        '{"network":"10.5.0.0/16","BACKEND":{"type":"WireGuard","listenport":4000,'
        '"LISTENPORTV6":null,"psk":null,"persistentKeepaliveInterval":null,"mtu":null,'
        '"mode":"ipv4","Unknown":[1]}}')
    b = config.backend
    assert config.backend_type == "wireguard" and isinstance(b, WireguardConfig)
    assert (b.listen_port, b.listen_port_v6, b.psk, b.keepalive, b.mtu, b.mode) == \
        (4000, 51821, None, 0, None, "ipv4")


def test_the_last_of_two_spellings_wins_as_in_go() -> None:
    assert wg(ListenPort=1000, listenport=2000).listen_port == 2000


def test_mtu_zero_means_the_interfaces_and_148_is_the_least() -> None:
    assert wg(MTU=0).mtu is None
    assert wg(MTU=148).mtu == 148  # a 68-byte device, IPv4's minimum
    with pytest.raises(ConfigError, match=r"Backend\.MTU 147"):
        wg(MTU=147)


@pytest.mark.parametrize("field,value", [
    ("ListenPort", 0), ("ListenPort", 65536), ("ListenPort", -1), ("ListenPort", "51820"),
    ("ListenPort", True), ("ListenPort", 51820.5),
    ("ListenPortV6", 0), ("ListenPortV6", 70000), ("ListenPortV6", [51821]),
    ("PersistentKeepaliveInterval", -1), ("PersistentKeepaliveInterval", 65536),
    ("PersistentKeepaliveInterval", "25s"),
    ("MTU", -1), ("MTU", 65536), ("MTU", "1420"),
    ("PSK", 42), ("PSK", True),
    ("Mode", 4), ("Mode", "Auto"), ("Mode", "dual"), ("Mode", "IPV4"), ("Mode", ""),
])
def test_bad_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        wg(**{field: value})
    assert f"Backend.{field}" in str(err.value)


def test_the_modes_flannel_has_are_accepted() -> None:
    for mode in ("separate", "auto", "ipv4"):
        assert wg(Mode=mode).mode == mode


# --- the PSK is a secret ----------------------------------------------------------------------

BAD_PSKS = [
    "this-is-not-base64-at-all!!",
    base64.b64encode(b"x" * 31).decode(),
    base64.b64encode(b"y" * 33).decode(),
    PSK[:-1],  # padding lost
    PSK + "\n",
    " " + PSK,
    bytes(32).hex(),
]


@pytest.mark.parametrize("psk", BAD_PSKS)
def test_a_bad_psk_is_refused_without_showing_it(psk: str) -> None:
    with pytest.raises(ConfigError) as err:
        wg(PSK=psk)
    message = str(err.value)
    assert "Backend.PSK" in message and "wg genpsk" in message
    assert psk.strip() not in message
    assert psk.strip()[:12] not in message and psk.strip()[-12:] not in message


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_B64 + "-_ .!", min_size=12, max_size=90))
def test_no_bad_psk_ever_appears_in_the_error(psk: str) -> None:
    # 12 characters of the base64 alphabet in a row appear nowhere in the message's own text
    try:
        ok = len(base64.b64decode(psk, validate=True)) == 32
    except ValueError:
        ok = False
    if ok:
        assert wg(PSK=psk).psk == base64.b64decode(psk)
        return
    with pytest.raises(ConfigError) as err:
        wg(PSK=psk)
    assert psk not in str(err.value)
    assert all(psk[i:i + 12] not in str(err.value) for i in range(len(psk) - 11))


def test_random_psks_are_read() -> None:
    for _ in range(5):
        raw = os.urandom(32)
        assert wg(PSK=base64.b64encode(raw).decode()).psk == raw
    assert wg(PSK="").psk is None  # empty: no PSK, as flannel


# --- Mode against the families ----------------------------------------------------------------

V6 = {"EnableIPv6": True, "IPv6Network": "fd00:10:5::/48"}
V6_ONLY = {"EnableIPv4": False, **V6}


def test_mode_ipv6_needs_ipv6() -> None:
    with pytest.raises(ConfigError, match=r'Backend\.Mode "ipv6".*EnableIPv6'):
        parse({"Type": "wireguard", "Mode": "ipv6"})
    assert parse({"Type": "wireguard", "Mode": "ipv6"}, **V6).backend.mode == "ipv6"
    assert parse({"Type": "wireguard", "Mode": "ipv6"}, **V6_ONLY).backend.mode == "ipv6"


def test_mode_ipv4_needs_ipv4() -> None:
    doc = {"EnableIPv4": False, "Backend": {"Type": "wireguard", "Mode": "ipv4"}, **V6}
    with pytest.raises(ConfigError, match=r'Backend\.Mode "ipv4".*IPv6-only'):
        parse_network_config(json.dumps(doc))
    assert parse({"Type": "wireguard", "Mode": "ipv4"}, **V6).backend.mode == "ipv4"


@pytest.mark.parametrize("mode", ["separate", "auto"])
def test_separate_and_auto_run_on_any_family(mode: str) -> None:
    for net in ({}, V6):
        assert parse({"Type": "wireguard", "Mode": mode}, **net).backend.mode == mode
    doc = {"EnableIPv4": False, "Backend": {"Type": "wireguard", "Mode": mode}, **V6}
    config = parse_network_config(json.dumps(doc))
    assert config.ipv4_network is None
    assert isinstance(config.backend, WireguardConfig) and config.backend.mode == mode


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 65535), st.integers(1, 65535), st.integers(0, 65535),
       st.sampled_from(["separate", "auto", "ipv4", "ipv6"]),
       st.one_of(st.just(0), st.integers(148, 65535)))
def test_any_valid_backend_round_trips(port: int, port6: int, keepalive: int, mode: str,
                                       mtu: int) -> None:
    assume(mode != "separate" or port != port6)  # two devices, two ports (test below)
    config = parse({"Type": "wireguard", "ListenPort": port, "ListenPortV6": port6,
                    "PersistentKeepaliveInterval": keepalive, "Mode": mode, "MTU": mtu}, **V6)
    assert config.backend == WireguardConfig(listen_port=port, listen_port_v6=port6,
                                             keepalive=keepalive, mode=mode, mtu=mtu or None)


def test_separate_dual_stack_needs_two_ports() -> None:
    doc = {"Network": "10.5.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:5::/48",
           "Backend": {"Type": "wireguard", "ListenPort": 4000, "ListenPortV6": 4000}}
    with pytest.raises(ConfigError, match=r"Backend\.ListenPortV6 4000 equals ListenPort"):
        parse_network_config(json.dumps(doc))
    doc["Backend"]["Mode"] = "auto"  # one device: ListenPortV6 is unused  # type: ignore[index]
    assert parse_network_config(json.dumps(doc)).backend.listen_port == 4000
