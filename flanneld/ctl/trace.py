"""Decode this node's underlay traffic: VXLAN outer addresses, VNI and the inner packet.

Shows what flannel's data plane puts on the wire, one line per packet (or
JSON with --json): `VXLAN 192.168.100.10 > 192.168.100.11 udp/8472 vni 1 |
inner 10.244.50.2 > 10.244.23.3 icmp echo-request`, or plain IP for host-gw and
DirectRouting. etcd's traffic and non-IPv4 frames are hidden unless --all.
Needs scapy (`pip install 'pyflannel[lab]'`) and root. The decoder is the one
`netns-lab capture` uses (flanneld/capture.py).

  flannelctl trace --iface eth0 -c 10
  flannelctl trace --netns pfl-lab-h1 --timeout 5 --json
"""

from __future__ import annotations

import argparse
import os

from flanneld import capture


def add_arguments(parser: argparse.ArgumentParser) -> None:
    first = os.environ.get("FLANNELD_IFACE", "").split(",")[0].strip()
    capture.add_arguments(parser, first or "eth0")
    parser.add_argument("--netns", help="capture inside this network namespace (a name under "
                        "/run/netns, or a path)")


def run(args: argparse.Namespace) -> int:
    if args.netns:
        from netlink.rtnl import call_in_netns

        # The packet socket is opened in a thread switched into the namespace.
        return call_in_netns(args.netns, lambda: capture.capture(args))
    return capture.capture(args)
