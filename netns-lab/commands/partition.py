"""Chaos: cut two hosts apart (nftables drop rules inside the segment namespaces), or heal.

`partition h1 h2` drops all traffic between them, underlay and overlay alike;
either may also be an etcd member. `partition --heal h1 h2` removes that cut,
`partition --heal` all of them, `partition --list` shows them.
"""

from __future__ import annotations

import argparse

from netns_lab import chaos
from netns_lab.lab import Lab, LabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", nargs="?", metavar="HOST")
    p.add_argument("b", nargs="?", metavar="HOST")
    p.add_argument("--heal", action="store_true", help="remove the partition (all if no hosts)")
    p.add_argument("--list", action="store_true", help="show the current partitions")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for a, b in Lab.load(args.name).partitions:
            print(f"{a} <-> {b}")
        return 0
    if (args.a is None) != (args.b is None) or (args.a is None and not args.heal):
        raise LabError("name two hosts, e.g. `partition h1 h2` (or --heal, --list)")
    with Lab.load(args.name).locked() as lab:
        if args.heal:
            n = chaos.heal(lab, args.a, args.b)
            print(f"healed {n} partition(s)")
        else:
            chaos.partition(lab, args.a, args.b)
            print(f"partitioned {args.a} <-> {args.b}")
    return 0
