"""The chaos scenarios: one function each, taking the lab up and returning its figures.

Each runs its fault under `ping -i 0.01` between pods on different hosts and
records packets lost, time to recover and data lost (see netns_lab.scenario_kit,
and docs/reliability.md for the figures of the last full run). Replay one with
`netns-lab scenario NAME`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from netns_lab import build, chaos, observe
from netns_lab.lab import Lab
from netns_lab.measure import (
    Clock,
    ProbeLease,
    all_ready,
    entries_changed,
    kernel_peer_set,
    leases_by_host,
    log_of,
    metric,
    peer_entries,
    peer_states,
    probe_lease,
    readyz,
    watch_roundtrip,
)
from netns_lab.netns import ip, run, wait_for
from netns_lab.scenario_kit import Run, lab_topology, scenario

from flanneld.lease import Lease, LeaseAttrs, encode_attrs, subnets_prefix

ALL3 = (("h1/p1", "h2/p1"), ("h2/p1", "h3/p1"), ("h3/p1", "h1/p1"))


def _subnets(lab: Lab) -> dict[str, str]:
    return {h: str(ls.subnet) for h, ls in leases_by_host(lab).items()}


def _converged(lab: Lab, timeout: float = 30) -> None:
    wait_for(lambda: observe.converged(lab), timeout, interval=0.1,
             what="every host to program every other host's lease")


def _lease_key(lab: Lab, subnet: str) -> str:
    net = subnet.replace("/", "-")
    return f"{subnets_prefix(lab.topology.etcd_prefix)}/{net}"


# -- the reference ------------------------------------------------------------------------------

BASELINE_S = 5.0


@scenario("baseline", f"no fault: {BASELINE_S:.0f} s of pings between all three hosts",
          "0 packets lost: the reference the faults are measured against", lab_topology())
def baseline(r: Run) -> dict[str, Any]:
    f = r.figures
    with r.pinging(*ALL3):
        clock = Clock()
        while clock.since("start") < BASELINE_S:  # the measurement window itself
            time.sleep(0.2)
    f["recovery_s"] = 0.0
    f["data_lost"] = 0
    r.check("no packet lost without a fault", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    return f


# -- flanneld ---------------------------------------------------------------------------------


@scenario("flanneld-kill9", "kill -9 one host's flanneld, then restart it",
          "0 packets lost; the restart adopts the kernel state unchanged and keeps the subnet",
          lab_topology())
def flanneld_kill9(r: Run) -> dict[str, Any]:
    return _kill9(r, ["h2"])


@scenario("flanneld-kill9-all", "kill -9 every host's flanneld at once, restart them all",
          "0 packets lost; every restart adopts its kernel state and keeps its subnet",
          lab_topology())
def flanneld_kill9_all(r: Run) -> dict[str, Any]:
    return _kill9(r, r.lab.topology.host_names)


def _kill9(r: Run, victims: list[str]) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    subnets = _subnets(lab)
    before = {h: peer_entries(lab, h) for h in victims}
    with r.pinging(*ALL3):
        clock = Clock()
        observe.parallel(lambda h: chaos.flanneld_kill(lab, h, signal.SIGKILL), victims)
        f["down_s"] = clock.since("start")
        observe.parallel(lambda h: chaos.flanneld_start(lab, h), victims)  # waits for /readyz
        f["recovery_s"] = clock.since("start")
        _converged(lab)
    changed = sum(entries_changed(before[h], peer_entries(lab, h)) for h in victims)
    moved = {h for h, s in _subnets(lab).items() if subnets.get(h) != s}
    f["data_lost"] = changed + len(moved)
    f["kernel_entries_changed"] = changed
    r.check("no packet lost", f["packets_lost"] == 0, f"{f['packets_lost']} lost")
    r.check("the restart adopted every kernel entry as it was", changed == 0,
            f"{changed} entries added, removed or altered")
    r.check("every host kept its subnet", not moved, ", ".join(sorted(moved)))
    return f


@scenario("lease-deleted", "someone deletes a host's lease from etcd by hand",
          "the host re-acquires (the same subnet) and every peer converges again",
          lab_topology())
def lease_deleted(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    subnets = _subnets(lab)
    key = _lease_key(lab, subnets["h2"])
    before = metric(lab, "h2", "flanneld_lease_acquisitions_total")
    with r.pinging(("h1/p1", "h2/p1"), ("h3/p1", "h2/p1")):
        clock = Clock()
        observe.etcdctl(lab, "del", key)
        wait_for(lambda: "h2" in leases_by_host(lab), 20, interval=0.05,
                 what="h2 to hold a lease again")
        f["reacquire_s"] = clock.since("start")
        _converged(lab)
        wait_for(lambda: all_ready(lab), 20, what="every flanneld ready")
        f["recovery_s"] = clock.since("start")
    after = _subnets(lab)
    f["data_lost"] = int(after.get("h2") != subnets["h2"])
    r.check("h2 re-acquired its lease", "h2" in after)
    r.check("h2 kept its subnet", after.get("h2") == subnets["h2"],
            f"{subnets['h2']} -> {after.get('h2')}")
    r.check("the re-acquisition is counted",
            metric(lab, "h2", "flanneld_lease_acquisitions_total") > before)
    r.check("every peer converged", observe.converged(lab))
    return f


@scenario("host-removed", "a host goes away for good (kill -9, cable pulled); its lease has a "
          "5 s TTL (--subnet-lease-ttl 5, the shortest flanneld takes)",
          "its lease expires and every peer removes its route, neighbour and FDB entry; "
          "0 packets lost between the others",
          lab_topology(pods_on=("h1", "h2"), per_host={"h3": ["--subnet-lease-ttl", "5"]}))
def host_removed(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    gone = leases_by_host(lab)["h3"]
    peers = ["h1", "h2"]
    with r.pinging(("h1/p1", "h2/p1"), ("h2/p1", "h1/p1")):
        clock = Clock()
        chaos.flanneld_kill(lab, "h3", signal.SIGKILL)
        chaos.set_link(lab, "h3", up=False)
        wait_for(lambda: "h3" not in leases_by_host(lab), 30, interval=0.1,
                 what="h3's lease to expire")
        f["lease_expired_s"] = clock.since("start")
        wait_for(lambda: not any(_traces(lab, h, gone) for h in peers), 20, interval=0.05,
                 what="every peer to drop h3's route, neighbour and FDB entry")
        f["recovery_s"] = clock.since("start")
    left = {h: _traces(lab, h, gone) for h in peers}
    f["data_lost"] = 0
    r.check("h3's lease expired in etcd", "h3" not in leases_by_host(lab))
    r.check("no peer keeps a route, neighbour or FDB entry for h3",
            not any(left.values()), left)
    r.check("no packet lost between the remaining hosts", f["packets_lost"] == 0,
            f"{f['packets_lost']} lost")
    r.check("the remaining hosts stay ready", all_ready(lab, peers))
    return f


def _traces(lab: Lab, host: str, lease: Lease) -> list[str]:
    """Kernel entries on `host` that still point at `lease` (route, neighbour, FDB)."""
    view = observe.kernel_view(lab.ns(host))
    s0, public = str(lease.subnet.network_address), str(lease.attrs.public_ip)
    mac = (lease.attrs.vtep_mac or "").lower()
    out = [f"route {r['dst']}" for r in view.routes if r.get("dst") == str(lease.subnet)]
    out += [f"neigh {n['dst']}" for n in view.neighs
            if n.get("dst") == s0 and str(n.get("dev", "")).startswith("flannel")]
    out += [f"fdb {e.get('mac')} dst {public}" for e in view.fdb
            if e.get("dst") == public or str(e.get("mac", "")).lower() == mac]
    return out


# -- kernel drift -----------------------------------------------------------------------------

DRIFTS = ("route", "neigh", "fdb", "device", "mtu")


@scenario("kernel-drift", "someone deletes a route, a neighbour, an FDB entry, the vxlan "
          "device, or changes its MTU (each in turn, on h1, for the path to h2)",
          "each restored within one resync (--resync-interval 1) and counted in "
          "flanneld_repairs_total", lab_topology())
def kernel_drift(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    f["resync_interval_s"] = 1
    per: dict[str, dict[str, Any]] = {}
    for kind in DRIFTS:
        one: dict[str, Any] = {}
        before = metric(lab, "h1", "flanneld_repairs_total", f'kind="{kind}"')
        with r.pinging(("h1/p1", "h2/p1"), into=one):
            clock = Clock()
            _break(lab, "h1", "h2", kind)
            wait_for(lambda: _whole(lab, "h1"), 15, interval=0.02,
                     what=f"h1 to restore the {kind}")
            one["recovery_s"] = clock.since("start")
            wait_for(partial(_counted, lab, kind, before), 10,
                     what=f"the {kind} repair to be counted")
        one["repairs_counted"] = metric(lab, "h1", "flanneld_repairs_total",
                                        f'kind="{kind}"') - before
        per[kind] = one
        r.check(f"{kind}: restored and counted", one["repairs_counted"] >= 1,
                f"{one['recovery_s']:.2f}s, {one['packets_lost']} packets lost")
    f["drifts"] = {k: {x: v[x] for x in ("recovery_s", "packets_lost", "packets_sent",
                                         "repairs_counted")} for k, v in per.items()}
    f["packets_sent"] = sum(v["packets_sent"] for v in per.values())
    f["packets_lost"] = sum(v["packets_lost"] for v in per.values())
    f["longest_gap_s"] = max(v["longest_gap_s"] for v in per.values())
    f["recovery_s"] = max(v["recovery_s"] for v in per.values())
    f["data_lost"] = 0
    r.check("every host still programs every peer", observe.converged(lab))
    return f


def _counted(lab: Lab, kind: str, before: float) -> bool:
    return metric(lab, "h1", "flanneld_repairs_total", f'kind="{kind}"') > before


def _vxlan_dev(lab: Lab, host: str) -> dict[str, Any]:
    return observe.kernel_view(lab.ns(host)).vxlan_links()[0]


def _break(lab: Lab, host: str, peer: str, kind: str) -> None:
    ns = lab.ns(host)
    lease = leases_by_host(lab)[peer]
    dev = _vxlan_dev(lab, host)["ifname"]
    s0 = str(lease.subnet.network_address)
    if kind == "route":
        ip("route", "del", str(lease.subnet), netns=ns)
    elif kind == "neigh":
        ip("neigh", "del", s0, "dev", dev, netns=ns)
    elif kind == "fdb":
        run(["bridge", "-n", ns, "fdb", "del", str(lease.attrs.vtep_mac), "dev", dev,
             "dst", str(lease.attrs.public_ip), "self"])
    elif kind == "device":
        ip("link", "del", dev, netns=ns)
    elif kind == "mtu":
        ip("link", "set", dev, "mtu", "1400", netns=ns)


def _whole(lab: Lab, host: str) -> bool:
    leases = observe.read_leases(lab)
    dev = observe.kernel_view(lab.ns(host)).vxlan_links()
    own = leases_by_host(lab)[host]
    return (bool(dev) and dev[0].get("mtu") == 1450
            and dev[0].get("address") == own.attrs.vtep_mac
            and all(s == "vxlan" for s in peer_states(lab, host, leases).values()))


# -- etcd ---------------------------------------------------------------------------------------

OUTAGE_S = 60.0


@scenario("etcd-outage", f"the only etcd member stopped for {OUTAGE_S:.0f} s, then restarted",
          "0 packets lost; every node keeps its subnet; no peer removed; the watches resume",
          lab_topology())
def etcd_outage(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    leases = observe.read_leases(lab)
    subnets = _subnets(lab)
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
    moved = {h for h, s in _subnets(lab).items() if subnets.get(h) != s}
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
    subnets = _subnets(lab)
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
    moved = {h for h, s in _subnets(lab).items() if subnets.get(h) != s}
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
                    observe.etcdctl(lab, "del", _lease_key(lab, str(h4.subnet)))
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
        subnets = _subnets(lab)
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
    subnets = _subnets(lab)
    reserved: list[str] = []
    with r.pinging(("h1/p1", "h2/p1"), ("h2/p1", "h1/p1")):
        for i, h in enumerate(extra):
            chaos.flanneld_kill(lab, h)
            key = _lease_key(lab, subnets[h])
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
    moved = {h for h in others if _subnets(lab).get(h) != subnets[h]}
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
