"""Remove a lab: every process, namespace and file it made, even after a crash or kill.

Works from the lab's name alone (pidfiles and the `pfl-<name>-` prefix), so it
also cleans up a lab whose `up` was interrupted. Other labs are not touched. The
host-wide kernel settings `up` raised for the lab are written back when no other lab
still holds them, unless someone changed them since (netns_lab.kernel).
"""

from __future__ import annotations

import argparse

from netns_lab import build
from netns_lab.lab import lab_lock


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p


def run(args: argparse.Namespace) -> int:
    with lab_lock(args.name):
        n_ns, n_procs, restores = build.down(args.name)
    left = build.leftovers(args.name)
    if n_ns == 0 and n_procs == 0:
        print(f"lab {args.name!r}: nothing to remove")
    else:
        print(f"lab {args.name!r} removed: {n_ns} namespace(s), {n_procs} process(es)")
    for r in restores:
        print(f"  {r}")
    remaining = {k: v for k, v in left.items() if v}
    if remaining:
        print(f"still left: {remaining}")
        return 1
    return 0
