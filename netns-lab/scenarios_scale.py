"""The chaos scenarios on scale and exhaustion: 20 hosts joining at once, a network with
no subnet left, and the scale ones (`scale=True`, 250 hosts each, run by name or with
`--all --scale`): 250 hosts starting at once, every flanneld restarted under a ping,
the etcd leader killed under 250 watchers (`netns_lab.scenarios` lists every family).
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from datetime import datetime
from functools import partial
from typing import Any

from netns_lab import build, chaos, memory, observe
from netns_lab.lab import Lab
from netns_lab.measure import (
    Clock,
    ProbeLease,
    all_ready,
    entries_changed,
    free_subnet,
    kernel_peer_set,
    leases_by_host,
    log_of,
    metric,
    peer_entries,
    readyz,
)
from netns_lab.netns import kill_pids, run, wait_for
from netns_lab.scenario_kit import Run, lab_topology, scenario
from netns_lab.scenarios_etcd import _leader
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


# -- at scale: 250 hosts ----------------------------------------------------------------------

SCALE = 250
SCALE_UP_GOAL_S = 90.0  # up, converged and the data plane verified
SCALE_PSS_GOAL_MB = 30.0  # per host: flanneld + its mount-namespace holder
EVERY_HOST = tuple(f"h{i}" for i in range(1, SCALE + 1))
# pings across the segment: first to last, both ways, the middle, and two far apart
SCALE_PINGS = (("h1/p1", f"h{SCALE}/p1"), (f"h{SCALE}/p1", "h1/p1"),
               (f"h{SCALE // 2}/p1", "h2/p1"), (f"h{SCALE // 4}/p1", f"h{3 * SCALE // 4}/p1"))


def scale_topology(etcd_members: int = 1) -> dict[str, Any]:
    """250 hosts on one segment, one pod each, vxlan, the lab's resync interval (2 s)."""
    topo = lab_topology(hosts=SCALE, pods_on=EVERY_HOST, resync=2, etcd_members=etcd_members)
    topo["description"] = f"{SCALE} hosts, vxlan, one pod each, {etcd_members} etcd member(s)"
    return topo


def wait_everywhere(lab: Lab, ok: Any, what: str, hosts: list[str] | None = None,
                    timeout: float | None = None) -> float:
    """Wait until `ok(host)` holds on every host, asking only those not yet done; the
    seconds it took."""
    hosts = list(hosts or lab.topology.host_names)
    timeout = timeout or build.scaled_timeout(30, len(hosts))
    clock = Clock()
    pending = hosts
    while True:
        done = observe.parallel(ok, pending)
        pending = [h for h, d in zip(pending, done, strict=True) if not d]
        if not pending:
            return clock.since("start")
        if clock.since("start") > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} on "
                               f"{len(pending)} host(s), e.g. {', '.join(pending[:5])}")
        time.sleep(build.poll_interval(len(pending)))


def _has_route(lab: Lab, host: str, subnet: str) -> bool:
    out = run(["ip", "-n", lab.ns(host), "route", "show", "exact", subnet], check=False)
    return bool(out.stdout.strip())


def scale_probe(lab: Lab, n: int = 1) -> ProbeLease:
    """A probe peer on an address no lab namespace has (a full /24 leaves few: the default
    probe's .253 is a host's there)."""
    seg = lab.topology.segments[0].subnet
    assert seg is not None
    used = set(lab.plan.owner_of_address)
    free = [a for a in reversed(list(seg.hosts())) if a not in used]
    if len(free) < n:
        raise RuntimeError(f"no free address left on {seg} for a probe lease")
    return ProbeLease(lab, free_subnet(lab, observe.read_leases(lab)), free[n - 1],
                      f"0e:5c:00:00:00:{n:02x}")


