"""Add or delete a pod on a host, through the real CNI plugin, as a runtime would.

`pod add h1 web` makes namespace pfl-<lab>-h1-web and runs CNI ADD (the host's
kube-flannel conflist: flannel, delegating to bridge + host-local); `pod del`
runs CNI DEL and removes the namespace. `pod list` shows the pods.
"""

from __future__ import annotations

import argparse

from netns_lab import build
from netns_lab.lab import Lab, LabError
from netns_lab.topology import NAME_RE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("add", "del", "list"))
    p.add_argument("host", nargs="?", metavar="HOST")
    p.add_argument("pod", nargs="?", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        lab = Lab.load(args.name)
        for pod in lab.all_pods():
            print(f"{pod.host}/{pod.name}\t{' '.join(pod.addresses)}\t"
                  f"{lab.plan.pod_ns(pod.host, pod.name)}")
        return 0
    if not args.host or not args.pod:
        raise LabError(f"pod {args.action} needs HOST and NAME, e.g. `pod {args.action} h1 web`")
    if not NAME_RE.fullmatch(args.pod):
        raise LabError(f"pod name {args.pod!r}: use 1-12 lowercase letters and digits")
    with Lab.load(args.name).locked() as lab:
        if args.host not in lab.topology.host_names:
            _no_host(lab, args.host)
        pods = lab.pods.setdefault(args.host, {})
        if args.action == "add":
            if args.pod in pods:
                raise LabError(f"{args.host}/{args.pod} exists already "
                               f"({' '.join(pods[args.pod].addresses)})")
            pod = build.add_pod(lab, args.host, args.pod)
            pods[args.pod] = pod
            print(f"{args.host}/{args.pod} {' '.join(pod.addresses)} "
                  f"(netns {lab.plan.pod_ns(args.host, args.pod)})")
        else:
            if args.pod not in pods:
                raise LabError(f"{args.host} has no pod {args.pod!r} (pods: "
                               f"{', '.join(pods) or 'none'})")
            build.del_pod(lab, args.host, args.pod)
            del pods[args.pod]
            print(f"{args.host}/{args.pod} deleted")
    return 0


def _no_host(lab: Lab, host: str) -> None:
    raise LabError(f"no host {host!r} in lab {lab.name!r} (hosts: "
                   f"{', '.join(lab.topology.host_names)})")
