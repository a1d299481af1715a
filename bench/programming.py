#!/usr/bin/env python3
"""Programming 1000 vxlan peers: our batched reconciler against `ip -batch` + `bridge -batch`.

Setup per round: a fresh namespace with eth0 (a veth) and nothing else. Each
contender brings up flannel.1 with its address and programs 1000 synthetic peer
leases (neighbour + FDB + onlink route each, i.e. 3000 kernel entries):

- ours: create_backend + lease_attrs + reconcile(full=True) (desired state, dumps,
  diff, two netlink batches), timed from constructing the backend;
- reference: `ip -batch` (link, address, up, 1000 neighbours), `bridge -batch`
  (1000 FDB entries), `ip -batch` (1000 routes), with the files written beforehand;
- naive pyroute2: one IPRoute call per entry (for reference; not a goal).

Then, with 1000 peers present, the event-to-kernel delay of one new lease
(reconcile(full=False) until every netlink request is acknowledged), its removal,
and a full resync that finds nothing to do (dump + diff of 3000 entries).

--dual-stack: the same with EnableIPv6 (IPv6Network fc00:8::/48, /64 per node); the
backend also brings up flannel-v6.1 (local = eth0's IPv6, its own MAC, MTU 1430) and
each peer is dual-stack: the IPv4 entries above plus its IPv6 neighbour, FDB entry
(dst = its PublicIPv6) and onlink route, 6000 kernel entries for 1000 peers. The
reference's batch files hold the same v4 and v6 lines; one event is one dual-stack
lease (6 entries). Saved as programming_dualstack.json; the IPv4 figures stay in
programming.json.

Goals: initial programming <= 2x the ip/bridge batch reference; one new lease p99 < 20 ms.
Run as root: .venv/bin/python bench/programming.py [--peers N] [--rounds R] [--events E]
[--dual-stack]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "netns-lab"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import save  # noqa: E402
from netns_lab.netns import Sandbox, ip, run  # noqa: E402

from backends import create_backend  # noqa: E402
from backends.base import ExternalInterface  # noqa: E402
from core.config import NetworkConfig, VxlanConfig  # noqa: E402
from core.lease import Lease, LeaseAttrs, vxlan_backend_data  # noqa: E402

NAME, NAME_DS = "programming", "programming_dualstack"
GOAL_RATIO, GOAL_EVENT_P99_MS = 2.0, 20.0
OWN_MAC, OWN_MAC6 = "c6:d2:32:6f:8f:44", "c6:d2:32:6f:8f:66"
DEV6, MTU6 = "flannel-v6.1", 1430
NETWORK6 = IPv6Network("fc00:8::/48")
OWN_IP6 = IPv6Address("fd16::1")
CONFIG = NetworkConfig(ipv4_network=IPv4Network("10.0.0.0/8"), subnet_len=24,
                       subnet_min=IPv4Address("10.0.1.0"),
                       subnet_max=IPv4Address("10.255.255.0"), backend_type="vxlan",
                       backend=VxlanConfig())
OWN = Lease(IPv4Network("10.0.0.0/24"),
            LeaseAttrs(IPv4Address("172.16.0.1"), "vxlan", vxlan_backend_data(1, OWN_MAC)))
CONFIG_DS = replace(CONFIG, enable_ipv6=True, ipv6_network=NETWORK6, ipv6_subnet_len=64)


def subnet6(i: int) -> IPv6Network:
    """Peer i's /64 in NETWORK6 (i = -1: our own, fc00:8::/64)."""
    return IPv6Network((int(NETWORK6.network_address) + ((i + 1) << 64), 64))


def peer(i: int, dual_stack: bool = False) -> Lease:
    subnet = IPv4Network(f"10.{1 + i // 256}.{i % 256}.0/24")
    mac = f"0e:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01"
    public = IPv4Address(f"172.16.{1 + i // 250}.{1 + i % 250}")
    if not dual_stack:
        return Lease(subnet, LeaseAttrs(public, "vxlan", vxlan_backend_data(1, mac)))
    # the v6 device has its own MAC (..:02), and the peer a PublicIPv6 on eth0's /64
    mac6, public6 = mac[:-2] + "02", OWN_IP6 + 1 + i
    return Lease(subnet, LeaseAttrs(public, "vxlan", vxlan_backend_data(1, mac),
                                    public_ipv6=public6,
                                    backend_v6_data=vxlan_backend_data(1, mac6)),
                 ipv6_subnet=subnet6(i))


OWN_DS = replace(OWN, ipv6_subnet=subnet6(-1), attrs=replace(
    OWN.attrs, public_ipv6=OWN_IP6, backend_v6_data=vxlan_backend_data(1, OWN_MAC6)))