def scale_watch_roundtrip(lab: Lab, n: int = 1) -> tuple[float, float]:
    """A probe lease put, then deleted: the seconds until every host routes to it, and
    until every host dropped the route (each flanneld's watch is live)."""
    probe = scale_probe(lab, n)
    subnet = str(probe.subnet)
    clock = Clock()
    probe.put()
    try:
        wait_everywhere(lab, lambda h: _has_route(lab, h, subnet),
                        f"the probe lease {subnet} to be routed")
        there = clock.since("start")
    finally:
        probe.delete()
    clock.mark("deleted")
    wait_everywhere(lab, lambda h: not _has_route(lab, h, subnet),
                    f"the probe lease {subnet} to be gone")
    return there, clock.since("deleted")


def _watch_restarts(lab: Lab) -> int:
    return int(sum(observe.parallel(
        lambda h: metric(lab, h, "flanneld_etcd_watch_restarts_total"),
        lab.topology.host_names)))


@scenario("join-250", f"{SCALE} hosts start at once, one pod each",
          f"{SCALE} distinct subnets; every host programs all {SCALE - 1} peers; a ping sample "
          f"with every host as source and target answers; up, converged and verified in "
          f"< {SCALE_UP_GOAL_S:.0f} s; < {SCALE_PSS_GOAL_MB:.0f} MB (PSS) per host",
          scale_topology(), scale=True)
