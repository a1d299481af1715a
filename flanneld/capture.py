"""Decode a node's underlay traffic: VXLAN outer addresses, VNI and the inner packet, v4 and v6.

One decoder for `flannelctl trace` (on a node, or `--netns`) and `netns-lab
capture h1` (which runs `python -m netns_lab.capture`, i.e. this, inside the
lab host's namespace). Each frame becomes one line (or one JSON object with
--json): VXLAN with its outer IPs (IPv4, or IPv6 for flannel-v6.<VNI>), UDP port,
VNI and the inner frame's IPs (IPv4 or IPv6), or plain IP (host-gw, DirectRouting).

`decode` is pure (the bytes of one frame in, plain data out) and never raises on
a short or garbled frame. The capture itself is a stdlib packet socket: no scapy
at run time. etcd's traffic, ARP, IPv6 neighbour discovery and MLD, and non-IP
frames are left out unless --all.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

VXLAN_PORTS = frozenset({8472, 4789})
ETCD_PORTS = frozenset({2379, 2380})
ICMP_TYPES = {0: "echo-reply", 8: "echo-request", 3: "unreachable", 11: "time-exceeded"}
ICMP6_TYPES = {1: "unreachable", 2: "packet-too-big", 3: "time-exceeded",
               4: "parameter-problem", 128: "echo-request", 129: "echo-reply",
               130: "mld-query", 131: "mld-report", 132: "mld-done",
               133: "router-solicitation", 134: "router-advertisement",
               135: "neighbor-solicitation", 136: "neighbor-advertisement", 137: "redirect",
               143: "mldv2-report"}
# Link-local chatter of any IPv6 segment (the IPv6 ARP): hidden on the underlay unless --all.
ICMP6_QUIET = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8)
_IPV6_EXT = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: (len+1)*8
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 = 6, 17, 1, 58
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772  # frames with an Ethernet header; others are raw IP
ETH_P_ALL = 0x0003


def _mac(b: bytes) -> str:
    return b.hex(":")


class _Ip:
    """One IPv4 or IPv6 header, walked to its transport header."""

    __slots__ = ("dst", "family", "first", "l4", "length", "proto", "src")

    def __init__(self, family: str, src: str, dst: str, proto: int, l4: bytes, length: int,
                 first: bool) -> None:
        self.family, self.src, self.dst, self.proto = family, src, dst, proto
        self.l4, self.length, self.first = l4, length, first


def _ip(buf: bytes) -> _Ip | None:
    """The IP packet at the start of `buf` (IPv4 or IPv6), or None if it is not one."""
    if len(buf) >= 20 and buf[0] >> 4 == 4:
        ihl = (buf[0] & 0x0F) * 4
        if ihl < 20 or len(buf) < ihl:
            return None
        total, frag = struct.unpack_from(">H2xH", buf, 2)
        return _Ip("ipv4", socket.inet_ntop(socket.AF_INET, buf[12:16]),
                   socket.inet_ntop(socket.AF_INET, buf[16:20]), buf[9],
                   buf[ihl:max(total, ihl)], total, frag & 0x1FFF == 0)
    if len(buf) >= 40 and buf[0] >> 4 == 6:
        payload = struct.unpack_from(">H", buf, 4)[0]
        proto, off, first = buf[6], 40, True
        while True:  # skip extension headers to the transport one
            if proto in _IPV6_EXT and len(buf) >= off + 2:
                proto, off = buf[off], off + (buf[off + 1] + 1) * 8
            elif proto == 44 and len(buf) >= off + 8:  # fragment header
                first = struct.unpack_from(">H", buf, off + 2)[0] >> 3 == 0
                proto, off = buf[off], off + 8
            elif proto == 51 and len(buf) >= off + 2:  # authentication header
                proto, off = buf[off], off + (buf[off + 1] + 2) * 4
            else:
                break
        return _Ip("ipv6", socket.inet_ntop(socket.AF_INET6, buf[8:24]),
                   socket.inet_ntop(socket.AF_INET6, buf[24:40]), proto,
                   buf[off:40 + payload], 40 + payload, first)
    return None


def _ports(ip: _Ip) -> tuple[int, int] | None:
    if ip.proto in (IPPROTO_TCP, IPPROTO_UDP) and ip.first and len(ip.l4) >= 4:
        sport, dport = struct.unpack_from(">HH", ip.l4)
        return sport, dport
    return None


def _proto(ip: _Ip) -> str:
    """What the IP packet carries, e.g. `icmp echo-request`, `icmp6 echo-reply`,
    `tcp 40000 > 80`, `udp 53 > 5353`."""
    names = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp",
             IPPROTO_ICMPV6: "icmp6"}
    name = names.get(ip.proto, f"proto {ip.proto}")
    if not ip.first:
        return f"{name} fragment"
    ports = _ports(ip)
    if ports is not None:
        return f"{name} {ports[0]} > {ports[1]}"
    if ip.proto == IPPROTO_ICMP and ip.l4:
        kind, code = ip.l4[0], ip.l4[1] if len(ip.l4) > 1 else 0
        text = f"icmp {ICMP_TYPES.get(kind, kind)}"
        if kind == 3 and code == 4 and len(ip.l4) >= 8:  # fragmentation needed: the path MTU
            text += f" frag-needed mtu {struct.unpack_from('>H', ip.l4, 6)[0]}"
        return text
    if ip.proto == IPPROTO_ICMPV6 and ip.l4:
        kind = ip.l4[0]
        text = f"icmp6 {ICMP6_TYPES.get(kind, kind)}"
        if kind == 2 and len(ip.l4) >= 8:
            text += f" mtu {struct.unpack_from('>I', ip.l4, 4)[0]}"
        elif kind in (135, 136) and len(ip.l4) >= 24:
            text += f" {socket.inet_ntop(socket.AF_INET6, ip.l4[8:24])}"
        return text
    return name


def _quiet(ip: _Ip) -> bool:
    """etcd's own traffic and IPv6 neighbour discovery/MLD: not flannel's data plane."""
    ports = _ports(ip)
    if ip.proto == IPPROTO_TCP and ports is not None and set(ports) & ETCD_PORTS:
        return True
    return ip.proto == IPPROTO_ICMPV6 and ip.first and bool(ip.l4) and ip.l4[0] in ICMP6_QUIET


def _ether(frame: bytes) -> tuple[bytes, bytes, int, bytes] | None:
    """(dst MAC, src MAC, ethertype, payload) of an Ethernet frame (VLAN tags skipped)."""
    if len(frame) < 14:
        return None
    kind, off = struct.unpack_from(">H", frame, 12)[0], 14
    while kind in _VLAN_TAGS and len(frame) >= off + 4:
        kind, off = struct.unpack_from(">H", frame, off + 2)[0], off + 4
    return frame[0:6], frame[6:12], kind, frame[off:]


def _arp(payload: bytes) -> dict[str, Any] | None:
    if len(payload) < 28 or payload[4:6] != b"\x06\x04":
        return None  # not Ethernet/IPv4 ARP
    return {"op": struct.unpack_from(">H", payload, 6)[0],
            "src": socket.inet_ntop(socket.AF_INET, payload[14:18]),
            "dst": socket.inet_ntop(socket.AF_INET, payload[24:28])}


def _inner(out: dict[str, Any], frame: bytes) -> None:
    """The inner Ethernet frame of a VXLAN packet, into `out`."""
    eth = _ether(frame)
    if eth is None:
        return
    out["inner_mac_dst"], out["inner_mac_src"] = _mac(eth[0]), _mac(eth[1])
    if eth[2] in (ETH_P_IP, ETH_P_IPV6):
        ip = _ip(eth[3])
        if ip is not None:
            out.update(inner_family=ip.family, inner_src=ip.src, inner_dst=ip.dst,
                       inner_proto=_proto(ip))
    elif eth[2] == ETH_P_ARP:
        arp = _arp(eth[3])
        if arp is not None:
            out.update(inner_src=arp["src"], inner_dst=arp["dst"], inner_proto="arp")


def decode(frame: Any, vxlan_ports: frozenset[int] = VXLAN_PORTS, show_all: bool = False,
           *, ethernet: bool = True) -> dict[str, Any] | None:
    """One captured frame as plain data, or None if it is not shown; pure.

    `frame`: the frame's bytes (anything `bytes()` accepts, a scapy packet too).
    `ethernet` False: the frame is a bare IP packet (a tun-like device).
    The result's `encap` is "vxlan", "none" (plain IP), "arp" or "other"."""
    try:
        raw = bytes(frame)
    except TypeError:
        return None
    if ethernet:
        eth = _ether(raw)
        if eth is None:
            return {"encap": "other", "summary": f"{len(raw)} bytes"} if show_all else None
        kind, payload = eth[2], eth[3]
    else:
        kind, payload = (ETH_P_IPV6 if raw[:1] and raw[0] >> 4 == 6 else ETH_P_IP), raw
    ip = _ip(payload) if kind in (ETH_P_IP, ETH_P_IPV6) else None
    if ip is None:
        if kind == ETH_P_ARP:
            arp = _arp(payload)
            if arp is not None:
                return {"encap": "arp", **arp} if show_all else None
        return ({"encap": "other", "summary": f"ethertype 0x{kind:04x}, {len(raw)} bytes"}
                if show_all else None)
    if not show_all and _quiet(ip):
        return None
    ports = _ports(ip)
    if ip.proto == IPPROTO_UDP and ports is not None and set(ports) & vxlan_ports \
            and len(ip.l4) >= 16:
        vx = ip.l4[8:]
        out: dict[str, Any] = {"encap": "vxlan", "outer_family": ip.family,
                               "outer_src": ip.src, "outer_dst": ip.dst, "port": ports[1],
                               "vni": int.from_bytes(vx[4:7], "big"), "len": ip.length}
        _inner(out, vx[8:])
        return out
    return {"encap": "none", "family": ip.family, "src": ip.src, "dst": ip.dst,
            "proto": _proto(ip), "len": ip.length}


