"""WireGuard on the underlay: what a capture can say about it, which is only its envelope.

`decode` is `flanneld.capture.decode` plus WireGuard: a UDP datagram to or from a
WireGuard port becomes `encap` "wireguard" with its message type, its sender and
receiver indexes and its length. Nothing inside is readable, and that is the point:
the pod addresses are in the ciphertext, so `flannelctl trace` and `netns-lab
capture` on a wireguard node show outer addresses and UDP to the listen port only.

Message layouts (the WireGuard protocol, section 5.4): every message starts with a
type byte and three reserved zero bytes;
  1 handshake initiation, 148 bytes: sender index, then ephemeral/static/timestamp/MACs;
  2 handshake response, 92 bytes: sender index, receiver index, ...;
  3 cookie reply, 64 bytes: receiver index, nonce, cookie;
  4 transport data, >= 32 bytes: receiver index, 64-bit counter, ciphertext + 16-byte tag
    (32 bytes exactly: a keepalive, no inner packet).
Pure; never raises on a short or garbled datagram (it is then plain UDP).
"""

from __future__ import annotations

import argparse
import struct
import time
from typing import Any

from flanneld import capture

DEFAULT_PORTS = frozenset({51820, 51821})  # flannel's ListenPort and ListenPortV6
TYPES = {1: "handshake-initiation", 2: "handshake-response", 3: "cookie-reply", 4: "data"}
_SIZES = {1: 148, 2: 92, 3: 64}  # exact; data is 32 + 16n
DATA_HEADER = 16
KEEPALIVE_SIZE = 32


def message(payload: bytes) -> dict[str, Any] | None:
    """One WireGuard message's envelope, or None if `payload` is not one."""
    if len(payload) < 4 or payload[1:4] != b"\0\0\0" or payload[0] not in TYPES:
        return None
    kind, n = payload[0], len(payload)
    if (kind in _SIZES and n != _SIZES[kind]) or (
            kind == 4 and (n < KEEPALIVE_SIZE or (n - DATA_HEADER) % 16)):
        return None
    out: dict[str, Any] = {"wg_type": TYPES[kind], "wg_len": n}
    if kind == 1:
        out["sender"] = struct.unpack_from("<I", payload, 4)[0]
    elif kind == 2:
        out["sender"], out["receiver"] = struct.unpack_from("<II", payload, 4)
    elif kind == 3:
        out["receiver"] = struct.unpack_from("<I", payload, 4)[0]
    else:
        out["receiver"], out["counter"] = struct.unpack_from("<IQ", payload, 4)
        out["keepalive"] = n == KEEPALIVE_SIZE
    return out


def _udp_payload(raw: bytes, ethernet: bool) -> tuple[Any, bytes] | None:
    """(the outer IP header, the UDP payload) of a frame, or None."""
    if ethernet:
        eth = capture._ether(raw)
        if eth is None or eth[2] not in (capture.ETH_P_IP, capture.ETH_P_IPV6):
            return None
        raw = eth[3]
    ip = capture._ip(raw)
    if ip is None or ip.proto != capture.IPPROTO_UDP or not ip.first or len(ip.l4) < 8:
        return None
    return ip, ip.l4[8:]


def decode(frame: Any, vxlan_ports: frozenset[int] = capture.VXLAN_PORTS,
           show_all: bool = False, *, ethernet: bool = True,
           wg_ports: frozenset[int] = DEFAULT_PORTS) -> dict[str, Any] | None:
    """`flanneld.capture.decode`, with UDP to or from `wg_ports` decoded as WireGuard."""
    d = capture.decode(frame, vxlan_ports, show_all, ethernet=ethernet)
    if d is None or d.get("encap") != "none" or not d.get("proto", "").startswith("udp "):
        return d
    found = _udp_payload(bytes(frame), ethernet)
    if found is None:
        return d
    ip, payload = found
    sport, dport = struct.unpack_from(">HH", ip.l4)
    if not {sport, dport} & wg_ports:
        return d
    wg = message(payload)
    if wg is None:
        return d
    return {"encap": "wireguard", "outer_family": ip.family, "outer_src": ip.src,
            "outer_dst": ip.dst, "sport": sport, "port": dport, "len": ip.length, **wg}


def format_line(d: dict[str, Any], stamp: float) -> str:
    """`WG` (over IPv4) or `WG6` lines; anything else as `flanneld.capture` writes it."""
    if d.get("encap") != "wireguard":
        return capture.format_line(d, stamp)
    t = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
    label = "WG6" if d.get("outer_family") == "ipv6" else "WG"
    ids = " ".join(f"{k} {d[k]:#010x}" for k in ("sender", "receiver") if k in d)
    kind = "keepalive" if d.get("keepalive") else d["wg_type"]
    return (f"{t} {label:<5} {d['outer_src']} > {d['outer_dst']} udp {d['sport']} > "
            f"{d['port']} {kind} {ids} len {d['wg_len']} | inner: encrypted")


def add_arguments(p: argparse.ArgumentParser, iface: str | None = "eth0") -> None:
    capture.add_arguments(p, iface)
    p.add_argument("--wg-port", type=int, action="append", default=[],
                   help="another WireGuard UDP port to decode (51820 and 51821 always are)")


def run(args: argparse.Namespace, netns: str | None = None) -> int:
    """`flanneld.capture.capture` with the WireGuard decoder (same options, same output)."""
    vx = frozenset(args.port) | capture.VXLAN_PORTS
    wg = frozenset(getattr(args, "wg_port", [])) | DEFAULT_PORTS
    seen: dict[str, set[int]] = {"wireguard": set(), "other": set()}

    def note(d: dict[str, Any]) -> None:
        seen["wireguard" if d["encap"] == "wireguard" else "other"].add(d.get("port", 0))

    return capture.capture(
        args, netns, decoder=lambda frame, eth: decode(frame, vx, args.all, ethernet=eth,
                                                       wg_ports=wg),
        formatter=format_line, on_shown=note, closing=lambda: summary(seen))


def summary(seen: dict[str, set[int]]) -> str:
    """The note on a capture that met WireGuard: whether it carried anything else."""
    if not seen["wireguard"]:
        return ""
    ports = "/".join(str(p) for p in sorted(seen["wireguard"]))
    if seen["other"]:
        return f"; WireGuard on udp/{ports}, and other traffic too (see above)"
    return f"; all WireGuard, UDP to port {ports}: no pod packet in cleartext"
