"""Bring a lab up: namespaces, underlay, etcd, flanneld on every host, pods via CNI.

FILE is a topology YAML file or the name of a shipped example (`netns-lab
examples` lists them); without it, the default lab: 3 hosts, vxlan, 2 pods each.
With --demo (what `./dev.sh lab` runs), replace a lab of the same name if one
is up, then print the status table, the full ping matrix and how to explore.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from netns_lab import build, kernel, memory, ping, status, topology
from netns_lab.lab import Lab, LabError, lab_lock
from netns_lab.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="topology YAML file or example name (default: the built-in default)")
    p.add_argument("--demo", action="store_true",
                   help="then show the status table and the ping matrix, and how to explore")
    p.add_argument("--replace", action="store_true",
                   help="take down a lab of the same name first (implied by --demo)")
    p.add_argument("--keep", action="store_true",
                   help="on failure, leave what was built for inspection (default: remove it)")
    p.add_argument("--no-kernel-sizing", action="store_true",
                   help="do not raise host-wide kernel settings the lab needs (the neighbour "
                        "tables all namespaces share); refuse, naming each, if they are too "
                        "low. By default `up` raises them, says so, and `down` restores them")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress display (a failure, and any host-wide change, is still "
                        "printed, on stderr)")


def run(args: argparse.Namespace) -> int:
    topo = topology.load(args.file)
    name = args.name
    progress = Progress(sys.stdout, quiet=args.quiet)
    with lab_lock(name):
        if Lab.exists(name) or build.leftovers(name)["namespaces"]:
            if not (args.replace or args.demo):
                raise LabError(f"lab {name!r} is already up: `netns-lab down --name {name}` "
                               "first, add --replace, or pick another --name")
            progress.say(f"netns-lab: replacing the lab {name!r} that is up")
            build.down(name)
        lab = Lab.new(name, topo, args.file or "default")
        progress.say(f"netns-lab: bringing up lab {name!r}: {topo.description or args.file}")
        start = time.monotonic()
        try:
            build.up(lab, progress, kernel_sizing=not args.no_kernel_sizing)
        except BaseException as exc:
            restores = [] if args.keep else build.down(name)[2]
            report_failure(exc, lab, args.keep, restores, progress.stream, args.quiet)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return 1
    took = time.monotonic() - start
    progress.say(f"lab {name!r} up in {took:.1f}s")
    if not args.quiet:
        progress.say(memory.render(memory.collect(lab)))
    if not args.demo:
        return 0
    print()
    print(status.render(status.collect(lab)))
    print()
    results = ping.ping_all(lab)
    print(ping.render(lab, results, progress.ok, progress.bad))
    print()
    print(explore_hints(lab))
    sys.stdout.flush()
    return 0 if all(r.ok for r in results) else 1


def failure_lines(exc: BaseException, lab: Lab, kept: bool,
                  restores: list[kernel.Restore]) -> list[str]:
    """What `up` says when the bring-up failed: why, and what became of what it built."""
    why = str(exc) or type(exc).__name__
    lines = [f"netns-lab: up failed: {why}"]
    if kept:
        lines.append(f"kept for inspection: logs in {lab.state_dir}; "
                     f"`netns-lab down --name {lab.name}` removes it")
    else:
        lines.append("removed what was built (use --keep to inspect it instead)")
        lines += [f"  {r}" for r in restores]
    return lines


def report_failure(exc: BaseException, lab: Lab, kept: bool, restores: list[kernel.Restore],
                   stream: TextIO, quiet: bool) -> None:
    """The failure, on the progress stream; with -q (no progress) on stderr: a quiet `up`
    that failed must still say why."""
    out = sys.stderr if quiet else stream
    for line in failure_lines(exc, lab, kept, restores):
        print(line, file=out, flush=True)


def explore_hints(lab: Lab) -> str:
    cmd = "netns-lab" if lab.name == "lab" else f"netns-lab --name {lab.name}"
    hosts = lab.topology.host_names
    h1, h2 = hosts[0], hosts[-1]
    pod = next((ping.label(p) for p in lab.all_pods()), f"{h1}/p1")
    hints = [
        ("status", "hosts, leases, peers programmed, pods"),
        ("ping", "the pod-to-pod matrix again"),
        (f"capture {h1} -c 10", f"decode {h1}'s underlay (run `ping` meanwhile): outer IPs, "
                                "VNI, inner IPs"),
        (f"exec {h1} -- ip route", f"any command in a host, or a pod ({pod})"),
        (f"pod add {h1} web", "one more pod, through the CNI plugin"),
        (f"flanneld restart {h2}", "chaos; also: etcd stop|start, link down|up, partition"),
    ]
    width = max(len(c) for c, _ in hints) + len(cmd) + 3
    lines = ["Explore:"] + [f"  {cmd} {c}".ljust(width) + f"  {d}" for c, d in hints]
    lines += ["Other topologies: netns-lab examples; e.g. netns-lab up vxlan-routed --name l3",
              "Tear down:", f"  {cmd} down"]
    return "\n".join(lines)