def join_250(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    steps = r.up_steps
    f["up_steps_s"] = dict(steps)
    f["all_ready_s"] = steps.get("flanneld")
    f["recovery_s"] = round(steps.get("flanneld", 0) + steps.get("peers", 0), 3)
    f["up_and_verified_s"] = round(sum(steps.values()), 2)
    with r.pinging(*SCALE_PINGS):
        subnets = host_subnets(lab)
        peers = dict(zip(lab.topology.host_names, observe.parallel(
            lambda h: kernel_peer_set(lab, h), lab.topology.host_names), strict=True))
        converged = observe.converged(lab)
        mem = memory.collect(lab)
    f["distinct_subnets"] = len(set(subnets.values()))
    f["min_peers"] = min(len(p) for p in peers.values())
    f["memory_per_host_mb"] = {"rss": round(mem["rss_kb_median"] / 1024, 1),
                               "pss": round(mem["pss_kb_median"] / 1024, 1),
                               "flanneld_rss": round(mem["flanneld_rss_kb_median"] / 1024, 1),
                               "flanneld_pss": round(mem["flanneld_pss_kb_median"] / 1024, 1)}
    f["data_lost"] = 0
    pss = f["memory_per_host_mb"]["pss"]
    r.check(f"{SCALE} distinct subnets", f["distinct_subnets"] == SCALE, f["distinct_subnets"])
    r.check(f"every host routes to {SCALE - 1} peers", f["min_peers"] == SCALE - 1,
            f"fewest: {f['min_peers']}")
    r.check("every peer fully programmed (route, neighbour, FDB)", converged)
    r.check("the ping sample answered (up's data plane step)", "data plane" in steps)
    r.check(f"up, converged and verified in < {SCALE_UP_GOAL_S:.0f} s",
            f["up_and_verified_s"] < SCALE_UP_GOAL_S, f"{f['up_and_verified_s']:.1f}s")
    r.check(f"< {SCALE_PSS_GOAL_MB:.0f} MB per host (PSS)", pss < SCALE_PSS_GOAL_MB,
            f"PSS {pss} MB, RSS {f['memory_per_host_mb']['rss']} MB")
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    return f


@scenario("flanneld-restart-all-250", f"every flanneld of {SCALE} hosts stopped (SIGTERM) at "
          "once and started again, under pod pings across the segment",
          "0 packets lost; every restart adopts its kernel state unchanged and keeps its "
          "subnet; every watch live again",
          scale_topology(), scale=True)
def restart_all_250(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    hosts = lab.topology.host_names
    subnets = host_subnets(lab)
    before = dict(zip(hosts, observe.parallel(lambda h: peer_entries(lab, h), hosts),
                      strict=True))
    with r.pinging(*SCALE_PINGS):
        clock = Clock()
        pids = [p for h in hosts if (p := lab.sandbox.pid(build.flanneld_proc(h)))]
        kill_pids(pids, signal.SIGTERM, 20)
        for h in hosts:
            lab.sandbox.pidfile(build.flanneld_proc(h)).unlink(missing_ok=True)
        f["stopped"] = len(pids)
        f["down_s"] = clock.since("start")
        clock.mark("starting")
        for h in hosts:
            build.start_flanneld(lab, h)
        build.wait_all_flanneld(lab, hosts)
        f["all_ready_s"] = clock.since("starting")
        f["recovery_s"] = clock.since("start")  # ready: each reconciled every peer again
        clock.mark("ready")
        build.wait_converged(lab)
        f["converged_check_s"] = clock.since("ready")  # (the lab looking at 250 kernels)
        f["watch_roundtrip_s"], f["watch_removal_s"] = scale_watch_roundtrip(lab)
    after = dict(zip(hosts, observe.parallel(lambda h: peer_entries(lab, h), hosts),
                     strict=True))
    changed = sum(entries_changed(before[h], after[h]) for h in hosts)
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
    f["kernel_entries_changed"] = changed
    f["data_lost"] = changed + len(moved)
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check(f"all {SCALE} restarted and ready", f["stopped"] == SCALE,
            f"{f['all_ready_s']:.1f}s after the starts")
    r.check("every restart adopted every kernel entry as it was", changed == 0,
            f"{changed} entries added, removed or altered")
    r.check("every host kept its subnet", not moved, ", ".join(sorted(moved)))
    r.check("every watch live (a new lease reached every host)", True,
            f"{f['watch_roundtrip_s']:.2f}s")
    return f


@scenario("etcd-leader-kill-250", f"3-member etcd under {SCALE} watching flanneld: the leader "
          "killed (-9), later restarted",
          f"0 packets lost; a new leader; the watches of all {SCALE} hosts follow the "
          "remaining members (a new lease reaches every host); every node keeps its subnet",
          scale_topology(etcd_members=3), scale=True)
def etcd_leader_kill_250(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    members = [m.name for m in lab.topology.etcd]
    subnets = host_subnets(lab)
    restarts0 = _watch_restarts(lab)
    with r.pinging(*SCALE_PINGS):
        leader = wait_for(partial(_leader, lab, members), 20, what="an etcd leader")
        assert leader is not None
        rest = [m for m in members if m != leader]
        clock = Clock()
        chaos.etcd_stop(lab, leader, signal.SIGKILL)
        new = wait_for(partial(_leader, lab, rest), 30, what="a new etcd leader")
        f["killed"], f["new_leader"] = leader, new
        f["election_s"] = clock.since("start")
        f["watch_roundtrip_s"], f["watch_removal_s"] = scale_watch_roundtrip(lab)
        build.wait_all_flanneld(lab, lab.topology.host_names)
        f["recovery_s"] = clock.since("start")
        f["watch_restarts"] = _watch_restarts(lab) - restarts0
        chaos.etcd_start(lab, leader)
        wait_for(lambda: all(observe.etcd_health(lab).values()), 60,
                 what=f"{leader} healthy again")
        f["rejoined_s"] = clock.since("start")
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
    f["data_lost"] = len(moved)
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check(f"a new leader ({new})", new is not None and new != leader,
            f"{f['election_s']:.2f}s")
    r.check(f"a new lease reached all {SCALE} hosts after the kill", True,
            f"{f['watch_roundtrip_s']:.2f}s; {f['watch_restarts']} watch restarts")
    r.check("every flanneld ready", True, f"{f['recovery_s']:.2f}s after the kill")
    r.check("every node kept its subnet", not moved, ", ".join(sorted(moved)))
    return f
