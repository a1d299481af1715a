"""backends/wg_kernel.py against pyroute2 as the oracle, without a kernel: `render_dump`
reads device dumps built with pyroute2's `wgmsg` the way drivers/net/wireguard/netlink.c
lays them out (device attributes in the first message only; a peer whose allowed IPs do
not fit goes on in the next message as its public key and the rest of its allowed IPs),
encoded and decoded as replies are; `set_calls` feeds pyroute2's own `WireGuard.set`
(captured instead of sent), and a model of the kernel's set_device applies what it sends.
UAPI `set` text -> kernel -> UAPI `get` text comes back as what was planned."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

wireguard = pytest.importorskip("pyroute2.netlink.generic.wireguard")
from pyroute2.netlink.generic.wireguard import AsyncWireGuard, wgmsg  # noqa: E402

from backends.wg_desired import ActualPeer, PeerPlan, WgPeer  # noqa: E402
from backends.wg_kernel import render_dump, set_calls  # noqa: E402
from backends.wg_uapi import parse_get, render_set  # noqa: E402

REMOVE_ME, REPLACE_ALLOWEDIPS = 0x1, 0x2
PRIV = bytes(range(32))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class KPeer:
    psk: bytes = bytes(32)
    endpoint: tuple[str, int] | None = None
    keepalive: int = 0
    allowed: list[str] = field(default_factory=list)
    handshake: tuple[int, int] = (0, 0)
    rx: int = 0
    tx: int = 0


@dataclass
class Kernel:
    """A kernel WireGuard device: what set_device changes and get_device dumps."""

    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: dict[bytes, KPeer] = field(default_factory=dict)  # in insertion order

    def apply(self, msg: Any) -> None:
        priv = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if priv is not None:
            self.private_key = base64.b64decode(priv)
        for name in ("listen_port", "fwmark"):
            value = msg.get_attr(f"WGDEVICE_A_{name.upper()}")
            if value is not None:
                setattr(self, name, value)
        for p in msg.get_attr("WGDEVICE_A_PEERS") or ():
            pub = base64.b64decode(p.get_attr("WGPEER_A_PUBLIC_KEY"))
            flags = p.get_attr("WGPEER_A_FLAGS") or 0
            if flags & REMOVE_ME:
                self.peers.pop(pub, None)
                continue
            peer = self.peers.setdefault(pub, KPeer())
            psk = p.get_attr("WGPEER_A_PRESHARED_KEY")
            if psk is not None:
                peer.psk = base64.b64decode(psk)
            ep = p.get_attr("WGPEER_A_ENDPOINT")
            if ep is not None:
                peer.endpoint = (ep["addr"], ep["port"])
            if flags & REPLACE_ALLOWEDIPS:
                peer.allowed = []
            peer.allowed += [a["addr"] for a in p.get_attr("WGPEER_A_ALLOWEDIPS") or ()]
            ka = p.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if ka is not None:
                peer.keepalive = ka

    def dump(self, cuts: Sequence[tuple[int, int]] = ()) -> list[Any]:
        """The dump as replies: a new message after (peer i, its first j allowed IPs)."""
        msgs: list[list[Any]] = [[]]
        for i, (pub, p) in enumerate(self.peers.items()):
            full = [["WGPEER_A_PUBLIC_KEY", b64(pub)], ["WGPEER_A_PRESHARED_KEY", b64(p.psk)],
                    ["WGPEER_A_LAST_HANDSHAKE_TIME",
                     {"tv_sec": p.handshake[0], "tv_nsec": p.handshake[1]}],
                    ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", p.keepalive],
                    ["WGPEER_A_TX_BYTES", p.tx], ["WGPEER_A_RX_BYTES", p.rx],
                    ["WGPEER_A_PROTOCOL_VERSION", 1]]
            if p.endpoint:
                full.append(["WGPEER_A_ENDPOINT", {"addr": p.endpoint[0],
                                                   "port": p.endpoint[1]}])
            start, head = 0, full
            for j in sorted(j for ci, j in cuts if ci == i and j < len(p.allowed)):
                msgs[-1].append({"attrs": [*head, ["WGPEER_A_ALLOWEDIPS",
                                                   allowed_ips(p.allowed[start:j])]]})
                msgs.append([])
                start, head = j, full[:1]  # continued: the key and more allowed IPs
            msgs[-1].append({"attrs": [*head, ["WGPEER_A_ALLOWEDIPS",
                                               allowed_ips(p.allowed[start:])]]})
            if any(ci == i and j >= len(p.allowed) for ci, j in cuts):
                msgs.append([])
        out = []
        for n, peers in enumerate(msgs):
            msg = wgmsg()
            msg["cmd"], msg["version"] = 0, 1
            if n == 0:
                msg["attrs"] += [["WGDEVICE_A_LISTEN_PORT", self.listen_port],
                                 ["WGDEVICE_A_FWMARK", self.fwmark],
                                 ["WGDEVICE_A_IFINDEX", 7], ["WGDEVICE_A_IFNAME", "flannel-wg"]]
                if self.private_key is not None:
                    msg["attrs"] += [["WGDEVICE_A_PRIVATE_KEY", b64(self.private_key)],
                                     ["WGDEVICE_A_PUBLIC_KEY", b64(bytes(32))]]
            msg["attrs"].append(["WGDEVICE_A_PEERS", peers])
            out.append(reply(msg))
        return out


def allowed_ips(cidrs: list[str]) -> Any:
    return AsyncWireGuard._wg_build_allowedips(None, cidrs)  # pyroute2's own encoder


def decoded(data: bytes) -> Any:
    msg = wgmsg(data)
    msg.decode()
    return msg


def reply(msg: Any) -> Any:
    msg.encode()
    return decoded(msg.data)


class Capture(AsyncWireGuard):
    """pyroute2's WireGuard.set, its message kept instead of sent."""

    prid = 0x1F
    pid = 1

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(bytes(data))

    async def get(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        yield wgmsg()  # the ack, no error


def kernel_set(kernel: Kernel, request: str) -> list[dict[str, Any]]:
    calls = list(set_calls(request))
    cap = Capture()
    for kwargs in calls:
        asyncio.run(cap.set("flannel-wg", **kwargs))
    for data in cap.sent:
        kernel.apply(decoded(data))
    return calls


K1, K2, K3 = (bytes([n]) * 32 for n in (0x11, 0x22, 0x33))
PSK = bytes([0xAB]) * 32


def sample() -> Kernel:
    return Kernel(PRIV, 51821, 0, {
        K1: KPeer(bytes(32), ("192.168.1.2", 51820), 0, ["10.5.2.0/24"], (1700000000, 5),
                  920, 1184),
        K2: KPeer(PSK, ("fd00::1", 51821), 25, ["fd00:10:5:3::/64", "10.5.3.0/24"],
                  (0, 0), 2**64 - 1, 0),
        K3: KPeer()})


def test_render_dump_of_a_kernel_dump() -> None:
    state = parse_get(render_dump(sample().dump()))
    assert (state.private_key, state.listen_port) == (PRIV, 51821)
    assert state.peers == {
        b64(K1): ActualPeer(b64(K1), "192.168.1.2:51820", ("10.5.2.0/24",), None, 0,
                            1700000000.000000005, 920, 1184),
        b64(K2): ActualPeer(b64(K2), "[fd00::1]:51821", ("10.5.3.0/24", "fd00:10:5:3::/64"),
                            PSK, 25, 0.0, 2**64 - 1, 0),
        b64(K3): ActualPeer(b64(K3), "", (), None, 0, 0.0, 0, 0)}


def test_a_device_without_a_key() -> None:
    state = parse_get(render_dump(Kernel(None, 0).dump()))
    assert (state.private_key, state.listen_port, state.peers) == (None, 0, {})


@pytest.mark.parametrize("cuts", [[(0, 1)], [(1, 0)], [(1, 1)], [(1, 0), (1, 1)],
                                  [(0, 0), (1, 1), (2, 0)]])
def test_a_dump_split_over_messages_reads_the_same(cuts: list[tuple[int, int]]) -> None:
    kernel = sample()
    whole = parse_get(render_dump(kernel.dump()))
    msgs = kernel.dump(cuts)
    assert len(msgs) > 1
    assert parse_get(render_dump(msgs)) == whole


# --- set requests through pyroute2 into the kernel model --------------------------------------


def test_device_fields_go_in_one_call() -> None:
    kernel = Kernel()
    calls = kernel_set(kernel, render_set(private_key=PRIV, listen_port=51820))
    assert calls == [{"private_key": b64(PRIV), "listen_port": 51820}]
    assert (kernel.private_key, kernel.listen_port, kernel.peers) == (PRIV, 51820, {})


def test_peers_are_set_and_removed_one_call_each() -> None:
    kernel = sample()
    want = WgPeer(b64(K3), "[fd00::9]:4000", ("10.5.9.0/24", "fd00:10:5:9::/64"), PSK, 25)
    calls = kernel_set(kernel, render_set(plan=PeerPlan(upsert=(want,), remove=(b64(K1),))))
    assert len(calls) == 2 and all(set(c) == {"peer"} for c in calls)
    assert list(kernel.peers) == [K2, K3]
    assert kernel.peers[K3] == KPeer(PSK, ("fd00::9", 4000), 25,
                                     ["10.5.9.0/24", "fd00:10:5:9::/64"])
    # set again with other allowed IPs and no PSK: replaced, not added to
    again = WgPeer(b64(K3), "192.168.1.9:51820", ("10.5.10.0/24",), None, 0)
    kernel_set(kernel, render_set(plan=PeerPlan(upsert=(again,))))
    assert kernel.peers[K3] == KPeer(bytes(32), ("192.168.1.9", 51820), 0, ["10.5.10.0/24"])


def test_priming_a_peer_leaves_it_as_it_was_set() -> None:
    kernel = sample()
    calls = kernel_set(kernel, render_set(prime=(b64(K1),)))  # only peers without keepalive
    assert [c["peer"].get("persistent_keepalive") for c in calls] == [1, 0]
    assert kernel == sample()  # no allowed IPs replaced, no endpoint or PSK touched


def test_set_calls_carry_every_key_render_set_writes() -> None:
    request = render_set(private_key=PRIV, listen_port=1, plan=PeerPlan(
        upsert=(WgPeer(b64(K1), "10.0.0.1:2", ("10.5.1.0/24",), PSK, 3),)))
    [device, peer] = list(set_calls(request))
    assert device == {"private_key": b64(PRIV), "listen_port": 1}
    assert peer == {"peer": {"public_key": b64(K1), "replace_allowed_ips": True,
                             "allowed_ips": ["10.5.1.0/24"], "endpoint_addr": "10.0.0.1",
                             "endpoint_port": 2, "preshared_key": b64(PSK),
                             "persistent_keepalive": 3}}


keys = st.binary(min_size=32, max_size=32)
cidrs = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: str(IPv4Network(t, strict=False))),
    # not under ::/96, which inet_ntop (pyroute2) spells in the dotted IPv4 form
    st.tuples(st.integers(2**112, 2**128 - 1), st.integers(16, 128)).map(
        lambda t: str(IPv6Network(t, strict=False))))
