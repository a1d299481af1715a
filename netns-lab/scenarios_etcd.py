"""The chaos scenarios on etcd: an outage of the only member, leader failover in a
3-member cluster, and compaction while a node is frozen (`netns_lab.scenarios`
lists every family).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from netns_lab import build, chaos, observe
from netns_lab.lab import Lab
from netns_lab.measure import (
    Clock,
    ProbeLease,
    all_ready,
    kernel_peer_set,
    leases_by_host,
    metric,
    peer_states,
    probe_lease,
    readyz,
    watch_roundtrip,
)
from netns_lab.netns import run, wait_for
from netns_lab.scenario_kit import Run, lab_topology, scenario
from netns_lab.scenarios_node import ALL3, host_subnets, lease_key

# -- etcd ---------------------------------------------------------------------------------------

OUTAGE_S = 60.0


@scenario("etcd-outage", f"the only etcd member stopped for {OUTAGE_S:.0f} s, then restarted",
          "0 packets lost; every node keeps its subnet; no peer removed; the watches resume",
          lab_topology())
def etcd_outage(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    leases = observe.read_leases(lab)
    subnets = host_subnets(lab)
    removed: set[str] = set()
    reasons: set[str] = set()
    with r.pinging(*ALL3):
        chaos.etcd_stop(lab, "etcd")
        clock = Clock()
        while clock.since("start") < OUTAGE_S:  # the fault lasts this long: look meanwhile
            for h in lab.topology.host_names:
                removed |= {f"{h}:{s}" for s, st in peer_states(lab, h, leases).items()
                            if st != "vxlan"}
                code, body = readyz(lab, h)
                if code != 200:
                    reasons.add(re.sub(r"[:(].*", "", body.replace("flanneld is not ready: ",
                                                                   "")).strip())
            time.sleep(min(2.0, max(0.0, OUTAGE_S - clock.since("start"))))
        f["outage_s"] = clock.since("start")
        chaos.etcd_start(lab, "etcd")
        clock.mark("back")
        wait_for(lambda: all_ready(lab), 60, what="every flanneld ready after etcd is back")
        f["recovery_s"] = clock.since("back")
        f["watch_roundtrip_s"] = round(watch_roundtrip(lab), 3)
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
    f["readyz_during_outage"] = sorted(reasons)
    f["peers_removed"] = len(removed)
    f["data_lost"] = len(removed) + len(moved)
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check("no peer removed during the outage", not removed, sorted(removed))
    r.check("every node kept its subnet", not moved, sorted(moved))
    r.check("the watches resumed (a new lease reached every host)", True,
            f"{f['watch_roundtrip_s']:.2f}s")
    return f


def _leader(lab: Lab, members: list[str]) -> str | None:
    """The etcd member that is leader, asking only `members` (the live ones)."""
    by_ip = {str(lab.plan.ip_of(m)): m for m in members}
    out = observe.etcdctl(lab, "endpoint", "status", "-w", "json",
                          endpoints=[e for e in lab.plan.etcd_endpoints
                                     if urlsplit(e).hostname in by_ip])
    for ep in json.loads(out):
        st = ep["Status"]
        if st["header"]["member_id"] == st["leader"]:
            return by_ip.get(str(urlsplit(ep["Endpoint"]).hostname))
    return None


@scenario("etcd-failover", "3-member etcd: the leader killed (-9); once it is back, the new "
          "leader killed too", "0 packets lost; flanneld follows the remaining members of "
          "--etcd-endpoints: a new lease reaches every host after each kill",
          lab_topology(etcd_members=3))
def etcd_failover(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    members = [m.name for m in lab.topology.etcd]
    subnets = host_subnets(lab)
    rounds: list[dict[str, Any]] = []
    with r.pinging(*ALL3):
        for n in (1, 2):
            leader = wait_for(partial(_leader, lab, members), 20, what="an etcd leader")
            assert leader is not None
            rest = [m for m in members if m != leader]
            clock = Clock()
            chaos.etcd_stop(lab, leader, signal.SIGKILL)
            wait_for(partial(_leader, lab, rest), 20, what="a new etcd leader")
            one = {"killed": leader, "election_s": clock.since("start")}
            one["watch_roundtrip_s"] = round(watch_roundtrip(lab, n=n), 3)
            wait_for(lambda: all_ready(lab), 30, what="every flanneld ready")
            one["recovery_s"] = clock.since("start")
            rounds.append(one)
            r.check(f"kill {n} ({leader}): a new lease reached every host", True,
                    f"{one['recovery_s']:.2f}s")
            chaos.etcd_start(lab, leader)
            wait_for(lambda: all(observe.etcd_health(lab).values()), 30,
                     what=f"{leader} healthy again")
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
    f["kills"] = rounds
    f["recovery_s"] = max(x["recovery_s"] for x in rounds)
    f["data_lost"] = len(moved)
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check("every node kept its subnet", not moved, sorted(moved))
    return f


COMPACTION_ROUNDS = 3


@scenario("etcd-compaction", f"{COMPACTION_ROUNDS} rounds of: h3 frozen and its etcd "
          "connection cut; h4 leaves (lease deleted) and joins again; probe nodes join, change "
          "and leave; etcd compacted; h3 thawed and must catch up across the compaction",
          "no event lost: every host converges to exactly the peers in etcd; 0 packets lost",
          lab_topology(hosts=4, pods_on=("h1", "h2")))
def etcd_compaction(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    etcd_ip = str(lab.plan.ip_of(lab.topology.etcd[0].name))
    start = metric(lab, "h3", "flanneld_etcd_watch_restarts_total")
    probes: list[ProbeLease] = []
    took: list[float] = []
    with r.pinging(("h1/p1", "h2/p1"), ("h2/p1", "h1/p1")):
        clock = Clock()
        for i in range(COMPACTION_ROUNDS):
            h3 = lab.sandbox.pid(build.flanneld_proc("h3"))
            assert h3 is not None
            os.kill(h3, signal.SIGSTOP)  # h3 falls behind ...
            try:
                # ... and loses its connection: it must catch up from an old revision
                run(["ip", "netns", "exec", lab.ns("h3"), "ss", "-K", "dst", etcd_ip,
                     "dport", "=", "2379"])
                chaos.flanneld_kill(lab, "h4")  # h4 leaves: decommissioned, lease deleted
                h4 = leases_by_host(lab).get("h4")
                if h4 is not None:
                    observe.etcdctl(lab, "del", lease_key(lab, str(h4.subnet)))
                _churn(lab, probes, i)
                observe.etcdctl(lab, "compact", str(_revision(lab)), "--physical")
                chaos.flanneld_start(lab, "h4", wait=False)  # and joins again
            finally:
                os.kill(h3, signal.SIGCONT)
            clock.mark("thawed")
            wait_for(lambda: _same_peers(lab), 60, interval=0.1,
                     what="every host to converge to the peer set in etcd")
            took.append(clock.since("thawed"))
        f["recovery_s"] = max(took)
        f["rounds_recovery_s"] = took
        for p in probes:
            p.delete()
        wait_for(lambda: _same_peers(lab), 30, interval=0.2,
                 what="every host to drop the probe nodes")
    f["h3_relists"] = int(metric(lab, "h3", "flanneld_etcd_watch_restarts_total") - start)
    f["data_lost"] = 0 if _same_peers(lab) else 1
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check("h3 caught up after every compaction (one re-list per round)",
            f["h3_relists"] >= COMPACTION_ROUNDS, f"{f['h3_relists']} re-lists")
    r.check("every host has exactly the peers in etcd", _same_peers(lab))
    return f


def _churn(lab: Lab, probes: list[ProbeLease], i: int) -> None:
    """Probe nodes join (3), one changes its MAC, one leaves."""
    for n in range(3 * i + 1, 3 * i + 4):
        p = probe_lease(lab, n)
        p.put()
        probes.append(p)
    changed = probes[-2]
    changed.mac = f"0e:5c:00:00:01:{3 * i:02x}"
    changed.put()
    probes.pop(0).delete()


def _revision(lab: Lab) -> int:
    out = observe.etcdctl(lab, "get", "--prefix", lab.topology.etcd_prefix, "--keys-only",
                          "--limit", "1", "-w", "json")
    return int(json.loads(out)["header"]["revision"])


def _same_peers(lab: Lab) -> bool:
    """Every host routes to exactly the other leases in etcd, each fully programmed."""
    leases = observe.read_leases(lab)
    for h in lab.topology.host_names:
        own = str(observe.read_subnet_env(lab.host_dir(h) / "subnet.env").get(
            "FLANNEL_SUBNET", ""))
        want = {str(ls.subnet) for ls in leases if ls.attrs.public_ip != lab.plan.ip_of(h)}
        if kernel_peer_set(lab, h) != want or not own:
            return False
        if any(s != "vxlan" for s in peer_states(lab, h, leases).values()):
            return False
    return True
