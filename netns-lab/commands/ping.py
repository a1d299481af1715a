"""Ping between every pair of pods, in each IP family the pods have, and print a matrix per
family; exit 1 if any pair fails."""

from __future__ import annotations

import argparse
import json

from netns_lab import ping
from netns_lab.lab import Lab, LabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="src", metavar="POD",
                   help="only from this pod (host/pod), to all others")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per ping (default 2)")
    p.add_argument("--attempts", type=int, default=2,
                   help="pings per pair before it counts as failed (default 2)")
    p.add_argument("--family", type=int, choices=(4, 6), action="append",
                   help="only this IP version (default: every family the pods have)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    pods = [p for p in lab.all_pods() if p.addresses]
    if len(pods) < 2:
        raise LabError(f"lab {args.name!r} has {len(pods)} pod(s); add some with "
                       "`netns-lab pod add HOST NAME`")
    sources = None
    if args.src:
        sources = [p for p in pods if args.src in (ping.label(p), p.name)]
        if not sources:
            raise LabError(f"--from {args.src!r}: no such pod; pods: "
                           + ", ".join(ping.label(p) for p in pods))
    results = ping.ping_all(lab, args.timeout, args.attempts, sources, args.family)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(ping.render(lab, results))
    return 0 if all(r.ok for r in results) else 1
