"""List the labs on this machine, with their namespaces and whether their state is intact."""

from __future__ import annotations

import argparse

from netns_lab import build
from netns_lab.lab import Lab, list_labs


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p


def run(args: argparse.Namespace) -> int:
    del args
    labs = list_labs()
    if not labs:
        print("no labs")
    for name in labs:
        left = build.leftovers(name)
        state = "up" if Lab.exists(name) else "leftovers (run `down`)"
        print(f"{name}\t{state}\t{len(left['namespaces'])} namespace(s)")
    return 0
