"""Run a command inside a lab namespace: a host, a pod (host/pod), a router, a segment or etcd.

Example: netns-lab exec h1 -- ip route; netns-lab exec h2/p1 -- ping 10.244.1.2
"""

from __future__ import annotations

import argparse
import os

from netns_lab.lab import Lab, LabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="HOST|POD", help="h1, h1/p1 (or p1 if unique), r1, ...")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="the command and its arguments (default: a shell)")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    _, ns = lab.resolve(args.target)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    try:
        os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])
    except OSError as exc:
        raise LabError(f"cannot run ip netns exec: {exc}") from None