def format_line(d: dict[str, Any], stamp: float) -> str:
    """One decoded frame as a line: `VXLAN` (over IPv4) or `VXLAN6` (over IPv6), `IP`/`IP6`
    for plain packets, `ARP`, `other`."""
    t = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
    if d["encap"] == "vxlan":
        inner = (f"{d.get('inner_src', '?')} > {d.get('inner_dst', '?')} "
                 f"{d.get('inner_proto', '')}").rstrip()
        label = "VXLAN6" if d.get("outer_family") == "ipv6" else "VXLAN"
        return (f"{t} {label} {d['outer_src']} > {d['outer_dst']} udp/{d['port']} "
                f"vni {d['vni']} | inner {inner}")
    if d["encap"] == "none":
        label = "IP6" if d.get("family") == "ipv6" else "IP"
        return f"{t} {label:<5} {d['src']} > {d['dst']} {d['proto']} (not encapsulated)"
    if d["encap"] == "arp":
        return f"{t} ARP   {'who-has' if d['op'] == 1 else 'is-at'} {d['dst']} from {d['src']}"
    return f"{t} other {d['summary']}"


def add_arguments(p: argparse.ArgumentParser, iface: str | None = "eth0") -> None:
    p.add_argument("--iface", default=iface, help="interface to capture on"
                   + (f" ({iface})" if iface else ""))
    p.add_argument("-c", "--count", type=int, default=20, help="stop after N packets (20)")
    p.add_argument("--timeout", type=float, default=30.0, help="stop after S seconds (30)")
    p.add_argument("--port", type=int, action="append", default=[],
                   help="another VXLAN UDP port to decode (8472 and 4789 always are)")
    p.add_argument("--all", action="store_true",
                   help="also etcd traffic, ARP, IPv6 neighbour discovery and the rest")
    p.add_argument("--json", action="store_true", help="one JSON object per packet")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netns_lab.capture")
    add_arguments(p)
    p.add_argument("--label", default="")
    return capture(p.parse_args(argv))


