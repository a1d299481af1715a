"""Decode a node's underlay traffic with scapy: outer addresses, VNI, inner addresses.

One decoder for `flannelctl trace` (on a node, or `--netns`) and `netns-lab
capture h1` (which runs `python -m netns_lab.capture`, i.e. this, inside the
lab host's namespace). Each packet becomes one line (or one JSON object with
--json): VXLAN with its outer IPs, UDP port, VNI and the inner frame's IPs, or
plain IP (host-gw, DirectRouting). etcd's own traffic and non-IPv4 frames are
left out unless --all. scapy is imported only when capturing (the `lab` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

VXLAN_PORTS = frozenset({8472, 4789})
ETCD_PORTS = frozenset({2379, 2380})
ICMP_TYPES = {0: "echo-reply", 8: "echo-request", 3: "unreachable", 11: "time-exceeded"}


def _proto(ip: Any) -> str:
    from scapy.layers.inet import ICMP, TCP, UDP

    if ICMP in ip:
        return f"icmp {ICMP_TYPES.get(int(ip[ICMP].type), ip[ICMP].type)}"
    if TCP in ip:
        return f"tcp {ip[TCP].sport} > {ip[TCP].dport}"
    if UDP in ip:
        return f"udp {ip[UDP].sport} > {ip[UDP].dport}"
    return f"proto {ip.proto}"


def decode(pkt: Any, vxlan_ports: frozenset[int] = VXLAN_PORTS,
           show_all: bool = False) -> dict[str, Any] | None:
    """One captured frame as plain data, or None if it is not shown."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.layers.vxlan import VXLAN

    if IP not in pkt:
        if show_all and ARP in pkt:
            arp = pkt[ARP]
            return {"encap": "arp", "op": int(arp.op), "src": arp.psrc, "dst": arp.pdst}
        return {"encap": "other", "summary": pkt.summary()} if show_all else None
    ip = pkt[IP]
    if TCP in ip and not show_all and ({ip[TCP].sport, ip[TCP].dport} & ETCD_PORTS):
        return None
    if UDP in ip and (ip[UDP].dport in vxlan_ports or ip[UDP].sport in vxlan_ports):
        udp = ip[UDP]
        vx = udp[VXLAN] if VXLAN in udp else VXLAN(bytes(udp.payload))
        out: dict[str, Any] = {"encap": "vxlan", "outer_src": ip.src, "outer_dst": ip.dst,
                               "port": int(udp.dport), "vni": int(vx.vni), "len": len(ip)}
        inner = vx.payload
        if Ether in inner:
            out["inner_mac_src"], out["inner_mac_dst"] = inner[Ether].src, inner[Ether].dst
        if IP in inner:
            out.update(inner_src=inner[IP].src, inner_dst=inner[IP].dst,
                       inner_proto=_proto(inner[IP]))
        elif ARP in inner:
            out.update(inner_src=inner[ARP].psrc, inner_dst=inner[ARP].pdst, inner_proto="arp")
        return out
    return {"encap": "none", "src": ip.src, "dst": ip.dst, "proto": _proto(ip), "len": len(ip)}


def format_line(d: dict[str, Any], stamp: float) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
    if d["encap"] == "vxlan":
        inner = (f"{d.get('inner_src', '?')} > {d.get('inner_dst', '?')} "
                 f"{d.get('inner_proto', '')}").rstrip()
        return (f"{t} VXLAN {d['outer_src']} > {d['outer_dst']} udp/{d['port']} "
                f"vni {d['vni']} | inner {inner}")
    if d["encap"] == "none":
        return f"{t} IP    {d['src']} > {d['dst']} {d['proto']} (not encapsulated)"
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
    p.add_argument("--all", action="store_true", help="also etcd traffic, ARP and the rest")
    p.add_argument("--json", action="store_true", help="one JSON object per packet")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netns_lab.capture")
    add_arguments(p)
    p.add_argument("--label", default="")
    return capture(p.parse_args(argv))


def capture(args: argparse.Namespace) -> int:
    """Sniff and print until -c packets were shown or --timeout passed (scapy needed)."""
    try:
        import scapy
    except ImportError:
        print("capturing needs scapy: pip install 'pyflannel[lab]' (or scapy)", file=sys.stderr)
        return 1
    # The layers register Ether for ARPHRD_ETHER and VXLAN for its ports: load them first.
    import scapy.layers.inet
    import scapy.layers.l2
    import scapy.layers.vxlan  # noqa: F401
    from scapy.sendrecv import sniff

    ports = frozenset(args.port) | VXLAN_PORTS
    shown = 0

    def keep(pkt: Any) -> bool:
        d = decode(pkt, ports, args.all)
        if d is None:
            return False
        d["time"] = float(pkt.time)
        line = json.dumps(d) if args.json else format_line(d, float(pkt.time))
        print(line, flush=True)
        return True

    def started() -> None:
        label = getattr(args, "label", "") or args.iface
        print(f"capturing on {label} ({args.iface}), up to {args.count} "
              f"packets or {args.timeout:g}s", file=sys.stderr, flush=True)

    packets = sniff(iface=args.iface, lfilter=keep, count=args.count, timeout=args.timeout,
                    store=True, started_callback=started)
    shown = len(packets)
    print(f"{shown} packet(s) shown", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
