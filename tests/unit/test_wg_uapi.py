"""backends/wg_uapi.py on UAPI text written by hand as wireguard-go prints it (its
IpcGetOperation: device lines, then per peer public_key, preshared_key,
protocol_version, endpoint when known, handshake, counters, keepalive, allowed_ip;
`errno=0` and a blank line), its negative errnos, malformed replies; and `set`
requests run through a small UAPI interpreter written here from the protocol's text."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.wg_desired import ActualPeer, PeerPlan, WgPeer
from backends.wg_uapi import UapiError, check_reply, parse_get, render_set

KB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KC = "hBqVSJaGhMJdcmPU8jXC9UwVFNhF+Jty3gg0Y1HZr1E="
PRIV = bytes(range(32))
PSK = bytes([0xAB]) * 32


def hexkey(b64: str) -> str:
    return base64.b64decode(b64).hex()


def peer_text(k: str, *, psk: bytes = bytes(32), endpoint: str | None = "192.168.1.2:51820",
              sec: int = 1700000000, nsec: int = 250000000, tx: int = 1184, rx: int = 920,
              keepalive: int = 0, allowed: tuple[str, ...] = ("10.5.2.0/24",)) -> str:
    return (f"public_key={hexkey(k)}\npreshared_key={psk.hex()}\nprotocol_version=1\n"
            + (f"endpoint={endpoint}\n" if endpoint is not None else "")
            + f"last_handshake_time_sec={sec}\nlast_handshake_time_nsec={nsec}\n"
            f"tx_bytes={tx}\nrx_bytes={rx}\npersistent_keepalive_interval={keepalive}\n"
            + "".join(f"allowed_ip={a}\n" for a in allowed))


def reply(*peers: str, private: bytes | None = PRIV, port: int = 51820, fwmark: int = 0) -> str:
    return ((f"private_key={private.hex()}\n" if private is not None else "")
            + f"listen_port={port}\n" + (f"fwmark={fwmark}\n" if fwmark else "")
            + "".join(peers) + "errno=0\n\n")


def test_a_get_reply_is_read_field_by_field() -> None:
    text = reply(peer_text(KB),
                 peer_text(KC, psk=PSK, endpoint="[fd00::1]:51821", sec=0, nsec=0, tx=0,
                           rx=0, keepalive=25, allowed=("fd00:10:5:3::/64", "10.5.3.0/24")),
                 port=51821, fwmark=0x1337)
    state = parse_get(text)
    assert (state.private_key, state.listen_port, state.fwmark) == (PRIV, 51821, 0x1337)
    assert state.peers == {
        KB: ActualPeer(KB, "192.168.1.2:51820", ("10.5.2.0/24",), None, 0, 1700000000.25,
                       920, 1184),
        KC: ActualPeer(KC, "[fd00::1]:51821", ("10.5.3.0/24", "fd00:10:5:3::/64"), PSK, 25,
                       0.0, 0, 0)}


def test_a_device_without_key_peers_or_endpoint() -> None:
    state = parse_get(reply(private=None, port=0))
    assert (state.private_key, state.listen_port, state.peers) == (None, 0, {})
    assert parse_get(reply(private=bytes(32))).private_key is None  # all zeros: no key
    p = parse_get(reply(peer_text(KB, endpoint=None, allowed=()))).peers[KB]
    assert (p.endpoint, p.allowed_ips) == ("", ())


def test_an_ipv6_endpoint_is_spelled_one_way() -> None:
    p = parse_get(reply(peer_text(KB, endpoint="[fd00:0:0::1]:51821"))).peers[KB]
    assert p.endpoint == "[fd00::1]:51821"


@pytest.mark.parametrize("code", [-22, -5, -98, 1])
def test_a_failed_get_raises_with_its_errno(code: int) -> None:
    with pytest.raises(UapiError) as err:
        parse_get(f"errno={code}\n\n")
    assert err.value.errno == code


def test_check_reply() -> None:
    check_reply("errno=0\n\n")
    for code in (-22, -98):  # wireguard-go's -EINVAL, -EADDRINUSE
        with pytest.raises(UapiError, match=f"errno={code}") as err:
            check_reply(f"errno={code}\n\n")
        assert err.value.errno == code
    with pytest.raises(UapiError, match="no errno"):
        check_reply("")


@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    reply(peer_text(KB))[:-len("errno=0\n\n")],  # cut short: no errno line
    "listen_port=51820\ngarbage\nerrno=0\n\n",
    "private_key=zz\nerrno=0\n\n",
    f"private_key={bytes(31).hex()}\nerrno=0\n\n",
    "listen_port=x\nerrno=0\n\n",
    f"public_key={bytes(31).hex()}\nerrno=0\n\n",
    f"public_key={hexkey(KB)}z\nerrno=0\n\n",
    reply(peer_text(KB).replace("tx_bytes=1184", "tx_bytes=lots")),
    reply(peer_text(KB).replace("last_handshake_time_sec=1700000000",
                                "last_handshake_time_sec=yesterday")),
    reply(peer_text(KB, keepalive=25).replace("interval=25", "interval=25s")),
    reply(peer_text(KB).replace("preshared_key=00", "preshared_key=0g")),
    reply(peer_text(KB, psk=bytes(31))),
    "listen_port=51820\nerrno=none\n\n",
])
def test_a_malformed_reply_is_a_uapi_error(text: str) -> None:
    with pytest.raises(UapiError):
        parse_get(text)


# --- generated replies ------------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
nets = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: str(IPv4Network(t, strict=False))),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: str(IPv6Network(t, strict=False))))
endpoints = st.one_of(
    st.just(""),
    st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 65535)).map(
        lambda t: f"{IPv4Address(t[0])}:{t[1]}"),
    st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 65535)).map(
        lambda t: f"[{IPv6Address(t[0]).compressed}]:{t[1]}"))
actual_peers = st.builds(
    ActualPeer, keys, endpoints, st.lists(nets, unique=True, max_size=4).map(
        lambda a: tuple(sorted(a))),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32).filter(any)),
    st.integers(0, 65535), st.just(0.0), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))


def text_of(p: ActualPeer, sec: int, nsec: int) -> str:
    return peer_text(p.public_key, psk=p.psk or bytes(32), endpoint=p.endpoint or None,
                     sec=sec, nsec=nsec, tx=p.tx_bytes, rx=p.rx_bytes, keepalive=p.keepalive,
                     allowed=p.allowed_ips)


@settings(max_examples=200, deadline=None)
@given(st.lists(actual_peers, max_size=5, unique_by=lambda p: p.public_key),
       st.integers(0, 2**33), st.integers(0, 999_999_999), st.integers(0, 65535))
def test_parse_get_returns_the_peers_a_reply_lists(peers: list[ActualPeer], sec: int,
                                                   nsec: int, port: int) -> None:
    state = parse_get(reply(*(text_of(p, sec, nsec) for p in peers), port=port))
    assert state.listen_port == port and state.private_key == PRIV
    when = sec + nsec / 1e9
    assert state.peers == {p.public_key: ActualPeer(
        p.public_key, p.endpoint, p.allowed_ips, p.psk, p.keepalive, when, p.rx_bytes,
        p.tx_bytes) for p in peers}


# --- set requests, applied by an interpreter of the protocol ----------------------------------


@dataclass
class Dev:
    private_key: str = ""
    listen_port: int = 0
    peers: dict[str, dict[str, object]] = field(default_factory=dict)


def apply(dev: Dev, request: str) -> None:
    """wireguard.com/xplatform's `set=1`: device keys until the first public_key; each
    public_key adds or selects a peer; the keys after it change that peer in order."""
    lines = request.split("\n")
    assert lines[0] == "set=1" and request.endswith("\n\n") and "" not in lines[1:-2]
    peer: dict[str, object] | None = None
    for line in lines[1:-2]:
        k, v = line.split("=", 1)
        if k == "public_key":
            assert len(bytes.fromhex(v)) == 32
            peer = dev.peers.setdefault(v, {"allowed": [], "endpoint": "", "psk": "00" * 32,
                                            "keepalive": 0})
        elif peer is None:
            assert k in ("private_key", "listen_port", "replace_peers"), line
            if k == "private_key":
                dev.private_key = v
            elif k == "listen_port":
                dev.listen_port = int(v)
            else:
                dev.peers.clear()
        elif k == "remove":
            assert v == "true"
            dev.peers = {hk: p for hk, p in dev.peers.items() if p is not peer}
            peer = None
        elif k == "replace_allowed_ips":
            assert v == "true"
            peer["allowed"] = []
        elif k == "allowed_ip":
            ip_network(v)  # a CIDR
            peer["allowed"].append(v)  # type: ignore[attr-defined]
        elif k in ("endpoint", "preshared_key", "persistent_keepalive_interval"):
            peer[{"endpoint": "endpoint", "preshared_key": "psk"}.get(k, "keepalive")] = v
        else:
            raise AssertionError(f"not a UAPI set key: {line}")


wg_peers = st.builds(
    WgPeer, keys, endpoints.filter(bool), st.lists(nets, unique=True, max_size=3).map(
        lambda a: tuple(sorted(a))),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32).filter(any)),
    st.integers(0, 65535))


# generating keys and filtered values is slow on a loaded 2-core box: not a finding
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(wg_peers, max_size=5, unique_by=lambda p: p.public_key),
       st.lists(wg_peers, max_size=4, unique_by=lambda p: p.public_key), st.booleans())
def test_a_set_request_makes_the_device_what_was_planned(
        before: list[WgPeer], upsert: list[WgPeer], remove_all: bool) -> None:
    dev = Dev()
    apply(dev, render_set(private_key=PRIV, listen_port=51820,
                          plan=PeerPlan(upsert=tuple(before))))
    assert (dev.private_key, dev.listen_port) == (PRIV.hex(), 51820)
    gone = tuple(p.public_key for p in before if remove_all and p not in upsert)
    apply(dev, render_set(plan=PeerPlan(upsert=tuple(upsert), remove=gone)))
    expect = {p.public_key: p for p in before if p.public_key not in gone}
    expect.update({p.public_key: p for p in upsert})
    assert dev.peers == {hexkey(k): {
        "allowed": list(p.allowed_ips), "endpoint": p.endpoint,
        "psk": (p.psk or bytes(32)).hex(), "keepalive": str(p.keepalive)}
        for k, p in expect.items()}
    assert (dev.private_key, dev.listen_port) == (PRIV.hex(), 51820)  # untouched


def test_set_device_fields_and_replace_peers() -> None:
    dev = Dev(peers={"aa" * 32: {}})
    apply(dev, render_set(listen_port=4000, replace_peers=True))
    assert (dev.listen_port, dev.peers, dev.private_key) == (4000, {}, "")
    assert render_set() == "set=1\n\n"


def test_allowed_ips_are_read_in_one_spelling() -> None:
    # the kernel (through pyroute2) prints a ::/96 prefix dotted; desired peers never do
    text = (f"listen_port=1\npublic_key={'22' * 32}\nallowed_ip=::7.254.255.230/128\n"
            "allowed_ip=10.5.1.7/24\nerrno=0\n\n")
    (peer,) = parse_get(text).peers.values()
    assert peer.allowed_ips == ("10.5.1.0/24", "::7fe:ffe6/128")
