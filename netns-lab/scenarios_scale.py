"""The chaos scenarios on scale and exhaustion: 20 hosts joining at once, and a
network with no subnet left (`netns_lab.scenarios` lists every family).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from functools import partial
from typing import Any

from netns_lab import chaos, observe
from netns_lab.lab import Lab
from netns_lab.measure import (
    Clock,
    all_ready,
    kernel_peer_set,
    leases_by_host,
    log_of,
    readyz,
)
from netns_lab.netns import wait_for
from netns_lab.scenario_kit import Run, lab_topology, scenario
from netns_lab.scenarios_node import host_subnets, lease_key

from core.lease import LeaseAttrs, encode_attrs

# -- scale and exhaustion -----------------------------------------------------------------------

JOIN_HOSTS = 20


@scenario("join-20", f"{JOIN_HOSTS} hosts start at once (pods on h1 and h{JOIN_HOSTS} only)",
          f"{JOIN_HOSTS} distinct subnets; every host programs all {JOIN_HOSTS - 1} peers",
          lab_topology(hosts=JOIN_HOSTS, pods_on=("h1", f"h{JOIN_HOSTS}")))
def join_20(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    last = f"h{JOIN_HOSTS}"
    f["all_ready_s"] = r.up_steps.get("flanneld")
    f["recovery_s"] = round(r.up_steps.get("flanneld", 0) + r.up_steps.get("peers", 0), 3)
    with r.pinging(("h1/p1", f"{last}/p1")):
        subnets = host_subnets(lab)
        peers = {h: kernel_peer_set(lab, h) for h in lab.topology.host_names}
    f["distinct_subnets"] = len(set(subnets.values()))
    f["min_peers"] = min(len(p) for p in peers.values())
    f["data_lost"] = 0
    r.check(f"{JOIN_HOSTS} distinct subnets", f["distinct_subnets"] == JOIN_HOSTS,
            f["distinct_subnets"])
    r.check(f"every host routes to {JOIN_HOSTS - 1} peers",
            f["min_peers"] == JOIN_HOSTS - 1, f"fewest: {f['min_peers']}")
    r.check("every peer fully programmed (route, neighbour, FDB)", observe.converged(lab))
    r.check(f"h1/p1 -> {last}/p1: no packet lost", f["packets_lost"] == 0)
    return f


FULL_NET = {"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.0", "SubnetMax": "10.244.5.0",
            "Backend": {"Type": "vxlan"}}


@scenario("network-full", "5 subnets: h1-h3 hold 3, two are reserved for other nodes; h4 and "
          "h5 (re)join with no subnet left, then one reservation is released",
          "the extra hosts say `out of subnets` on /readyz and in the log and back off; the "
          "others are unaffected (0 packets lost); a freed subnet is taken",
          lab_topology(hosts=5, pods_on=("h1", "h2"), network=FULL_NET))
def network_full(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    extra, others = ["h4", "h5"], ["h1", "h2", "h3"]
    subnets = host_subnets(lab)
    reserved: list[str] = []
    with r.pinging(("h1/p1", "h2/p1"), ("h2/p1", "h1/p1")):
        for i, h in enumerate(extra):
            chaos.flanneld_kill(lab, h)
            key = lease_key(lab, subnets[h])
            observe.etcdctl(lab, "del", key)
            (lab.host_dir(h) / "subnet.env").unlink()  # they join as new nodes
            # another node's reservation (no etcd lease: it never expires)
            value = encode_attrs(LeaseAttrs(lab.plan.ip_of(h) + 200 - 10 - i, "vxlan",
                                            {"VNI": 1, "VtepMAC": f"0e:5c:00:00:02:{i:02x}"}))
            observe.etcdctl(lab, "put", key, value.decode())
            reserved.append(key)
        clock = Clock()
        for h in extra:
            chaos.flanneld_start(lab, h, wait=False)
        for h in extra:
            wait_for(partial(_says_full, lab, h), 30,
                     what=f"{h} to say `out of subnets` on /readyz")
        f["reported_s"] = clock.since("start")
        f["readyz"] = readyz(lab, "h4")[1].strip()
        wait_for(lambda: all(len(_attempts(lab, h)) >= 3 for h in extra), 30,
                 what="three attempts on each extra host")
        f["retry_gaps_s"] = [round(b - a, 2) for a, b in zip(
            _attempts(lab, "h4"), _attempts(lab, "h4")[1:], strict=False)][:4]
        others_ready = all_ready(lab, others)
        no_env = not any((lab.host_dir(h) / "subnet.env").exists() for h in extra)
        clock.mark("freed")
        observe.etcdctl(lab, "del", reserved[0])
        wait_for(lambda: sum(h in leases_by_host(lab) for h in extra) == 1, 60, interval=0.1,
                 what="one extra host to take the freed subnet")
        f["recovery_s"] = clock.since("freed")
    moved = {h for h in others if host_subnets(lab).get(h) != subnets[h]}
    f["data_lost"] = len(moved)
    gaps = f["retry_gaps_s"]
    r.check("the extra hosts say `out of subnets` on /readyz", True, f["readyz"][:90])
    r.check("... and in their log", all("out of subnets" in log_of(lab, h) for h in extra))
    r.check("... and back off (growing gaps between attempts)",
            len(gaps) >= 2 and all(b > a for a, b in itertools.pairwise(gaps)),
            gaps)
    r.check("no subnet.env on a host without a subnet", no_env)
    r.check("the other hosts stay ready and keep their subnets", others_ready and not moved)
    r.check("no packet lost between the other hosts", f["packets_lost"] == 0)
    r.check("a freed subnet is taken", True, f"{f['recovery_s']:.2f}s")
    return f


def _says_full(lab: Lab, host: str) -> bool:
    return "out of subnets" in readyz(lab, host)[1]


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _attempts(lab: Lab, host: str) -> list[float]:
    """Times of the `out of subnets` warnings in a host's flanneld log."""
    out = []
    for line in log_of(lab, host).splitlines():
        m = _STAMP.match(line)
        if m and "out of subnets" in line and "readiness" not in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out
