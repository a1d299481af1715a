"""Show hosts, public IPs, subnets, backend, peers programmed and pods (from etcd and the kernel).

PEERS counts the other hosts' leases this host has programmed in its kernel:
vxlan (route + neighbour + FDB entry), direct (a route via the peer's
underlay address: host-gw or DirectRouting) or wg (the wireguard backend: a peer
with the lease's public key whose allowed IPs hold its subnet, on flannel-wg). Then
each host's first pod pings one pod of every other host (of the next 64 round the
ring in a bigger lab, so each host is pinged by 64 too; --ping-all for every pair):
`63/63 (vxlan), 12 unreachable` is a host whose peers are all programmed but 12 of them
do not answer (`249/249 (vxlan), 3 of 64 probed unreachable` when sampled).
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
                        "every other host, or of 64 with more: silent peers show as `N "
                        "unreachable` in PEERS)")
    p.add_argument("--ping-all", action="store_true",
                   help="probe every pair of hosts also beyond 65 hosts (250: 62,250 pings)")


def run(args: argparse.Namespace) -> int:
    data = status.collect(Lab.load(args.name), probe=not args.no_ping, probe_all=args.ping_all)
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return 0
