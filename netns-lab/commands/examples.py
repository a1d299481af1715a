"""List the shipped example topologies (use a name as `netns-lab up NAME`)."""

from __future__ import annotations

import argparse

from netns_lab import topology

NEEDS_ROOT = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show", metavar="NAME", help="print one example's YAML")


def run(args: argparse.Namespace) -> int:
    if args.show:
        path = topology.examples_dir() / f"{args.show}.yaml"
        if not path.exists():
            print(f"no example {args.show!r}; examples: {', '.join(topology.example_names())}")
            return 2
        print(path.read_text(), end="")
        return 0
    for name in topology.example_names():
        t = topology.load(name)
        print(f"{name:15} {t.description}")
    print(f"\n(files in {topology.examples_dir()})")
    return 0
