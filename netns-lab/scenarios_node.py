"""The chaos scenarios on one node: the reference run, flanneld restarts, a lease or a
whole host gone, kernel drift, nodes cloned with their state; plus the helpers the other
families share (`netns_lab.scenarios` lists every family).
"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

from netns_lab import chaos, observe, ping
from netns_lab.lab import Lab
from netns_lab.measure import (
    Clock,
    all_ready,
    entries_changed,
    leases_by_host,
    metric,
    peer_entries,
    peer_states,
)
from netns_lab.netns import ip, run, wait_for
from netns_lab.scenario_kit import Run, lab_topology, scenario

from core.lease import Lease, subnets_prefix

# -- shared by every family ------------------------------------------------------------------

ALL3 = (("h1/p1", "h2/p1"), ("h2/p1", "h3/p1"), ("h3/p1", "h1/p1"))


def host_subnets(lab: Lab) -> dict[str, str]:
    return {h: str(ls.subnet) for h, ls in leases_by_host(lab).items()}


def wait_converged(lab: Lab, timeout: float = 30) -> None:
    wait_for(lambda: observe.converged(lab), timeout, interval=0.1,
             what="every host to program every other host's lease")


def lease_key(lab: Lab, subnet: str) -> str:
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
    subnets = host_subnets(lab)
    before = {h: peer_entries(lab, h) for h in victims}
    with r.pinging(*ALL3):
        clock = Clock()
        observe.parallel(lambda h: chaos.flanneld_kill(lab, h, signal.SIGKILL), victims)
        f["down_s"] = clock.since("start")
        observe.parallel(lambda h: chaos.flanneld_start(lab, h), victims)  # waits for /readyz
        f["recovery_s"] = clock.since("start")
        wait_converged(lab)
    changed = sum(entries_changed(before[h], peer_entries(lab, h)) for h in victims)
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
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
    subnets = host_subnets(lab)
    key = lease_key(lab, subnets["h2"])
    before = metric(lab, "h2", "flanneld_lease_acquisitions_total")
    with r.pinging(("h1/p1", "h2/p1"), ("h3/p1", "h2/p1")):
        clock = Clock()
        observe.etcdctl(lab, "del", key)
        wait_for(lambda: "h2" in leases_by_host(lab), 20, interval=0.05,
                 what="h2 to hold a lease again")
        f["reacquire_s"] = clock.since("start")
        wait_converged(lab)
        wait_for(lambda: all_ready(lab), 20, what="every flanneld ready")
        f["recovery_s"] = clock.since("start")
    after = host_subnets(lab)
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


# -- nodes cloned with their state ------------------------------------------------------------

CLONED_MAC = "0e:c1:0e:c1:0e:c1"


def _mac_file(lab: Lab, host: str) -> Path:
    """The host's persisted VtepMAC, from outside: its state dir (/var/lib/pyflannel inside
    the host) is the lab's directory of the host."""
    return lab.host_dir(host) / "vtep-mac.flannel.1"


def _vtep_macs(lab: Lab) -> dict[str, tuple[str, str]]:
    """Per host: (VtepMAC in its lease in etcd, MAC of its vxlan device)."""
    out = {}
    for h, lease in leases_by_host(lab).items():
        dev = observe.kernel_view(lab.ns(h)).vxlan_links()
        out[h] = (str(lease.attrs.vtep_mac), str(dev[0].get("address")) if dev else "")
    return out


def _distinct(lab: Lab) -> bool:
    macs = _vtep_macs(lab)
    return (len(macs) == len(lab.topology.host_names)
            and all(lease == dev for lease, dev in macs.values())
            and len({lease for lease, _ in macs.values()}) == len(macs))


@scenario("cloned-state", "three nodes come up from one image: every state dir holds the "
          f"same vtep-mac file (VtepMAC {CLONED_MAC}, the old unbound format), no device yet",
          "the clash is detected and counted (flanneld_vtep_mac_conflicts_total); the newer "
          "nodes draw new MACs: three distinct VtepMACs in etcd and on the devices, every pod "
          "pair pings", lab_topology())
def cloned_state(r: Run) -> dict[str, Any]:
    lab, f = r.lab, r.figures
    hosts = lab.topology.host_names
    subnets = host_subnets(lab)
    with r.pinging(*ALL3):
        clock = Clock()
        observe.parallel(lambda h: chaos.flanneld_kill(lab, h), hosts)
        for h in hosts:  # a fresh boot of each clone: no device, the image's file
            for dev in observe.kernel_view(lab.ns(h)).vxlan_links():
                ip("link", "del", str(dev["ifname"]), netns=lab.ns(h))
            _mac_file(lab, h).write_text(CLONED_MAC + "\n")
        observe.parallel(lambda h: chaos.flanneld_start(lab, h), hosts)  # waits for /readyz
        f["ready_s"] = clock.since("start")
        wait_for(lambda: _distinct(lab), 30, interval=0.1,
                 what="three distinct VtepMACs, in etcd and on the devices")
        wait_converged(lab)
        f["recovery_s"] = clock.since("start")
    macs = _vtep_macs(lab)
    conflicts = {h: metric(lab, h, "flanneld_vtep_mac_conflicts_total") for h in hosts}
    results = ping.ping_all(lab, timeout=1.0, attempts=3)
    failed = [f"{x.src}->{x.dst}" for x in results if not x.ok]
    files = {h: _mac_file(lab, h).read_text().splitlines() for h in hosts}
    moved = {h for h, s in host_subnets(lab).items() if subnets.get(h) != s}
    f["vtep_macs"] = {h: lease for h, (lease, _) in macs.items()}
    f["conflicts_counted"] = conflicts
    f["data_lost"] = len(moved)
    r.check("three distinct VtepMACs in etcd", len(set(f["vtep_macs"].values())) == len(hosts),
            f["vtep_macs"])
    r.check("every device has the VtepMAC of its lease",
            all(lease == dev for lease, dev in macs.values()), macs)
    r.check("the oldest holder kept the cloned MAC",
            list(f["vtep_macs"].values()).count(CLONED_MAC) == 1)
    r.check("the clash is counted", sum(conflicts.values()) >= len(hosts) - 1, conflicts)
    r.check("every pod pair pings", bool(results) and not failed,
            f"{len(results) - len(failed)}/{len(results)}" + (f": {failed}" if failed else ""))
    r.check("every vtep-mac file is rewritten, bound to its node",
            all(len(v) == 2 and v[0] == f["vtep_macs"][h] and v[1].startswith("node ")
                for h, v in files.items()), files)
    r.check("every host kept its subnet", not moved, ", ".join(sorted(moved)))
    return f
