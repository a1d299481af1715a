"""Decode a host's underlay traffic: VXLAN (outer, VNI, inner), plain IP, or WireGuard's envelope.

Captures inside the host's namespace on its eth0 (or --iface) until -c packets
were shown or --timeout seconds passed, IPv4 and IPv6 alike: VXLAN over IPv4
(flannel.<VNI>) or over IPv6 (flannel-v6.<VNI>, shown as VXLAN6), inner IPv4 or
IPv6. etcd traffic, ARP, IPv6 neighbour discovery and non-IP frames are hidden
unless --all. WireGuard (the wireguard backend) shows as `WG` lines: outer IPs, UDP
to the listen port, message type, indexes and length; the pod packet inside is
ciphertext. The decoder is flannelctl trace's (flanneld/capture.py,
flanneld/ctl/wgwire.py). Try it while `netns-lab ping` runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from netns_lab.lab import Lab, LabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", metavar="HOST", help="a host (or router, etcd member) of the lab")
    p.add_argument("-c", "--count", type=int, default=20, help="stop after N packets (20)")
    p.add_argument("--timeout", type=float, default=30.0, help="stop after S seconds (30)")
    p.add_argument("--iface", default=None, help="interface to capture on (default eth0)")
    p.add_argument("--all", action="store_true",
                   help="also etcd traffic, ARP, IPv6 neighbour discovery and the rest")
    p.add_argument("--json", action="store_true", help="one JSON object per packet")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    kind, _ = lab.resolve(args.host)
    if kind not in ("host", "router", "etcd"):
        raise LabError(f"capture runs on a host, router or etcd member, not a {kind}")
    backend = lab.topology.network.get("Backend", {})
    argv = [sys.executable, "-m", "netns_lab.capture", "--iface", args.iface or "eth0",
            "--label", args.host, "-c", str(args.count), "--timeout", str(args.timeout)]
    wireguard = lab.topology.backend_type.lower() == "wireguard"
    ports = {"ListenPort": "--wg-port", "ListenPortV6": "--wg-port"} if wireguard else {
        "Port": "--port"}
    for key, flag in ports.items():
        port = backend.get(key)
        if isinstance(port, int) and port:
            argv += [flag, str(port)]
    argv += ["--all"] * args.all + ["--json"] * args.json
    enter = lab.enter(args.host)  # a host: its network and mount namespaces
    os.execvp(enter[0], [*enter, *argv])
