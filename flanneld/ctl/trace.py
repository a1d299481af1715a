"""Decode this node's underlay traffic: VXLAN outer addresses, VNI and the inner packet.

Shows what flannel's data plane puts on the wire, one line per packet (or
JSON with --json), for both families:

  VXLAN 192.168.100.10 > 192.168.100.11 udp/8472 vni 1 | inner 10.244.50.2 > 10.244.23.3
    icmp echo-request
  VXLAN6 fd7a::10 > fd7a::11 udp/8472 vni 1 | inner fc00:7:0:5::2 > fc00:7:0:9::2
    icmp6 echo-request

VXLAN6 is VXLAN over an IPv6 underlay (flannel-v6.<VNI>); plain `IP`/`IP6` lines
are host-gw and DirectRouting. The wireguard backend's traffic is UDP to the
listen port (51820, 51821 for IPv6; --wg-port for others) and nothing else; its
`WG`/`WG6` lines show the message type, indexes and length, and the last line
says whether anything but WireGuard was seen (pod addresses are ciphertext):

  WG    192.168.100.10 > 192.168.100.11 udp 51820 > 51820 data receiver 0x1a2b3c4d
    len 128 | inner: encrypted

etcd's traffic, ARP, IPv6 neighbour discovery and non-IP frames are hidden unless
--all. Needs root (a packet socket); the
decoder is the one `netns-lab capture` uses (flanneld/capture.py, with WireGuard
from flanneld/ctl/wgwire.py).

  flannelctl trace --iface eth0 -c 10
  flannelctl trace --netns pfl-lab-h1 --timeout 5 --json
"""

from __future__ import annotations

import argparse
import os

from flanneld.ctl import wgwire


def add_arguments(parser: argparse.ArgumentParser) -> None:
    first = os.environ.get("FLANNELD_IFACE", "").split(",")[0].strip()
    wgwire.add_arguments(parser, first or "eth0")
    parser.add_argument("--netns", help="capture inside this network namespace (a name under "
                        "/run/netns, or a path)")


def run(args: argparse.Namespace) -> int:
    # the packet socket is opened inside --netns; reading it needs no namespace switch
    return wgwire.run(args, netns=args.netns)