endpoints = st.one_of(
    st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 65535)).map(
        lambda t: f"{IPv4Address(t[0])}:{t[1]}"),
    st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 65535)).map(
        lambda t: f"[{IPv6Address(t[0]).compressed}]:{t[1]}"))
wg_peers = st.builds(
    WgPeer, keys.map(b64), endpoints,
    st.lists(cidrs, unique=True, max_size=4).map(lambda a: tuple(sorted(a))),
    st.one_of(st.none(), keys.filter(any)), st.integers(0, 65535))


@settings(max_examples=100, deadline=None)
@given(st.lists(wg_peers, max_size=5, unique_by=lambda p: p.public_key),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), max_size=3),
       st.integers(1, 65535), st.booleans())
def test_uapi_set_then_get_through_the_kernel(peers: list[WgPeer], cuts: list[tuple[int, int]],
                                               port: int, remove_first: bool) -> None:
    kernel = Kernel()
    kernel_set(kernel, render_set(private_key=PRIV, listen_port=port,
                                  plan=PeerPlan(upsert=tuple(peers))))
    if remove_first and peers:
        kernel_set(kernel, render_set(plan=PeerPlan(remove=(peers[0].public_key,))))
        peers = peers[1:]
    state = parse_get(render_dump(kernel.dump(cuts)))
    assert (state.private_key, state.listen_port) == (PRIV, port)
    assert state.peers == {p.public_key: ActualPeer(p.public_key, p.endpoint, p.allowed_ips,
                                                    p.psk, p.keepalive, 0.0, 0, 0)
                           for p in peers}