def batch_lines(peers: list[Lease], dual_stack: bool) -> dict[str, list[str]]:
    """The reference's three batch files (ip, bridge, ip): devices, then every entry."""
    links = [f"link add flannel.1 address {OWN_MAC} mtu 1450 txqlen 0 type vxlan id 1 "
             "local 172.16.0.1 dev eth0 dstport 8472 nolearning ttl 0",
             "addr add 10.0.0.0/32 dev flannel.1", "link set flannel.1 up"]
    if dual_stack:
        assert OWN_DS.ipv6_subnet is not None
        links += [f"link add {DEV6} address {OWN_MAC6} mtu {MTU6} txqlen 0 type vxlan id 1 "
                  f"local {OWN_IP6} dev eth0 dstport 8472 nolearning ttl 0",
                  f"addr add {OWN_DS.ipv6_subnet.network_address}/128 dev {DEV6} nodad",
                  f"link set {DEV6} up"]
    neigh, fdb, routes = [], [], []
    for p in peers:
        s0, mac, pub = p.subnet.network_address, p.attrs.vtep_mac, p.attrs.public_ip
        neigh.append(f"neigh replace {s0} lladdr {mac} dev flannel.1 nud permanent")
        fdb.append(f"fdb replace {mac} dev flannel.1 dst {pub} self permanent")
        routes.append(f"route replace {p.subnet} via {s0} dev flannel.1 onlink")
        if dual_stack:
            assert p.ipv6_subnet is not None
            g6, mac6 = p.ipv6_subnet.network_address, p.attrs.backend_v6_data["VtepMAC"]
            neigh.append(f"neigh replace {g6} lladdr {mac6} dev {DEV6} nud permanent")
            fdb.append(f"fdb replace {mac6} dev {DEV6} dst {p.attrs.public_ipv6} self permanent")
            routes.append(f"route replace {p.ipv6_subnet} via {g6} dev {DEV6} onlink")
    return {"ip1": links + neigh, "br": fdb, "ip2": routes}


