#!/usr/bin/env python3
"""Scale curves, 1000 to 10000 vxlan peers: programming, one event, resync, RSS, ready.

Each figure is measured at every size against a reference measured in the same run:

- initial programming of N peers (3N kernel entries): ours (create_backend +
  lease_attrs + reconcile, as bench/programming.py) against `ip -batch` +
  `bridge -batch` + `ip -batch` with the files written beforehand;
- one new lease among N, backend only: `reconcile_changes` (the daemon's incremental
  path) until every netlink request is acknowledged, split into the time inside the
  netlink round trips and the CPU outside them; the reference is the kernel floor,
  the same three requests (neighbour + FDB, then the route) sent already encoded on a
  bare socket, interleaved with ours (`ip -batch` per event costs ~10 ms of process
  start alone, which would hide the figure);
- a full resync that finds nothing to change (dump + diff of 3N entries, 5 times) against
  reading the same tables with iproute2 (`ip -batch` route + neighbour show,
  `bridge fdb show`);
- the real daemon: N leases in etcd (its own namespace), `flanneld` in a host
  namespace (vxlan, --resync-interval 2). Time to ready (spawn until /metrics says
  ready with all N programmed) against a fresh process listing the N leases with aetcd
  plus the `ip -batch` programming above; RSS after the first resyncs against flanneld
  with 0 peers (per peer: the difference / N); one new lease put in etcd until its route
  is in the kernel against a plain aetcd watch on the same prefix (bench/daemon_latency.py's
  driver).

Goals (issue 14): one event among 5000 <= 1.3x the same event among 1000 (p50 and p99);
RSS <= 2.5 KB per peer, 5000 peers < 60 MB.
Run as root: .venv/bin/python bench/scale.py [--sizes 1000,2000,5000,10000] [--events N]
[--daemon-events N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "netns-lab"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine, save  # noqa: E402
from daemon_latency import DRIVER, bucket_quantile  # noqa: E402
from daemon_latency import _histogram as flanneld_histograms  # noqa: E402
from flanneld_resources import NETWORK, metric, rss_mb  # noqa: E402
from netns_lab.etcd import EtcdMember  # noqa: E402
from netns_lab.netns import Sandbox, ip, run, wait_for  # noqa: E402
from programming import Bench, batch_lines, peer  # noqa: E402

from backends import create_backend  # noqa: E402
from backends.base import IncrementalBackend  # noqa: E402
from backends.engine import _encode  # noqa: E402
from backends.state import RouteSpec  # noqa: E402
from netlink.rtnl import RtNetlink  # noqa: E402

NAME = "scale"
SIZES = (1000, 2000, 5000, 10000)
GOAL_EVENT_RATIO, GOAL_KB_PER_PEER, GOAL_RSS_5000_MB = 1.3, 2.5, 60.0
PY = sys.executable
FLANNELD = str(Path(PY).with_name("flanneld"))
ETCD_IP = "10.200.255.250"
RESYNC_S = 2.0

# The leases of bench/flanneld_resources.py's writer, in transactions of 100 puts: 10000
# leases in about a second instead of ten.
WRITER = r"""
import asyncio, json, sys
import aetcd
async def main(host, prefix, n):
    async with aetcd.Client(host, 2379) as c:
        await c.put(f"{prefix}/config".encode(), json.dumps({"Network": "NETWORK",
            "Backend": {"Type": "vxlan"}}).encode())
        ops = []
        for i in range(n):
            third, fourth = divmod(i + 1, 250)
            subnet = f"10.{128 + (i + 2) // 256}.{(i + 2) % 256}.0"
            mac = "0e:{:02x}:{:02x}:00:00:01".format(*divmod(i, 256))
            value = {"PublicIP": f"10.201.{third}.{fourth + 1}", "PublicIPv6": None,
                     "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": mac}}
            ops.append(c.transactions.put(f"{prefix}/subnets/{subnet}-24".encode(),
                                          json.dumps(value, separators=(",", ":")).encode()))
            if len(ops) == 100 or i == n - 1:
                await c.transaction(compare=[], success=ops, failure=[])
                ops = []
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""".replace("NETWORK", NETWORK)

# The ready reference's etcd half: what any node must do before it can program its peers.
LISTER = r"""
import asyncio, sys
import aetcd
async def main(host, prefix):
    async with aetcd.Client(host, 2379) as c:
        print(len(await c.get_prefix(f"{prefix}/subnets/".encode())))
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"n": len(s), "p50": round(statistics.median(s), 3),
            "p99": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3), "max": round(s[-1], 3)}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- backend only --------------------------------------------------------------------------


