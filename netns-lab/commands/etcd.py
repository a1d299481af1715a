"""Chaos: stop or start one etcd member (in its own namespace on the underlay)."""

from __future__ import annotations

import argparse
import signal

from netns_lab import chaos
from netns_lab.lab import Lab


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("stop", "start"))
    p.add_argument("member", metavar="MEMBER", help="e.g. etcd (single) or etcd1..etcd3")
    p.add_argument("--signal", default="TERM", choices=("TERM", "KILL"),
                   help="signal for stop (default TERM)")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    if args.action == "stop":
        done = chaos.etcd_stop(lab, args.member, signal.Signals[f"SIG{args.signal}"])
        print(f"etcd member {args.member}: {'stopped' if done else 'not running'}")
    else:
        done = chaos.etcd_start(lab, args.member)
        print(f"etcd member {args.member}: {'started' if done else 'already running'}")
    return 0