class Bench:
    def __init__(self, box: Sandbox, dual_stack: bool = False) -> None:
        self.box = box
        self.dual_stack = dual_stack
        self.config, self.own = (CONFIG_DS, OWN_DS) if dual_stack else (CONFIG, OWN)
        self.n = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="pyflannel-bench-"))

    def fresh_ns(self) -> tuple[str, ExternalInterface]:
        """An empty namespace with eth0 (172.16.0.1/16, dual stack also fd16::1/64) whose
        peer end lives in a twin."""
        self.n += 1
        ns, twin = self.box.add_netns(f"h{self.n}"), self.box.add_netns(f"t{self.n}")
        self.box.veth(ns, "eth0", twin, "eth0")
        ip("addr", "add", "172.16.0.1/16", "dev", "eth0", netns=ns)
        if self.dual_stack:
            ip("addr", "add", f"{OWN_IP6}/64", "dev", "eth0", "nodad", netns=ns)
        index = json.loads(ip("-j", "link", "show", "eth0", netns=ns))[0]["ifindex"]
        return ns, ExternalInterface("eth0", index, IPv4Address("172.16.0.1"), 1500,
                                     public_ipv6=OWN_IP6 if self.dual_stack else None)

    def drop(self, ns: str) -> None:
        for name in (ns, ns.replace("-h", "-t")):
            run(["ip", "netns", "del", name], check=False)

    def count(self, ns: str) -> tuple[int, ...]:
        """(neigh, fdb, routes) on flannel.1, and dual stack the same on flannel-v6.1."""
        out: list[int] = []
        for dev in ("flannel.1", DEV6) if self.dual_stack else ("flannel.1",):
            neigh = ip("neigh", "show", "dev", dev, "nud", "permanent", netns=ns)
            fdb = run(["bridge", "-n", ns, "fdb", "show", "dev", dev]).stdout
            routes = ip("-6" if dev == DEV6 else "-4", "route", "show", "dev", dev, netns=ns)
            # via: not the kernel's own fe80::/64 and address routes of the v6 device
            out += [len(neigh.splitlines()), len(fdb.splitlines()),
                    sum(" via " in line for line in routes.splitlines())]
        return tuple(out)

    # --- the contenders -------------------------------------------------------------------

    def ours(self, peers: list[Lease]) -> tuple[float, str]:
        ns, ext = self.fresh_ns()
        state = self.tmp / ns
        state.mkdir()
        (state / "vtep-mac.flannel.1").write_text(OWN_MAC + "\n")
        if self.dual_stack:
            (state / f"vtep-mac.{DEV6}").write_text(OWN_MAC6 + "\n")
        t0 = time.perf_counter()
        be = create_backend(self.config, ext, state, netns=ns)
        be.lease_attrs()
        result = be.reconcile(self.own, [self.own, *peers])
        elapsed = time.perf_counter() - t0
        be.close()
        assert not result.errors and result.programmed_peers == len(peers), result.summary()
        return elapsed, ns

    def reference(self, peers: list[Lease]) -> tuple[float, str]:
        ns, _ = self.fresh_ns()
        files = []
        for name, lines in batch_lines(peers, self.dual_stack).items():
            path = self.tmp / f"{ns}.{name}"
            path.write_text("\n".join(lines) + "\n")
            files.append(str(path))
        cmds = [["ip", "-n", ns, "-batch", files[0]], ["bridge", "-n", ns, "-batch", files[1]],
                ["ip", "-n", ns, "-batch", files[2]]]
        t0 = time.perf_counter()
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0, ns

    def pyroute2(self, peers: list[Lease]) -> tuple[float, str]:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import ndmsg

        ns, ext = self.fresh_ns()
        perm, self_flag = ndmsg.states["permanent"], ndmsg.flags["self"]
        t0 = time.perf_counter()
        with IPRoute(netns=ns, flags=0) as ipr:
            ipr.link("add", ifname="flannel.1", kind="vxlan", vxlan_id=1,
                     vxlan_local="172.16.0.1", vxlan_link=ext.index, vxlan_learning=0,
                     address=OWN_MAC, mtu=1450)
            idx = ipr.link_lookup(ifname="flannel.1")[0]
            ipr.addr("add", index=idx, address="10.0.0.0", prefixlen=32)
            ipr.link("set", index=idx, state="up")
            for p in peers:
                ipr.neigh("replace", dst=str(p.subnet.network_address), lladdr=p.attrs.vtep_mac,
                          ifindex=idx, state=perm)
            for p in peers:
                ipr.fdb("replace", ifindex=idx, lladdr=p.attrs.vtep_mac,
                        dst=str(p.attrs.public_ip), state=perm, flags=self_flag)
            for p in peers:
                ipr.route("replace", dst=str(p.subnet), gateway=str(p.subnet.network_address),
                          oif=idx, flags=["onlink"])
            if self.dual_stack:
                self._pyroute2_v6(ipr, peers, ext.index, perm, self_flag)
        return time.perf_counter() - t0, ns

    def _pyroute2_v6(self, ipr: Any, peers: list[Lease], link: int, perm: int,
                     self_flag: int) -> None:
        assert self.own.ipv6_subnet is not None
        ipr.link("add", ifname=DEV6, kind="vxlan", vxlan_id=1, vxlan_local6=str(OWN_IP6),
                 vxlan_link=link, vxlan_learning=0, vxlan_port=8472, address=OWN_MAC6,
                 mtu=MTU6)
        idx = ipr.link_lookup(ifname=DEV6)[0]
        ipr.addr("add", index=idx, address=str(self.own.ipv6_subnet.network_address),
                 prefixlen=128, family=socket.AF_INET6)
        ipr.link("set", index=idx, state="up")
        for p in peers:
            assert p.ipv6_subnet is not None
            ipr.neigh("replace", dst=str(p.ipv6_subnet.network_address), family=socket.AF_INET6,
                      lladdr=p.attrs.backend_v6_data["VtepMAC"], ifindex=idx, state=perm)
        for p in peers:
            ipr.fdb("replace", ifindex=idx, lladdr=p.attrs.backend_v6_data["VtepMAC"],
                    dst=str(p.attrs.public_ipv6), state=perm, flags=self_flag)
        for p in peers:
            assert p.ipv6_subnet is not None
            ipr.route("replace", dst=str(p.ipv6_subnet), family=socket.AF_INET6,
                      gateway=str(p.ipv6_subnet.network_address), oif=idx, flags=["onlink"])

    # --- events with N peers present ------------------------------------------------------

    def events(self, peers: list[Lease], n_events: int) -> dict[str, Any]:
        ns, ext = self.fresh_ns()
        state = self.tmp / ns
        state.mkdir()
        own = self.own
        be = create_backend(self.config, ext, state, netns=ns)
        be.lease_attrs()
        current = [own, *peers]
        assert not be.reconcile(own, current).errors
        one = dict.fromkeys(("neigh", "fdb", "route", *(
            ("neigh6", "fdb6", "route6") if self.dual_stack else ())), 1)
        add, remove, full = [], [], []
        for i in range(n_events):
            new = peer(len(peers) + i, self.dual_stack)
            current.append(new)
            t0 = time.perf_counter()
            r = be.reconcile(own, current, full=False)
            add.append(time.perf_counter() - t0)
            assert r.added == one and not r.errors, r.summary()
            current.pop()
            t0 = time.perf_counter()
            r = be.reconcile(own, current, full=False)
            remove.append(time.perf_counter() - t0)
            assert r.removed == one, r.summary()
            if i % 10 == 0:
                t0 = time.perf_counter()
                r = be.reconcile(own, current, full=True)
                full.append(time.perf_counter() - t0)
                assert not r.changed and not r.errors, r.summary()
        be.close()
        self.drop(ns)
        return {"add_ms": stats(add), "remove_ms": stats(remove),
                "full_resync_noop_ms": stats(full)}


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(1e3 * s for s in samples)
    return {"n": len(ms), "p50": round(statistics.median(ms), 2),
            "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "max": round(ms[-1], 2)}


def timed_rounds(bench: Bench, peers: list[Lease], rounds: int,
                 contenders: dict[str, Callable[[list[Lease]], tuple[float, str]]]
                 ) -> dict[str, list[float]]:
    """Interleaved rounds, so background load hits every contender alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    expect = (len(peers),) * (6 if bench.dual_stack else 3)
    for _ in range(rounds):
        for name, fn in contenders.items():
            elapsed, ns = fn(peers)
            got = bench.count(ns)
            assert got == expect, f"{name}: kernel has {got} (neigh, fdb, routes per device), " \
                f"want {expect}"
            bench.drop(ns)
            times[name].append(elapsed)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--dual-stack", action="store_true",
                    help="IPv4 and IPv6 entries per peer; saved as programming_dualstack.json")
    args = ap.parse_args()
    ds = args.dual_stack
    peers = [peer(i, ds) for i in range(args.peers)]
    load_before = os.getloadavg()[0]
    box = Sandbox.scratch()
    try:
        bench = Bench(box, ds)
        times = timed_rounds(bench, peers, args.rounds, {
            "ours": bench.ours, "ip_bridge_batch": bench.reference,
            "pyroute2_per_call": bench.pyroute2})
        events = bench.events(peers, args.events)
    finally:
        box.cleanup()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratio = med["ours"] / med["ip_bridge_batch"]
    ratio_naive = med["pyroute2_per_call"] / med["ip_bridge_batch"]
    out = {
        "benchmark": NAME_DS if ds else NAME, "peers": args.peers, "rounds": args.rounds,
        **({"dual_stack": True, "kernel_entries": 6 * args.peers} if ds else {}),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(),
                    # The box is shared: other work running meanwhile skews absolute times.
                    "loadavg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]},
        "initial_programming_ms": {k: {"median": round(v, 1),
                                       "runs": [round(1e3 * t, 1) for t in times[k]]}
                                   for k, v in med.items()},
        "ratio_ours_vs_ip_batch": round(ratio, 2),
        "ratio_pyroute2_vs_ip_batch": round(ratio_naive, 2),
        "events_with_peers_present": events,
        "goals": {"ratio_max": GOAL_RATIO, "event_p99_ms_max": GOAL_EVENT_P99_MS,
                  "ratio_met": ratio <= GOAL_RATIO,
                  "event_p99_met": events["add_ms"]["p99"] < GOAL_EVENT_P99_MS},
    }
    what = "dual-stack " if ds else ""
    print(f"initial programming of {args.peers} {what}peers (median of {args.rounds}):")
    for k, v in med.items():
        print(f"  {k:20s} {v:8.1f} ms")
    print(f"  ratio ours / ip+bridge -batch     = {ratio:.2f}  (goal <= {GOAL_RATIO})")
    print(f"  ratio pyroute2 / ip+bridge -batch = {ratio_naive:.2f}")
    e = events
    print(f"one new {what}lease with {args.peers} present: p50 {e['add_ms']['p50']} ms, "
          f"p99 {e['add_ms']['p99']} ms (goal p99 < {GOAL_EVENT_P99_MS})")
    print(f"its removal: p50 {e['remove_ms']['p50']} ms, p99 {e['remove_ms']['p99']} ms")
    print(f"full resync, nothing to do: p50 {e['full_resync_noop_ms']['p50']} ms")
    print(f"(1-min load average {out['machine']['loadavg_1min']} on {os.cpu_count()} CPUs)")
    save(NAME_DS if ds else NAME, out)


if __name__ == "__main__":
    main()