class Timed:
    """Wraps a backend's RtNetlink.apply: the time spent inside netlink round trips."""

    def __init__(self, nl: RtNetlink) -> None:
        self.inner, self.spent = nl.apply, 0.0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner(*a, **kw)
        finally:
            self.spent += time.perf_counter() - t0


class Sized:
    """One size's backend, programmed and kept for the events and resyncs."""

    def __init__(self, bench: Bench, n: int) -> None:
        self.bench, self.n = bench, n
        self.peers = [peer(i) for i in range(n)]
        self.ns = ""
        self.be: Any = None
        self.timed: Timed | None = None
        self.current: list[Any] | None = None
        self.figures: dict[str, list[float]] = {k: [] for k in (
            "ours", "ref", "add", "inside", "outside", "remove", "floor", "resync", "show")}

    def reference(self) -> None:
        bench = self.bench
        ns, _ = bench.fresh_ns()
        files = []
        for name, lines in batch_lines(self.peers, False).items():
            path = bench.tmp / f"{ns}.{name}"
            path.write_text("\n".join(lines) + "\n")
            files.append(str(path))
        t0 = time.perf_counter()
        for cmd in (["ip", "-n", ns, "-batch", files[0]],
                    ["bridge", "-n", ns, "-batch", files[1]],
                    ["ip", "-n", ns, "-batch", files[2]]):
            subprocess.run(cmd, check=True, capture_output=True)
        self.figures["ref"].append((time.perf_counter() - t0) * 1e3)
        assert bench.count(ns) == (self.n,) * 3, bench.count(ns)
        bench.drop(ns)

    def ours(self, keep: bool) -> None:
        """Programme every peer from nothing; `keep` the backend for the events."""
        bench = self.bench
        ns, ext = bench.fresh_ns()
        state = bench.tmp / ns
        state.mkdir()
        own = bench.own
        t0 = time.perf_counter()
        be = create_backend(bench.config, ext, state, netns=ns)
        be.lease_attrs()
        result = be.reconcile(own, [own, *self.peers])
        self.figures["ours"].append((time.perf_counter() - t0) * 1e3)
        assert not result.errors and result.programmed_peers == self.n, result.summary()
        assert bench.count(ns) == (self.n,) * 3
        if not keep:
            be.close()
            bench.drop(ns)
            return
        self.ns, self.be = ns, be
        # An earlier tree (bench/side_by_side.py) has no reconcile_changes: its daemon
        # handed the backend the whole list at every event, as `event` then does.
        self.current = None if isinstance(be, IncrementalBackend) else [own, *self.peers]
        self.timed = Timed(self.be.nl)
        self.be.nl.apply = self.timed

    def event(self, i: int) -> None:
        """One new lease and its removal, then the kernel floor for the same requests."""
        be, timed, f = self.be, self.timed, self.figures
        assert timed is not None
        own, n, dev = self.bench.own, self.n, be.dev_index
        new = peer(n + 2 * i)
        current = self.current
        if current is not None:
            current.append(new)
        timed.spent = 0.0
        t0 = time.perf_counter()
        r = (be.reconcile_changes(own, {new.key: new}) if current is None
             else be.reconcile(own, current, full=False))
        took = time.perf_counter() - t0
        assert r.added == ONE and not r.errors, r.summary()
        f["add"].append(took * 1e3)
        f["inside"].append(timed.spent * 1e3)
        f["outside"].append((took - timed.spent) * 1e3)
        if current is not None:
            current.pop()
        t0 = time.perf_counter()
        r = (be.reconcile_changes(own, {new.key: None}) if current is None
             else be.reconcile(own, current, full=False))
        f["remove"].append((time.perf_counter() - t0) * 1e3)
        assert r.removed == ONE, r.summary()
        # the kernel floor: the same requests, encoded beforehand, on the same socket
        other = peer(n + 2 * i + 1)
        s0, mac, dst = (str(other.subnet.network_address), other.attrs.vtep_mac or "",
                        str(other.attrs.public_ip))
        route = (str(other.subnet), RouteSpec(s0, dev, onlink=True))
        first = [_encode(dev, "neigh", (s0, mac)), _encode(dev, "fdb", (mac, dst))]
        second = [_encode(dev, "route", route)]
        t0 = time.perf_counter()
        res = timed.inner(first) + timed.inner(second)
        f["floor"].append((time.perf_counter() - t0) * 1e3)
        assert not any(err for err, _ in res), res
        timed.inner([_encode(dev, "route-", route), _encode(dev, "neigh-", s0),
                     _encode(dev, "fdb-", (mac, dst))])

    def resync(self) -> None:
        own, f = self.bench.own, self.figures
        t0 = time.perf_counter()
        r = self.be.reconcile(own, [own, *self.peers], full=True)
        f["resync"].append((time.perf_counter() - t0) * 1e3)
        assert not r.changed and not r.errors, r.summary()
        t0 = time.perf_counter()
        subprocess.run(["ip", "-n", self.ns, "-batch", "-"], input="route show table main\n"
                       "neigh show dev flannel.1\n", check=True, capture_output=True, text=True)
        subprocess.run(["bridge", "-n", self.ns, "fdb", "show", "dev", "flannel.1"],
                       check=True, capture_output=True)
        f["show"].append((time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        if self.be is not None:
            self.be.close()
            self.bench.drop(self.ns)
            self.be = None

    def result(self) -> dict[str, Any]:
        f = self.figures
        ours, ref = median(f["ours"]), median(f["ref"])
        return {
            "initial_programming_ms": {
                "ours": round(ours, 1), "ip_bridge_batch": round(ref, 1),
                "ratio": round(ours / ref, 2),
                "runs": {"ours": [round(x, 1) for x in f["ours"]],
                         "ip_bridge_batch": [round(x, 1) for x in f["ref"]]}},
            "event_ms": {"total": stats(f["add"]), "inside_netlink": stats(f["inside"]),
                         "outside_netlink": stats(f["outside"]),
                         "kernel_floor": stats(f["floor"])},
            "removal_ms": stats(f["remove"]),
            "full_resync_ms": {"ours": stats(f["resync"]), "iproute2_show": stats(f["show"]),
                               "ratio": round(median(f["resync"]) / median(f["show"]), 2)},
        }


ONE = {"neigh": 1, "fdb": 1, "route": 1}


def backend_curves(box: Sandbox, sizes: list[int], rounds: int, events: int
                   ) -> dict[int, dict[str, Any]]:
    """Every size programmed, then events and resyncs round-robin over the sizes, so
    the box's load (shared with other work) falls on every size alike."""
    bench = Bench(box)
    sized = {n: Sized(bench, n) for n in sizes}
    try:
        for r in range(rounds):
            for n in sizes:
                if n < 10000 or r < max(1, rounds - 1):  # 10000 peers: one round less
                    sized[n].reference()
                    sized[n].ours(keep=r == 0)
        for i in range(events):
            for n in sizes:
                if n < 10000 or i < events // 2:  # 10000 peers: half as many events
                    sized[n].event(i)
        for _ in range(5):
            for n in sizes:
                sized[n].resync()
        return {n: sz.result() for n, sz in sized.items()}
    finally:
        for sz in sized.values():
            sz.close()


# --- the daemon ----------------------------------------------------------------------------


class Node:
    """flanneld among n peers in a host namespace of its own, on the shared etcd."""

    def __init__(self, box: Sandbox, etcd_url: str, etcd_ns: str, n: int) -> None:
        self.box, self.etcd_url, self.n = box, etcd_url, n
        self.short = f"d{n}"
        self.host = box.add_netns(self.short)
        box.veth(self.host, "eth0", etcd_ns, f"to{self.short}")
        ip("link", "set", f"to{self.short}", "master", "br0", netns=etcd_ns)
        ip("addr", "add", f"10.200.{n // 250 % 250}.{n % 250 + 1}/16", "dev", "eth0",
           netns=self.host)
        self.prefix = f"/scale/{os.getpid()}/p{n}"
        self.name = f"flanneld-{self.short}"
        self.out: dict[str, Any] = {}
        self.adds: list[dict[str, float]] = []
        self.hist0: dict[str, dict[str, float]] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self) -> None:
        self._in_host(WRITER, str(self.n))

    def _in_host(self, code: str, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.host, PY, "-c", code, ETCD_IP,
                               self.prefix, *argv], check=True, capture_output=True,
                              text=True).stdout

    def list_reference(self) -> float:
        """Seconds for a fresh process to list the leases (median of 3, after a warm-up)."""
        took = []
        for _ in range(4):
            t0 = time.perf_counter()
            assert int(self._in_host(LISTER)) == self.n
            took.append(time.perf_counter() - t0)
        return median(took[1:])

    def start(self) -> float:
        """Seconds from spawning flanneld until it is ready with every peer programmed."""
        state = self.box.state_dir / self.short
        state.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        self.proc = proc = self.box.spawn(self.name, [
            FLANNELD, "--etcd-endpoints", self.etcd_url, "--etcd-prefix", self.prefix,
            "--subnet-file", str(state / "subnet.env"), "--state-dir", str(state),
            "--cni-socket", "", "--healthz-port", "8471", "--iface", "eth0",
            "--resync-interval", str(RESYNC_S)], netns=self.host)
        try:
            wait_for(lambda: proc.poll() is None and self.metric("flanneld_ready") == 1
                     and self.metric("flanneld_peers_programmed") == self.n, 300,
                     interval=0.05, what=f"flanneld to program {self.n} peers")
        except TimeoutError:
            print((self.box.state_dir / f"{self.name}.log").read_text()[-3000:],
                  file=sys.stderr)
            raise
        return time.perf_counter() - t0

    def metric(self, name: str) -> float:
        return metric(self.host, name)

    def rss(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def events(self, count: int) -> None:
        """`count` new leases put in etcd, each until its route is in the kernel (and
        the etcd watch's view of the same put: the reference)."""
        if not self.hist0:
            self.hist0 = flanneld_histograms(self.host)
        rows = [json.loads(line) for line in self._in_host(DRIVER, str(count)).splitlines()
                if line.startswith("{")]
        self.adds += [r for r in rows if r["action"] == "add"]

    def finish(self) -> dict[str, Any]:
        out = self.out
        if self.adds:
            hist1 = flanneld_histograms(self.host)
            pair = hist1["event_to_kernel"], self.hist0["event_to_kernel"]
            out["event_ms"] = {"flanneld": stats([r["kernel_ms"] for r in self.adds]),
                               "etcd_watch": stats([r["watch_ms"] for r in self.adds])}
            out["own_event_to_kernel_ms"] = {"p50_bucket": bucket_quantile(*pair, 0.5),
                                             "p99_bucket": bucket_quantile(*pair, 0.99)}
            out["rss_after_events_mb"] = round(self.rss(), 1)
        count = self.metric('flanneld_reconcile_duration_seconds_count{mode="full"}')
        total = self.metric('flanneld_reconcile_duration_seconds_sum{mode="full"}')
        out["daemon_full_runs"] = {"count": int(count), "mean_ms": round(1e3 * total / count, 1)
                                   if count > 0 else None}
        return out

    def stop(self) -> None:
        self.box.kill(self.name)
        run(["ip", "netns", "del", self.host], check=False)  # its 3N entries go with it


def daemon_curves(box: Sandbox, sizes: list[int], events: int,
                  ip_batch_ms: dict[int, float]) -> tuple[dict[str, Any], dict[int, Any]]:
    """flanneld with 0 peers and at every size, all running at once: each started and
    timed to ready in turn (the others idle), then RSS, then events round-robin."""
    etcd_ns = box.add_netns("etcd", forwarding=False)
    ip("link", "add", "br0", "type", "bridge", netns=etcd_ns)
    ip("addr", "add", f"{ETCD_IP}/16", "dev", "br0", netns=etcd_ns)
    ip("link", "set", "br0", "up", netns=etcd_ns)
    etcd = EtcdMember(box, "scale", host=ETCD_IP, netns=etcd_ns).start()
    nodes = {n: Node(box, etcd.client_url, etcd_ns, n) for n in [0, *sizes]}
    try:
        for node in nodes.values():
            node.write()
        for n, node in nodes.items():
            listed = node.list_reference()
            node.out = {"ready_s": round(node.start(), 2), "ready_reference_s": {
                "etcd_list_fresh_process": round(listed, 2),
                "ip_bridge_batch": round(ip_batch_ms.get(n, 0.0) / 1e3, 2),
                "total": round(listed + ip_batch_ms.get(n, 0.0) / 1e3, 2)}}
        time.sleep(2 * RESYNC_S + 1)  # past the first resyncs after start-up (a full run)
        for node in nodes.values():
            node.out["rss_mb"] = round(node.rss(), 1)
        rounds = 4
        for _ in range(rounds):
            for n in sizes:
                share = (events if n < 10000 else events // 2) // rounds
                if share:
                    nodes[n].events(share)
        results = {n: node.finish() for n, node in nodes.items()}
    finally:
        for node in nodes.values():
            node.stop()
    zero = results.pop(0)
    below = (0, zero["rss_mb"])
    for n, d in sorted(results.items()):
        d["rss_per_peer_kb"] = round((d["rss_mb"] - zero["rss_mb"]) * 1024 / n, 2)
        # what one more peer costs, from the next smaller size up (no fixed costs in it)
        d["rss_slope_kb_per_peer"] = round((d["rss_mb"] - below[1]) * 1024 / (n - below[0]), 2)
        below = (n, d["rss_mb"])
    return zero, results


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--events", type=int, default=200,
                    help="backend events per size (10000 peers: half)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="initial programming rounds per size (10000 peers: one less)")
    ap.add_argument("--daemon-events", type=int, default=100,
                    help="put -> route events through the daemon per size (10000: half)")
    args = ap.parse_args()
    if not is_root():
        return 1
    sizes = sorted(int(s) for s in args.sizes.split(","))
    before = machine()
    started = time.monotonic()
    box = Sandbox.scratch()
    try:
        by_size = backend_curves(box, sizes, args.rounds, args.events)
        for n in sizes:
            print(f"backend {n}: {json.dumps(by_size[n])}", flush=True)
        zero, daemons = daemon_curves(box, sizes, args.daemon_events, {
            n: by_size[n]["initial_programming_ms"]["ip_bridge_batch"] for n in sizes})
        for n, d in daemons.items():
            by_size[n]["daemon"] = d
            print(f"daemon {n}: {json.dumps(d)}", flush=True)
    finally:
        box.cleanup()

    result: dict[str, Any] = {
        "benchmark": NAME, "sizes": sizes, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": before, "loadavg_after": list(os.getloadavg()),
        "seconds": round(time.monotonic() - started, 1),
        "settings": {"events": args.events, "daemon_events": args.daemon_events,
                     "rounds": args.rounds, "resync_interval_s": RESYNC_S},
        "flanneld_0_peers": zero, "by_size": {str(n): v for n, v in by_size.items()},
        "goals": {"event_ratio_max": GOAL_EVENT_RATIO, "kb_per_peer_max": GOAL_KB_PER_PEER,
                  "rss_5000_mb_max": GOAL_RSS_5000_MB},
    }
    result["ratios"] = ratios(result)
    report(result)
    save(NAME, result)
    return 0


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    """Large against small: the event figures at the largest size <= 5000 over 1000."""
    s = r["by_size"]
    small = "1000" if "1000" in s else str(min(r["sizes"]))
    big = "5000" if "5000" in s else str(max(r["sizes"]))
    out: dict[str, Any] = {"sizes": f"{big} / {small}"}
    for what, get in (
            ("backend CPU outside netlink", lambda d: d["event_ms"]["outside_netlink"]),
            ("backend total", lambda d: d["event_ms"]["total"]),
            ("kernel floor (reference)", lambda d: d["event_ms"]["kernel_floor"]),
            ("daemon put -> route", lambda d: d["daemon"]["event_ms"]["flanneld"]),
            ("etcd watch (reference)", lambda d: d["daemon"]["event_ms"]["etcd_watch"])):
        try:
            a, b = get(s[small]), get(s[big])
        except KeyError:
            continue
        out[what] = {q: round(b[q] / a[q], 2) if a[q] else None for q in ("p50", "p99")}
    return out


def report(r: dict[str, Any]) -> None:
    s, zero = r["by_size"], r["flanneld_0_peers"]
    print(f"scale, vxlan, sizes {r['sizes']} ({r['seconds']} s):")
    print(f"{'peers':>6} | {'programming ms':>22} | {'one event p50/p99 ms':>38} | "
          f"{'resync ms':>16} | {'RSS MB':>13} | {'ready s':>12}")
    print(f"{'':>6} | {'ours':>10} {'ip -batch':>11} | {'CPU':>11} {'total':>12} "
          f"{'kernel':>12} | {'ours':>7} {'ip show':>8} | {'all':>5} {'KB/peer':>7} | "
          f"{'ours':>5} {'ref':>6}")
    for n in r["sizes"]:
        d = s[str(n)]
        e, dm = d["event_ms"], d.get("daemon", {})
        ev = " ".join(f"{e[k]['p50']:.3f}/{e[k]['p99']:.2f}" for k in
                      ("outside_netlink", "total", "kernel_floor"))
        print(f"{n:>6} | {d['initial_programming_ms']['ours']:>10.1f} "
              f"{d['initial_programming_ms']['ip_bridge_batch']:>11.1f} | {ev} | "
              f"{d['full_resync_ms']['ours']['p50']:>7.1f} "
              f"{d['full_resync_ms']['iproute2_show']['p50']:>8.1f} | "
              f"{dm.get('rss_mb', 0):>5.1f} {dm.get('rss_per_peer_kb', 0):>7.2f} | "
              f"{dm.get('ready_s', 0):>5.2f} "
              f"{dm.get('ready_reference_s', {}).get('total', 0):>6.2f}")
    print(f"  flanneld with 0 peers: RSS {zero['rss_mb']} MB, ready {zero['ready_s']} s")
    for n in r["sizes"]:
        dm = s[str(n)].get("daemon", {})
        if "event_ms" in dm:
            f, w = dm["event_ms"]["flanneld"], dm["event_ms"]["etcd_watch"]
            print(f"  {n:>5} peers, put -> route: flanneld p50 {f['p50']:.2f} p99 {f['p99']:.2f} "
                  f"ms, etcd watch (reference) p50 {w['p50']:.2f} p99 {w['p99']:.2f} ms; "
                  f"flanneld's own event -> kernel p99 <= "
                  f"{dm['own_event_to_kernel_ms']['p99_bucket']} ms")
    print(f"  one event, {r['ratios']['sizes']} peers (goal <= {GOAL_EVENT_RATIO}):")
    for what, q in r["ratios"].items():
        if isinstance(q, dict):
            print(f"    {what:30} p50 x{q['p50']}  p99 x{q['p99']}")
    kb = [s[str(n)]["daemon"]["rss_per_peer_kb"] for n in r["sizes"] if "daemon" in s[str(n)]]
    slope = [s[str(n)]["daemon"]["rss_slope_kb_per_peer"] for n in r["sizes"]
             if "daemon" in s[str(n)]]
    if kb:
        print(f"  RSS per peer {min(kb)}..{max(kb)} KB over 0 peers, {min(slope)}..{max(slope)} "
              f"KB from one size to the next (goal <= {GOAL_KB_PER_PEER})"
              + (f"; 5000 peers {s['5000']['daemon']['rss_mb']} MB (goal < {GOAL_RSS_5000_MB}, "
                 f"0 peers {zero['rss_mb']} MB)" if "5000" in s else ""))
    print(f"  (1-min load average {r['machine']['loadavg'][0]:.1f} -> "
          f"{r['loadavg_after'][0]:.1f} on {r['machine']['cpus']} CPUs)")


if __name__ == "__main__":
    sys.exit(main())
