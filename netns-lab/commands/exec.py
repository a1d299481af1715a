"""Run a command inside a lab namespace: a host, a pod (host/pod), a router, a segment or etcd.

On a host the command runs as on a node: in the host's network and mount
namespaces (its own /run/flannel, /var/lib/cni, /etc/cni/net.d, ...), with
pyflannel's commands (flannelctl, flanneld, netns-lab) first on PATH. So
`netns-lab exec h1 -- flannelctl status` needs no flags.

Example: netns-lab exec h1 -- ip route; netns-lab exec h2/p1 -- ping 10.244.1.2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from netns_lab.lab import Lab, LabError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="HOST|POD", help="h1, h1/p1 (or p1 if unique), r1, ...")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="the command and its arguments (default: a shell)")


def run(args: argparse.Namespace) -> int:
    lab = Lab.load(args.name)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    try:
        wd = os.getcwd()
    except OSError:
        wd = "/"
    argv = [*lab.enter(args.target, wd=wd), *cmd]
    env = {**os.environ, "PATH": node_path(os.environ.get("PATH", ""))}
    exe = shutil.which(argv[0], path=env["PATH"])
    if exe is None:
        raise LabError(f"{argv[0]} not found (PATH {env['PATH']})")
    try:
        os.execve(exe, argv, env)
    except OSError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc}") from None


def node_path(path: str) -> str:
    """PATH with this installation's bin directory (flannelctl, flanneld, netns-lab) first."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    rest = [p for p in (path or DEFAULT_PATH).split(":") if p and p != bin_dir]
    return ":".join([bin_dir, *rest])
