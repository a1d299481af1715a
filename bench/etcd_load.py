#!/usr/bin/env python3
"""etcd requests per node, from the member's /metrics: N real flanneld, direct and via grpc-proxy.

Setup: an etcd namespace holding bridge `br0`, one etcd member and one `etcd
grpc-proxy` on it; N host namespaces, each with `eth0` on that bridge and a real
`flanneld` (host-gw, CNI off, defaults otherwise). Every node is a process of its
own with its own etcd client, as on a real cluster.

For each N (default 10, 30, 100) and each path (straight to the member, then
through the proxy), in turn:

- start: the N flanneld started together, until each one is ready and knows the
  N-1 others (its `flanneld_peers_known`);
- churn: 20 lease puts (new synthetic leases, written by a driver in the etcd
  namespace, one etcd lease for all) until every node knows all 20;
- restart: all N stopped (SIGTERM) and started again, until each one knows every
  peer again (they take their own lease back);
- renewal: one more node with a 6 s TTL (keepalive every 2 s) beside the idle
  fleet for 12 s, to price one renewal and show that nobody else hears of it.

The member's counters (`grpc_server_msg_received_total` per method: one per
unary request, one per LeaseKeepAlive or watch-create message;
`grpc_server_started_total` for Watch streams) are read before and after each
phase, the gauges `etcd_debugging_mvcc_watcher_total` and
`etcd_debugging_mvcc_watch_stream_total` all along (the highest seen) and at
the end of each phase.

Reference, same N and events: flannel's requests for the same phases, counted
from its code (pkg/subnet/etcd/registry.go and local_manager.go, see
docs/etcd.md): a `LeaseTimeToLive` per listed key in each of its two start-up
snapshots, one per PUT event on every watching node, plus its per-node Range,
Grant, Txn/Put and two watchers. Not measured: no flannel binary runs here.

Run as root: .venv/bin/python bench/etcd_load.py [--nodes 10 30 100] [--churn 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-lab"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine, save  # noqa: E402
from netns_lab.etcd import EtcdMember, EtcdProxy  # noqa: E402
from netns_lab.netns import Sandbox, WaitAbort, in_netns, ip, wait_for  # noqa: E402

NAME = "etcd_load"
PY = sys.executable
FLANNELD = str(Path(PY).with_name("flanneld"))
ETCD_IP = "10.200.255.250"
HEALTHZ_PORT = 8471
# Nodes lease in 10.128-10.239; the churn leases live above, where no node takes one.
CONFIG = {"Network": "10.128.0.0/9", "SubnetMin": "10.128.0.0", "SubnetMax": "10.239.255.0",
          "Backend": {"Type": "host-gw"}}
METHODS = ("Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseKeepAlive",
           "LeaseTimeToLive", "LeaseRevoke", "Watch")
GAUGES = {"watchers": "etcd_debugging_mvcc_watcher_total",
          "watch_streams": "etcd_debugging_mvcc_watch_stream_total"}
RENEW_TTL, RENEW_WINDOW = 6, 12.0

# The churn driver: runs in the etcd namespace; one lease, then `n` puts, then prints "ok".
DRIVER = r"""
import asyncio, json, sys
import aetcd
async def main(host, port, prefix, n):
    async with aetcd.Client(host, int(port)) as c:
        lease = await c.lease(3600)
        for i in range(n):
            value = {"PublicIP": f"10.201.{i // 250}.{i % 250 + 1}", "PublicIPv6": None,
                     "BackendType": "host-gw", "BackendData": None}
            await c.put(f"{prefix}/subnets/10.250.{i}.0-24".encode(),
                        json.dumps(value, separators=(",", ":")).encode(), lease=lease)
    print("ok")
asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
"""
DRIVER_REQUESTS = {"LeaseGrant": 1, "Put": 1}  # per run, and Put per lease written

_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([-+0-9.eEinfINFaN]+)$')


# -- etcd's /metrics ----------------------------------------------------------------------

def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """`name -> {labels -> value}` from Prometheus text (labels as written, '' if none)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def requests_by_method(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Messages received per etcdserverpb method, and `Watch streams` opened."""
    out: dict[str, float] = {}
    for labels, value in metrics.get("grpc_server_msg_received_total", {}).items():
        if 'grpc_service="etcdserverpb.' in labels:
            method = re.search(r'grpc_method="(\w+)"', labels)
            if method:
                out[method.group(1)] = value
    for labels, value in metrics.get("grpc_server_started_total", {}).items():
        if 'grpc_service="etcdserverpb.Watch"' in labels:
            out["Watch streams"] = value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def gauges(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {short: metrics.get(name, {}).get("", 0.0) for short, name in GAUGES.items()}


# -- flannel's requests for the same phases, from its code --------------------------------

def flannel_per_node(n: int, churn: int) -> dict[str, dict[str, str]]:
    """flannel's requests per node, from its code, in the columns of our tables.

    At start: GetNetworkConfig (Range); getSubnets (Range, +1 LeaseTimeToLive per key) in
    tryAcquireLease; createSubnet (Grant + Txn), or at a restart updateSubnet (Grant + Put);
    getSubnets again in WatchLeases' reset; getSubnet (Range + 1 LeaseTimeToLive) in
    WatchLease's reset; two watches on one stream. Every PUT event seen while watching costs
    one LeaseTimeToLive more. A fresh node lists 0..N-1 keys and sees the rest as events:
    N..2N-1 in all; at a restart it lists N-1 + churn keys twice and may see N-1 re-PUTs.
    """
    zero = {m: "0" for m in (*METHODS, "Watch streams")}
    return {
        "start": {**zero, "Range": "4", "Txn": "1", "LeaseGrant": "1",
                  "LeaseTimeToLive": f"{n}..{2 * n - 1}", "Watch": "2", "Watch streams": "1"},
        "restart": {**zero, "Range": "4", "Put": "1", "LeaseGrant": "1",
                    "LeaseTimeToLive": f"{2 * (n - 1 + churn) + 1}..{3 * (n - 1) + 2 * churn + 1}",
                    "Watch": "2", "Watch streams": "1"},
        "churn_per_event": {**zero, "LeaseTimeToLive": "1"},
    }


def flannel_arithmetic(n: int, churn: int) -> dict[str, dict[str, Any]]:
    """flannel's cluster-wide LeaseTimeToLive and other requests, per phase, for N nodes.

    - start (fresh, all together): each ordered pair of nodes costs 1 TimeToLive (a PUT
      event seen while watching) to 2 (both snapshots listed the key): N(N-1) .. 2N(N-1),
      plus one per node for its own key;
    - churn: one TimeToLive per PUT event per watching node: churn x N;
    - restart: every key is listed twice by every node, and every node's re-PUT (Grant +
      Put with a new lease) reaches the nodes already watching: 2N(N-1) .. 3N(N-1), the
      churn keys listed twice, plus one per node for its own key. §9.1's "3·N²".
    """
    pairs = n * (n - 1)
    return {
        "start": {"LeaseTimeToLive_min": pairs + n, "LeaseTimeToLive_max": 2 * pairs + n,
                  "Range": 4 * n, "LeaseGrant": n, "Txn": n, "watchers": 2 * n},
        "churn": {"LeaseTimeToLive": churn * n},
        "restart": {"LeaseTimeToLive_min": 2 * pairs + 2 * churn * n + n,
                    "LeaseTimeToLive_max": 3 * pairs + 2 * churn * n + n, "Range": 4 * n,
                    "LeaseGrant": n, "Put": n, "watchers": 2 * n},
        "renewal": {"per renewal": 1 + 1 + (n - 1),  # Grant + Put, then N-1 TimeToLive
                    "note": "every ~23 h per node: Grant + Put, and the PUT reaches all N-1 "
                            "watchers, each answering with a LeaseTimeToLive"},
    }


# -- the fleet ---------------------------------------------------------------------------

@dataclass
class Node:
    index: int
    ns: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"flanneld-{self.index}"

    @property
    def ip(self) -> str:
        return f"10.200.{self.index // 250}.{self.index % 250 + 1}"


@dataclass
class Fleet:
    """The etcd namespace with its bridge, the member and a proxy; host namespaces on demand."""

    box: Sandbox
    etcd_ns: str
    member: EtcdMember
    proxy: EtcdProxy
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, box: Sandbox) -> Fleet:
        ns = box.add_netns("etcd", forwarding=False)
        ip("link", "add", "br0", "type", "bridge", netns=ns)
        ip("link", "set", "br0", "up", netns=ns)
        ip("addr", "add", f"{ETCD_IP}/16", "dev", "br0", netns=ns)
        member = EtcdMember(box, "m0", host=ETCD_IP, netns=ns).start()
        proxy = EtcdProxy(box, "p0", [member.client_url], host=ETCD_IP, netns=ns).start()
        return cls(box, ns, member, proxy)

    def node(self, index: int) -> Node:
        while len(self.nodes) <= index:
            i = len(self.nodes)
            ns = self.box.add_netns(f"h{i}")
            self.box.veth(self.etcd_ns, f"v{i}", ns, "eth0")
            ip("link", "set", f"v{i}", "master", "br0", netns=self.etcd_ns)
            node = Node(i, ns, self.box.state_dir / f"h{i}")
            ip("addr", "add", f"{node.ip}/16", "dev", "eth0", netns=ns)
            node.dir.mkdir(exist_ok=True)
            self.nodes.append(node)
        return self.nodes[index]

    def metrics(self) -> dict[str, dict[str, float]]:
        def get() -> str:
            with urllib.request.urlopen(f"{self.member.client_url}/metrics", timeout=10) as r:
                return str(r.read().decode())
        return parse_metrics(in_netns(self.etcd_ns, get))

    def start(self, node: Node, endpoint: str, prefix: str, *extra: str) -> None:
        node.proc = self.box.spawn(node.name, [
            FLANNELD, "--etcd-endpoints", endpoint, "--etcd-prefix", prefix,
            "--subnet-file", str(node.dir / "subnet.env"), "--state-dir", str(node.dir),
            "--cni-socket", "", "--healthz-port", str(HEALTHZ_PORT), "--iface", "eth0",
            *extra], netns=node.ns, log=node.dir / "flanneld.log")

    def stop(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
                node.proc = None
            self.box.pidfile(node.name).unlink(missing_ok=True)

    def wipe(self, nodes: Sequence[Node]) -> None:
        """Forget the nodes' previous run (subnet.env, state) for a fresh start."""
        for node in nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
            node.dir.mkdir()

    def churn(self, endpoint: str, prefix: str, n: int) -> None:
        host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
        out = subprocess.run(["ip", "netns", "exec", self.etcd_ns, PY, "-c", DRIVER, host, port,
                              prefix, str(n)], capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or out.stdout.strip() != "ok":
            raise RuntimeError(f"churn driver failed: {out.stderr[-2000:]}")


def node_metric(node: Node, name: str) -> float:
    def get() -> str:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())
    for line in in_netns(node.ns, get).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def lease_events(node: Node) -> float:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{HEALTHZ_PORT}/metrics", timeout=5) as r:
            return str(r.read().decode())
    m = parse_metrics(in_netns(node.ns, get))
    return sum(m.get("flanneld_lease_events_total", {}).values())


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Phase:
    """The member's counters around one phase, and its watcher gauges all along."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.t0 = time.monotonic()
        first = fleet.metrics()
        self.before = requests_by_method(first)
        self.gauges_before = gauges(first)
        self.peak = dict(self.gauges_before)

    def sample(self) -> None:
        for k, v in gauges(self.fleet.metrics()).items():
            self.peak[k] = max(self.peak[k], v)

    def wait_nodes(self, nodes: Sequence[Node], peers: int, timeout: float) -> None:
        """Until every node is ready and knows `peers` peer leases; samples the gauges."""
        pending = list(nodes)
        last_sample = 0.0

        def done() -> bool:
            nonlocal pending, last_sample
            if time.monotonic() - last_sample > 0.5:
                self.sample()
                last_sample = time.monotonic()
            still = []
            for node in pending:
                if node.proc is not None and node.proc.poll() is not None:
                    raise WaitAbort(f"{node.name} exited {node.proc.returncode}:\n"
                                    f"{tail(node.dir / 'flanneld.log')}")
                try:
                    ok = (node_metric(node, "flanneld_ready") == 1
                          and node_metric(node, "flanneld_peers_known") == peers)
                except OSError:
                    ok = False
                if not ok:
                    still.append(node)
            pending = still
            return not pending
        wait_for(done, timeout, interval=0.2,
                 what=f"{len(nodes)} nodes to be ready with {peers} peers")

    def end(self, settle: float = 1.0) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        time.sleep(settle)  # the last replies and watch coalescing, before reading
        last = self.fleet.metrics()
        self.sample()
        got = delta(requests_by_method(last), self.before)
        return {"seconds": round(seconds, 2),
                "requests": {m: got.get(m, 0.0) for m in (*METHODS, "Watch streams")},
                "gauges_before": self.gauges_before, "gauges_after": gauges(last),
                "gauges_peak": self.peak}


def per(requests: dict[str, float], by: float) -> dict[str, float]:
    return {k: round(v / by, 3) for k, v in requests.items()}


def run_one(fleet: Fleet, n: int, path: str, churn: int) -> dict[str, Any]:
    """start, churn, restart and renewal for N nodes on one path ("direct" or "proxy")."""
    endpoint = fleet.member.client_url if path == "direct" else fleet.proxy.client_url
    prefix = f"/bench/{os.getpid()}/{path}{n}/network"
    fleet.member.etcdctl("put", f"{prefix}/config", json.dumps(CONFIG))
    nodes = [fleet.node(i) for i in range(n)]
    fleet.wipe(nodes)
    out: dict[str, Any] = {"nodes": n, "path": path, "endpoint": endpoint}
    try:
        phase = Phase(fleet)
        for node in nodes:
            fleet.start(node, endpoint, prefix)
        phase.wait_nodes(nodes, n - 1, 120 + 3 * n)
        out["start"] = phase.end()

        phase = Phase(fleet)
        fleet.churn(endpoint, prefix, churn)
        phase.wait_nodes(nodes, n - 1 + churn, 60 + n)
        res = phase.end()
        for method, count in DRIVER_REQUESTS.items():  # the driver's own writes
            res["requests"][method] -= count * (churn if method == "Put" else 1)
        res["driver_requests_subtracted"] = {"LeaseGrant": 1, "Put": churn}
        out["churn"] = res

        fleet.stop(nodes)
        phase = Phase(fleet)
        for node in nodes:
            fleet.start(node, endpoint, prefix)
        phase.wait_nodes(nodes, n - 1 + churn, 120 + 3 * n)
        out["restart"] = phase.end()

        extra = fleet.node(n)
        fleet.wipe([extra])
        fleet.start(extra, endpoint, prefix, "--subnet-lease-ttl", str(RENEW_TTL))
        Phase(fleet).wait_nodes([extra], n + churn, 60)
        Phase(fleet).wait_nodes(nodes, n + churn, 60)  # they have heard of it
        heard = [lease_events(node) for node in nodes]
        phase = Phase(fleet)
        time.sleep(RENEW_WINDOW)
        res = phase.end(settle=0)
        res["renew_interval_s"] = RENEW_TTL / 3
        res["window_s"] = RENEW_WINDOW
        res["fleet_lease_events_during"] = sum(lease_events(node) for node in nodes) - sum(heard)
        out["renewal"] = res
        fleet.stop([extra])
    finally:
        fleet.stop([*nodes, *fleet.nodes[n:n + 1]])
    s, c, r = out["start"]["requests"], out["churn"]["requests"], out["restart"]["requests"]
    out["per_node"] = {"start": per(s, n), "restart": per(r, n),
                       "churn_per_event": per(c, n * churn)}
    rn = out["renewal"]["requests"]
    renewals = rn["LeaseKeepAlive"] or 1.0
    out["per_renewal"] = {"renewals_seen": rn["LeaseKeepAlive"],
                          "expected": RENEW_WINDOW / (RENEW_TTL / 3),
                          **{k: round(v / renewals, 3) for k, v in rn.items() if v}}
    out["watchers_added"] = {
        phase: out[phase]["gauges_after"]["watchers"] - out["start"]["gauges_before"]["watchers"]
        for phase in ("start", "churn", "restart")}
    out["watchers_added_peak"] = max(
        out[phase]["gauges_peak"]["watchers"] for phase in ("start", "churn", "restart")
    ) - out["start"]["gauges_before"]["watchers"]
    out["flannel"] = f = flannel_arithmetic(n, churn)
    out["flannel_per_node"] = flannel_per_node(n, churn)
    phases = ("start", "churn", "restart")
    out["total_requests"] = sum(v for p in phases for k, v in out[p]["requests"].items()
                                if k != "Watch streams")
    # flannel, same phases: Range/Grant/Txn|Put per node twice, watch creates 2 per node
    # twice, and the LeaseTimeToLive above
    fixed = 2 * (f["start"]["Range"] + f["start"]["LeaseGrant"] + f["start"]["Txn"]
                 + f["start"]["watchers"])
    out["flannel_total_requests"] = [
        fixed + f["start"]["LeaseTimeToLive_min"] + f["churn"]["LeaseTimeToLive"]
        + f["restart"]["LeaseTimeToLive_min"],
        fixed + f["start"]["LeaseTimeToLive_max"] + f["churn"]["LeaseTimeToLive"]
        + f["restart"]["LeaseTimeToLive_max"]]
    return out


# -- report ------------------------------------------------------------------------------

def table(rows: Iterable[Sequence[Any]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                               enumerate(zip(r, widths, strict=True))) for r in rows)


def fmt(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) > 1e-9 else str(round(v))


def report(runs: list[dict[str, Any]], churn: int) -> None:
    cols = ("Range", "Txn", "Put", "LeaseGrant", "LeaseKeepAlive", "LeaseTimeToLive",
            "LeaseRevoke", "Watch", "Watch streams")
    for phase, what in (("start", "per node at start"), ("restart", "per node at restart"),
                        ("churn_per_event", "per node per lease event")):
        print(f"\nmember requests {what} (ours, measured; Watch = watch-create messages):")
        rows: list[Sequence[Any]] = [("N", "path", *cols)]
        for i, r in enumerate(runs):
            rows.append((r["nodes"], r["path"], *(fmt(r["per_node"][phase][c]) for c in cols)))
            if i + 1 == len(runs) or runs[i + 1]["nodes"] != r["nodes"]:
                f = flannel_per_node(r["nodes"], churn)[phase]
                rows.append((r["nodes"], "flannel (code)", *(f[c] for c in cols)))
        print(table(rows))
    print("\ncluster-wide LeaseTimeToLive, ours measured vs flannel's arithmetic:")
    rows = [("N", "path", "start: ours", "flannel", f"churn {churn}: ours", "flannel",
             "restart: ours", "flannel", "start Range ours/flannel")]
    for r in runs:
        f = r["flannel"]
        rows.append((r["nodes"], r["path"], fmt(r["start"]["requests"]["LeaseTimeToLive"]),
                     f"{f['start']['LeaseTimeToLive_min']}..{f['start']['LeaseTimeToLive_max']}",
                     fmt(r["churn"]["requests"]["LeaseTimeToLive"]), f["churn"]["LeaseTimeToLive"],
                     fmt(r["restart"]["requests"]["LeaseTimeToLive"]),
                     f"{f['restart']['LeaseTimeToLive_min']}..{f['restart']['LeaseTimeToLive_max']}",
                     f"{fmt(r['start']['requests']['Range'])}/{f['start']['Range']}"))
    print(table(rows))
    print("\nmember watchers added by the fleet (gauge after each phase, highest seen; flannel "
          "straight to the member: 2 per node):")
    rows = [("N", "path", "after start", "after churn", "after restart", "peak", "streams")]
    for r in runs:
        w = r["watchers_added"]
        streams = r["start"]["gauges_after"]["watch_streams"] - \
            r["start"]["gauges_before"]["watch_streams"]
        rows.append((r["nodes"], r["path"], fmt(w["start"]), fmt(w["churn"]),
                     fmt(w["restart"]), fmt(r["watchers_added_peak"]), fmt(streams)))
    print(table(rows))
    print("\none renewal (a node with a 6 s TTL beside the idle fleet, 12 s): member requests "
          "per keepalive, and lease events the fleet heard meanwhile:")
    rows = [("N", "path", "renewals", "per renewal", "fleet events")]
    for r in runs:
        p = r["per_renewal"]
        rows.append((r["nodes"], r["path"], fmt(p["renewals_seen"]),
                     ", ".join(f"{k} {fmt(v)}" for k, v in p.items()
                               if k not in ("renewals_seen", "expected")),
                     fmt(r["renewal"]["fleet_lease_events_during"])))
    print(table(rows))


def headline(runs: list[dict[str, Any]], churn: int) -> dict[str, str]:
    """The summary figures (docs/benchmarks.md) for the biggest N: ours / flannel's."""
    direct = {r["nodes"]: r for r in runs if r["path"] == "direct"}
    proxy = {r["nodes"]: r for r in runs if r["path"] == "proxy"}
    out: dict[str, str] = {}
    if not direct:
        return out
    n = max(direct)
    d, f = direct[n], direct[n]["flannel"]
    phases = ("start", "churn", "restart")
    ttl = sum(d[p]["requests"]["LeaseTimeToLive"] for p in phases)
    low = sum(f[p].get("LeaseTimeToLive_min", f[p].get("LeaseTimeToLive", 0)) for p in phases)
    high = sum(f[p].get("LeaseTimeToLive_max", f[p].get("LeaseTimeToLive", 0)) for p in phases)
    unary = [m for m in METHODS if m != "Watch"]
    out[f"member requests per node at start, N={n}: ours / flannel's"] = (
        f"{fmt(sum(d['per_node']['start'][m] for m in unary))} / "
        f"{4 + 1 + 1 + (n - 1) + 1}..{4 + 1 + 1 + 2 * (n - 1) + 1}")
    out[f"LeaseTimeToLive, N={n}, start + {churn} puts + restart: ours / flannel's"] = (
        f"{fmt(ttl)} / {low}..{high}")
    out["member requests per node per lease event: ours / flannel's"] = (
        f"{fmt(sum(d['per_node']['churn_per_event'][m] for m in unary))} / 1")
    if n in proxy:
        out[f"member watchers added by {n} nodes: direct / through grpc-proxy"] = (
            f"{fmt(d['watchers_added']['start'])} / "
            f"{fmt(proxy[n]['watchers_added']['start'])}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--churn", type=int, default=20, help="lease puts in the churn phase")
    ap.add_argument("--paths", nargs="+", choices=["direct", "proxy"],
                    default=["direct", "proxy"])
    ap.add_argument("--keep-logs", type=Path, help="copy every flanneld log here at the end")
    args = ap.parse_args()
    if not is_root():
        return 1
    before = machine()
    box = Sandbox.scratch()
    runs = []
    try:
        fleet = Fleet.create(box)
        for n in args.nodes:
            for path in args.paths:
                print(f"== {n} nodes, {path}", flush=True)
                runs.append(run_one(fleet, n, path, args.churn))
                r = runs[-1]
                print(f"   start {r['start']['seconds']} s, restart {r['restart']['seconds']} s, "
                      f"member watchers added {r['watchers_added']['start']}", flush=True)
    finally:
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in box.state_dir.glob("**/*.log"):
                shutil.copy(log, args.keep_logs / f"{log.parent.name}-{log.name}")
        box.cleanup()
    report(runs, args.churn)
    result: dict[str, Any] = {
        "benchmark": NAME, "nodes": args.nodes, "churn": args.churn,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": before,
        "loadavg_after": list(os.getloadavg()), "runs": runs}
    ratios = headline(runs, args.churn)
    result["ratios"] = ratios
    save(NAME, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
