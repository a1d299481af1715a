"""Frames seen on one underlay port while an action runs, decoded with scapy."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from netns_lab.netns import socket_in_netns

ETH_P_ALL = 3


def capture(ns: str, ifname: str, action: Callable[[], Any], *,
            settle: float = 0.3) -> list[Any]:
    """Every frame on `ifname` in `ns` during `action()` (plus `settle` s), as scapy Ether."""
    import scapy.layers.inet  # noqa: F401 - binds IP/UDP/ICMP under Ether for decoding
    from scapy.layers.l2 import Ether

    sock = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, 0))
        action()
        frames: list[bytes] = []
        sock.settimeout(0.05)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            try:
                frames.append(sock.recv(65535))
            except TimeoutError:
                continue
    finally:
        sock.close()
    return [Ether(f) for f in frames]


def vxlan_frames(frames: list[Any], port: int) -> list[tuple[Any, Any, Any]]:
    """(outer IP, VXLAN header, inner Ether) for UDP frames to `port`."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    out = []
    for f in frames:
        if IP in f and UDP in f and f[UDP].dport == port:
            vx = VXLAN(bytes(f[UDP].payload))
            out.append((f[IP], vx, vx.payload))
    return out


def icmp_frames(frames: list[Any]) -> list[Any]:
    """The IP layer of plain (unencapsulated) ICMP frames."""
    from scapy.layers.inet import ICMP, IP, UDP

    return [f[IP] for f in frames if IP in f and ICMP in f and UDP not in f]
