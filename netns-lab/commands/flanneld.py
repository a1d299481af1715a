"""Chaos: kill, start or restart one host's flanneld.

`kill` sends SIGTERM (or --signal KILL) and waits for the exit; the kernel
state it programmed stays, so pods keep talking. `start` waits for /readyz.
"""

from __future__ import annotations

import argparse
import signal

from netns_lab import chaos
from netns_lab.lab import Lab


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("kill", "start", "restart"))
    p.add_argument("host", metavar="HOST")
    p.add_argument("--signal", default="TERM", choices=("TERM", "KILL", "INT"),
                   help="signal for kill/restart (default TERM)")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    sig = signal.Signals[f"SIG{args.signal}"]
    if args.action == "kill":
        done = chaos.flanneld_kill(lab, args.host, sig)
        print(f"flanneld on {args.host}: {'killed (' + sig.name + ')' if done else 'not running'}")
    elif args.action == "start":
        done = chaos.flanneld_start(lab, args.host)
        print(f"flanneld on {args.host}: {'started, ready' if done else 'already running'}")
    else:
        chaos.flanneld_restart(lab, args.host, sig)
        print(f"flanneld on {args.host}: restarted, ready")
    return 0