def open_socket(iface: str) -> tuple[socket.socket, bool]:
    """A packet socket bound to `iface` (in the calling thread's namespace), and whether its
    frames carry an Ethernet header."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((iface, 0))
        hatype = sock.getsockname()[3]
    except OSError:
        sock.close()
        raise
    return sock, hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK)


Decoder = Callable[[bytes, bool], "dict[str, Any] | None"]  # (frame, has ethernet header)


def capture(args: argparse.Namespace, netns: str | None = None, *,
            decoder: Decoder | None = None,
            formatter: Callable[[dict[str, Any], float], str] | None = None,
            on_shown: Callable[[dict[str, Any]], None] | None = None,
            closing: Callable[[], str] = lambda: "") -> int:
    """Print decoded frames until -c were shown or --timeout passed; `netns`: the socket is
    opened in that network namespace (a name under /run/netns, or a path). `decoder`,
    `formatter`, `on_shown` and `closing` (text after the count) let another decoder
    (WireGuard's, flanneld/ctl/wgwire.py) reuse the loop."""
    from netlink.netns import call_in_netns

    try:
        sock, ethernet = call_in_netns(netns, lambda: open_socket(args.iface))
    except PermissionError:
        print("capturing needs root (CAP_NET_RAW)", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" in network namespace {netns}" if netns else ""
        print(f"cannot capture on {args.iface!r}{where}: {exc.strerror or exc}; check --iface "
              "(ip link shows the interfaces)", file=sys.stderr)
        return 1
    ports = frozenset(args.port) | VXLAN_PORTS
    if decoder is None:
        def decoder(frame: bytes, ethernet: bool) -> dict[str, Any] | None:
            return decode(frame, ports, args.all, ethernet=ethernet)
    fmt = formatter or format_line
    label = getattr(args, "label", "") or args.iface
    print(f"capturing on {label} ({args.iface}), up to {args.count} packets or "
          f"{args.timeout:g}s", file=sys.stderr, flush=True)
    shown = 0
    deadline = time.monotonic() + args.timeout
    try:
        while shown < args.count and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 0.5))
            try:
                frame, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[0] != args.iface:
                continue  # queued between socket() and bind(), from another interface
            stamp = time.time()
            d = decoder(frame, ethernet)
            if d is None:
                continue
            d["time"] = stamp
            print(json.dumps(d) if args.json else fmt(d, stamp), flush=True)
            if on_shown is not None:
                on_shown(d)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print(f"{shown} packet(s) shown{closing()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
