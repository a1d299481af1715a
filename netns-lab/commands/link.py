"""Chaos: pull (down) or plug back (up) the underlay cable of a host, etcd member or router leg.

The port on the segment's bridge is set down, so the other end loses carrier as
with a real cable. A router has one leg per segment: name the segment.
"""

from __future__ import annotations

import argparse

from netns_lab import chaos
from netns_lab.lab import Lab


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("down", "up"))
    p.add_argument("owner", metavar="NAME", help="host, etcd member or router")
    p.add_argument("segment", nargs="?", metavar="SEGMENT", help="for a router: which leg")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    link = chaos.set_link(lab, args.owner, args.action == "up", args.segment)
    print(f"{args.owner} on {link.segment} ({' '.join(link.cidrs)}): link {args.action}")
    return 0
