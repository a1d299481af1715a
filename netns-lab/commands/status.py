"""Show hosts, public IPs, subnets, backend, peers programmed and pods (from etcd and the kernel).

PEERS counts the other hosts' leases this host has programmed in its kernel:
vxlan (route + neighbour + FDB entry), direct (a route via the peer's
underlay address: host-gw or DirectRouting) or wg (the wireguard backend: a peer
with the lease's public key whose allowed IPs hold its subnet, on flannel-wg). Then
each host's first pod pings one pod of every other host: `63/63 (vxlan), 12
unreachable` is a host whose peers are all programmed but 12 of them do not answer.
"""

from __future__ import annotations

import argparse
import json

from netns_lab import status
from netns_lab.lab import Lab


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-ping", action="store_true",
                   help="skip the reachability probe (each host's first pod pings one pod of "
                        "every other host; silent peers show as `N unreachable` in PEERS)")


def run(args: argparse.Namespace) -> int:
    data = status.collect(Lab.load(args.name), probe=not args.no_ping)
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return 0
