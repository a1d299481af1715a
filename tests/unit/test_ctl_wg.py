"""flannelctl's WireGuard parts, pure, on hand-made data: the underlay decoder (WireGuard
messages built with scapy's independent encoder), the per-peer verdicts (programmed,
partial, missing, skipped; roaming; quiet handshakes) and the UAPI `get` read over a
unix socket that, like wireguard-go, keeps the connection open after its reply."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.peerstate import MISSING, PARTIAL, PROGRAMMED, SKIPPED
from flanneld.ctl import wgpeers, wgwire
from flanneld.ctl.wgpeers import judge, judge_device

scapy_wg = pytest.importorskip("scapy.contrib.wireguard")
from scapy.contrib.wireguard import (  # noqa: E402
    Wireguard,
    WireguardCookieReply,
    WireguardInitiation,
    WireguardResponse,
    WireguardTransport,
)
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

H1, H2 = "192.168.100.10", "192.168.100.11"
KEY_A = "jN1lDhzg6IVVhXVbyd0SMP0P+0eKFoh4EFUDEsZP6Ug="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def frame(wg: object, sport: int = 51820, dport: int = 51820, v6: bool = False) -> bytes:
    ip = IPv6(src="fd10::10", dst="fd10::11") if v6 else IP(src=H1, dst=H2)
    return bytes(Ether() / ip / UDP(sport=sport, dport=dport) / wg)


def data(n: int, receiver: int = 0x11223344, counter: int = 9) -> object:
    return Wireguard() / WireguardTransport(receiver_index=receiver, counter=counter,
                                            encrypted_encapsulated_packet=b"\x5a" * n)


# --- the underlay decoder -----------------------------------------------------------------


def test_transport_data_shows_envelope_only() -> None:
    d = wgwire.decode(frame(data(96 + 16)))  # a ping's 84 bytes padded to 96, and the tag
    assert d == {"encap": "wireguard", "outer_family": "ipv4", "outer_src": H1,
                 "outer_dst": H2, "sport": 51820, "port": 51820, "len": 20 + 8 + 128,
                 "wg_type": "data", "wg_len": 128, "receiver": 0x11223344, "counter": 9,
                 "keepalive": False}
    line = wgwire.format_line(d, 0.0).split(" ", 1)[1]
    assert line == (f"WG    {H1} > {H2} udp 51820 > 51820 data receiver 0x11223344 len 128 "
                    "| inner: encrypted")
    unpadded = wgwire.decode(frame(data(84 + 16)))  # WireGuard pads to 16: not a data message
    assert unpadded is not None and unpadded["encap"] == "none"


@pytest.mark.parametrize("layer,kind,ids", [
    (WireguardInitiation(sender_index=7), "handshake-initiation", {"sender": 7}),
    (WireguardResponse(sender_index=7, receiver_index=9), "handshake-response",
     {"sender": 7, "receiver": 9}),
    (WireguardCookieReply(receiver_index=9), "cookie-reply", {"receiver": 9}),
])
def test_handshake_messages(layer: object, kind: str, ids: dict[str, int]) -> None:
    d = wgwire.decode(frame(Wireguard() / layer, v6=True))
    assert d is not None and d["encap"] == "wireguard" and d["outer_family"] == "ipv6"
    assert d["wg_type"] == kind and {k: d[k] for k in ids} == ids
    assert wgwire.format_line(d, 0.0).split(" ", 1)[1].startswith("WG6 ")


def test_keepalive_is_named() -> None:
    d = wgwire.decode(frame(data(16)))
    assert d is not None and d["keepalive"] is True
    assert " keepalive receiver " in wgwire.format_line(d, 0.0)


def test_other_ports_and_garbage_stay_plain_udp() -> None:
    other = wgwire.decode(frame(data(32), 40000, 53))
    assert other is not None and other["encap"] == "none"
    assert wgwire.decode(frame(data(32), 40000, 51999), wg_ports=frozenset({51999})
                         )["encap"] == "wireguard"  # type: ignore[index]
    for junk in (b"", b"\x04\x00\x00", b"\x04\x01\x00\x00" + bytes(28), b"\x09\0\0\0" + bytes(60),
                 b"\x01\0\0\0" + bytes(10), b"\x04\0\0\0" + bytes(29)):
        d = wgwire.decode(frame(junk))
        assert d is not None and d["encap"] == "none", junk
    assert wgwire.decode(b"\x00" * 5) is None  # not even Ethernet: hidden, as before


def test_summary_says_ciphertext_only_or_not() -> None:
    assert wgwire.summary({"wireguard": set(), "other": {0}}) == ""
    assert "no pod packet in cleartext" in wgwire.summary({"wireguard": {51820}, "other": set()})
    assert "other traffic too" in wgwire.summary({"wireguard": {51820}, "other": {8472}})


# --- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    public_key: str
    endpoint: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class Have(Want):
    last_handshake: float = 0.0
    rx_bytes: int = 0
    tx_bytes: int = 0


NOW = 1_000_000.0
WANT = Want(KEY_B, f"{H2}:51820", ("10.244.23.0/24",))


def have(**kw: object) -> Have:
    base: dict[str, object] = {"public_key": KEY_B, "endpoint": f"{H2}:51820",
                               "allowed_ips": ("10.244.23.0/24",), "last_handshake": NOW - 5,
                               "rx_bytes": 2048, "tx_bytes": 4096}
    return Have(**{**base, **kw})  # type: ignore[arg-type]


def test_programmed_with_handshake_and_counters() -> None:
    v = judge("10.244.23.0-24", "flannel-wg", WANT, have(), now=NOW, known_for=600)
    assert (v.state, v.problems, v.quiet, v.roamed) == (PROGRAMMED, (), False, False)
    assert (v.handshake_age, v.rx_bytes, v.tx_bytes) == (5.0, 2048, 4096)
    assert v.check().kind == "wg" and v.as_dict()["endpoint"] == f"{H2}:51820"


def test_missing_and_skipped() -> None:
    v = judge("k", "flannel-wg", WANT, None, now=NOW, known_for=0)
    assert v.state == MISSING and KEY_B in v.problems[0]
    s = judge("k", "flannel-wg", None, None, now=NOW, known_for=0, skipped="malformed key")
    assert (s.state, s.problems) == (SKIPPED, ("malformed key",))


def test_wrong_allowed_ips_is_partial() -> None:
    v = judge("k", "flannel-wg", WANT, have(allowed_ips=("10.244.99.0/24",)), now=NOW,
              known_for=600)
    assert v.state == PARTIAL
    assert v.problems == ("allowed IPs 10.244.99.0/24, want 10.244.23.0/24",)
    extra = judge("k", "d", WANT, have(allowed_ips=("10.244.23.0/24", "10.9.0.0/16")),
                  now=NOW, known_for=600)
    assert extra.state == PARTIAL  # exactly the lease's subnet(s), nothing more


def test_endpoint_roams_while_live_but_not_when_dead() -> None:
    roamed = judge("k", "d", WANT, have(endpoint="203.0.113.9:40000"), now=NOW, known_for=600)
    assert (roamed.state, roamed.roamed, roamed.endpoint) == (PROGRAMMED, True,
                                                              "203.0.113.9:40000")
    dead = judge("k", "d", WANT, have(endpoint="203.0.113.9:40000", last_handshake=NOW - 900),
                 now=NOW, known_for=600)
    assert dead.state == PARTIAL and dead.problems == (
        f"endpoint 203.0.113.9:40000, want {H2}:51820",)
    none = judge("k", "d", WANT, have(endpoint=None, last_handshake=0), now=NOW, known_for=5)
    assert none.state == PARTIAL and "endpoint none" in none.problems[0]


def test_quiet_handshakes() -> None:
    def quiet(last: float, known_for: float | None) -> bool:
        return judge("k", "d", WANT, have(last_handshake=last), now=NOW,
                     known_for=known_for).quiet
    assert quiet(NOW - 181, 600) and not quiet(NOW - 179, 600)
    assert quiet(0, 61) and not quiet(0, 59)  # never: only once we have known it a minute
    assert quiet(0, None)  # how long is unknown: taken as long enough


def test_endpoints_compare_canonically() -> None:
    e = wgpeers.endpoint_text
    assert e("[fd10:0:0::11]:51821") == e("[fd10::11]:51821") == "[fd10::11]:51821"
    assert e(("192.168.100.11", 51820)) == "192.168.100.11:51820"
    assert e(None) == e("") == ""
    v6 = Want(KEY_B, "[fd10::11]:51821", ("fc00:7:0:9::/64",))
    v = judge("k", "d", v6, have(endpoint="[fd10:0::11]:51821",
                                 allowed_ips=("fc00:7:0:8::/64",)), now=NOW, known_for=1)
    assert v.state == PARTIAL
    ok = judge("k", "d", v6, have(endpoint="[fd10:0::11]:51821",
                                  allowed_ips=("fc00:7:0:9:0::/64",)), now=NOW, known_for=1)
    assert ok.state == PROGRAMMED


def test_judge_device_names_leases_and_strays() -> None:
    stray = have(public_key=KEY_A, allowed_ips=("10.244.77.0/24",))
    out, strays = judge_device("flannel-wg", {KEY_B: WANT}, {KEY_B: "10.244.23.0-24"},
                               {"10.244.40.0-24": "key equals ours"},
                               {KEY_B: have(), KEY_A: stray}, now=NOW, known_for=600)
    assert {k: v.state for k, v in out.items()} == {"10.244.23.0-24": PROGRAMMED,
                                                    "10.244.40.0-24": SKIPPED}
    assert strays == [f"flannel-wg: peer {KEY_A} (10.244.77.0/24)"]


def test_human_units() -> None:
    assert [wgpeers.human_age(a) for a in (None, 5.2, 130, 7300)] == [
        "never", "5s ago", "2m10s ago", "2h01m ago"]
    assert [wgpeers.human_bytes(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**40)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3072.0 GiB"]


def test_lease_public_key_is_case_insensitive() -> None:
    @dataclass
    class Attrs:
        backend_data: object
        backend_v6_data: object = None

    assert wgpeers.lease_public_key(Attrs({"publicKey": KEY_A, "Port": 1})) == KEY_A
    assert wgpeers.lease_public_key(Attrs({"PublicKey": KEY_A}, {"PublicKey": KEY_B}),
                                    v6=True) == KEY_B
    assert wgpeers.lease_public_key(Attrs(None)) is None
    assert wgpeers.lease_public_key(Attrs({"PublicKey": 5})) is None


# --- reading a UAPI socket --------------------------------------------------------------------

REPLY = ("private_key=" + "11" * 32 + "\nlisten_port=51820\npublic_key=" + "22" * 32
         + "\nendpoint=192.168.100.11:51820\nallowed_ip=10.244.23.0/24\nerrno=0\n\n")


@pytest.fixture
def uapi_server(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket answering one `get=1` in two pieces, then holding the connection."""
    path = tmp_path / "flannel-wg.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    got: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while b"\n\n" not in buf:
                buf += conn.recv(100)
            got.append(buf)
            body = REPLY.encode()
            conn.sendall(body[:50])
            conn.sendall(body[50:])
            done.wait(10)  # like wireguard-go: the connection stays open for another request

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, got
    done.set()
    t.join(5)
    srv.close()


def test_read_uapi_returns_at_the_blank_line(uapi_server: tuple[Path, list[bytes]]) -> None:
    path, got = uapi_server
    assert wgpeers.read_uapi(path, timeout=5) == REPLY
    assert got == [b"get=1\n\n"]


def test_read_uapi_without_a_socket(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        wgpeers.read_uapi(tmp_path / "absent.sock", timeout=1)
