#!/usr/bin/env python3
"""Event-to-kernel delay through the real daemon: one new lease among 1000, until its route.

Setup: a host namespace and an etcd namespace joined by a veth; 1000 synthetic
vxlan leases in etcd; a real `flanneld` in the host namespace (defaults, CNI off).
Once it has programmed all of them, an in-namespace driver, N times:

- subscribes to rtnetlink route notifications (RTMGRP_IPV4_ROUTE), like `ip monitor`;
- writes one new lease to etcd (and, after it appeared, deletes it again);
- times from just before the put until the kernel announces the new route.

Reference, same run: a plain aetcd watch on the same prefix in the driver, i.e.
from the put until any etcd watcher can know about it. The ratio daemon / watch
is what flanneld itself adds (decode, validate, reconcile, netlink). The
backend-level figure (reconcile only) is bench/programming.py's.

Run as root: .venv/bin/python bench/daemon_latency.py [--peers N] [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-lab"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine, save  # noqa: E402
from flanneld_resources import WRITER, metric  # noqa: E402
from netns_lab.etcd import EtcdMember  # noqa: E402
from netns_lab.netns import Sandbox, ip, wait_for  # noqa: E402

NAME = "daemon_latency"
PY = sys.executable
FLANNELD = str(Path(PY).with_name("flanneld"))
ETCD_IP = "10.200.255.250"

# The driver: runs inside the host namespace, prints one JSON line per event.
DRIVER = r"""
import asyncio, json, socket, sys, time
import aetcd
from netlink.base import iter_attrs, iter_msgs
from netlink.uapi import AF_INET, RTA_DST, RTM_DELROUTE, RTM_NEWROUTE, RTMGRP_IPV4_ROUTE, RTMSG

def routes_seen(sock):
    out = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return out
        for kind, _flags, _seq, off, end in iter_msgs(data, len(data)):
            if kind in (RTM_NEWROUTE, RTM_DELROUTE):
                fam, dlen = RTMSG.unpack_from(data, off)[:2]
                for atype, a, b in iter_attrs(data, off + RTMSG.size, end):
                    if atype == RTA_DST and fam == AF_INET:
                        out.append((kind, socket.inet_ntoa(data[a:b]) + f"/{dlen}"))

async def main(host, prefix, n):
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    nl.bind((0, RTMGRP_IPV4_ROUTE))
    loop = asyncio.get_running_loop()
    async with aetcd.Client(host, 2379) as c:
        watch = await c.watch_prefix(f"{prefix}/subnets/".encode())
        it = watch.__aiter__()
        for i in range(n):
            subnet = f"10.250.{i % 250}.0"
            key = f"{prefix}/subnets/{subnet}-24".encode()
            mac = "0e:ff:{:02x}:00:00:02".format(i % 250)
            value = json.dumps({"PublicIP": f"10.202.0.{i % 250 + 1}", "PublicIPv6": None,
                                "BackendType": "vxlan",
                                "BackendData": {"VNI": 1, "VtepMAC": mac}},
                               separators=(",", ":")).encode()
            for action in ("add", "del"):
                routes_seen(nl)  # drop what came before
                want = RTM_NEWROUTE if action == "add" else RTM_DELROUTE
                fut = loop.create_future()
                def ready():
                    for kind, dst in routes_seen(nl):
                        if kind == want and dst == f"{subnet}/24" and not fut.done():
                            fut.set_result(time.perf_counter())
                loop.add_reader(nl.fileno(), ready)
                t0 = time.perf_counter()
                if action == "add":
                    await c.put(key, value)
                else:
                    await c.delete(key)
                ev = await it.__anext__()
                t_watch = time.perf_counter()
                t_kernel = await asyncio.wait_for(fut, 10)
                loop.remove_reader(nl.fileno())
                print(json.dumps({"action": action, "watch_ms": (t_watch - t0) * 1e3,
                                  "kernel_ms": (t_kernel - t0) * 1e3}), flush=True)
            await asyncio.sleep(0.05)
        await watch.cancel()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p99": round(pct(values, 0.99), 2),
            "mean": round(statistics.fmean(values), 2), "n": len(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--resync-interval", type=float, default=10.0,
                    help="flanneld's --resync-interval (the lab uses 2)")
    ap.add_argument("--keep-log", action="store_true", help="print flanneld's log at the end")
    args = ap.parse_args()
    if not is_root():
        return 1
    before = machine()
    box = Sandbox.scratch()
    try:
        etcd_ns = box.add_netns("etcd", forwarding=False)
        host = box.add_netns("h")
        box.veth(host, "eth0", etcd_ns, "toh")
        ip("addr", "add", "10.200.0.1/16", "dev", "eth0", netns=host)
        ip("addr", "add", f"{ETCD_IP}/16", "dev", "toh", netns=etcd_ns)
        etcd = EtcdMember(box, "bench", host=ETCD_IP, netns=etcd_ns).start()
        prefix = f"/bench/{os.getpid()}"
        subprocess.run(["ip", "netns", "exec", host, PY, "-c", WRITER, ETCD_IP, prefix,
                        str(args.peers)], check=True)
        state = box.state_dir / "h"
        state.mkdir(exist_ok=True)
        proc = box.spawn("flanneld-h", [
            FLANNELD, "--etcd-endpoints", etcd.client_url, "--etcd-prefix", prefix,
            "--subnet-file", str(state / "subnet.env"), "--state-dir", str(state),
            "--cni-socket", "", "--healthz-port", "8471", "--iface", "eth0",
            "--resync-interval", str(args.resync_interval)], netns=host)
        wait_for(lambda: proc.poll() is None and metric(host, "flanneld_ready") == 1
                 and metric(host, "flanneld_peers_programmed") == args.peers, 120,
                 interval=0.2, what=f"flanneld to program {args.peers} peers")
        time.sleep(args.resync_interval + 2)  # past the first resync after start-up (a full run)
        hist0 = _histogram(host)
        driver = subprocess.run(["ip", "netns", "exec", host, PY, "-c", DRIVER, ETCD_IP, prefix,
                                 str(args.events)], capture_output=True, text=True, timeout=600)
        if driver.returncode != 0:
            print(driver.stderr, file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in driver.stdout.splitlines() if line.startswith("{")]
        hist1 = _histogram(host)
        hist = _delta(hist1, hist0)
        own = hist1["event_to_kernel"], hist0["event_to_kernel"]
        hist["event_to_kernel"]["p50_bucket_ms"] = bucket_quantile(*own, 0.5)
        hist["event_to_kernel"]["p99_bucket_ms"] = bucket_quantile(*own, 0.99)
        if args.keep_log:
            print((box.state_dir / "flanneld-h.log").read_text()[-5000:])
        box.kill("flanneld-h")
    finally:
        box.cleanup()

    add = [r for r in rows if r["action"] == "add"]
    rem = [r for r in rows if r["action"] == "del"]
    result = {
        "benchmark": NAME, "peers": args.peers, "events": args.events,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": before,
        "loadavg_after": list(os.getloadavg()),
        "add_ms": {"kernel": stats([r["kernel_ms"] for r in add]),
                   "watch": stats([r["watch_ms"] for r in add])},
        "del_ms": {"kernel": stats([r["kernel_ms"] for r in rem]),
                   "watch": stats([r["watch_ms"] for r in rem])},
        "resync_interval_s": args.resync_interval,
        "flanneld_metrics": hist,
    }
    ka, wa = result["add_ms"]["kernel"], result["add_ms"]["watch"]
    kd, wd = result["del_ms"]["kernel"], result["del_ms"]["watch"]
    result["ratios"] = {
        "event->kernel p99 bucket ms / goal 20 ms": round(
            hist["event_to_kernel"]["p99_bucket_ms"] / 20, 2),
        "add p50 daemon/watch": round(ka["p50"] / wa["p50"], 2),
        "add p99 daemon/watch": round(ka["p99"] / wa["p99"], 2),
        "del p50 daemon/watch": round(kd["p50"] / wd["p50"], 2),
    }
    print(f"one new lease among {args.peers}, {args.events} times, put -> route in the kernel:")
    print(f"  flanneld   p50 {ka['p50']:6.2f} ms  p99 {ka['p99']:6.2f} ms")
    print(f"  etcd watch p50 {wa['p50']:6.2f} ms  p99 {wa['p99']:6.2f} ms  (reference)")
    print(f"  ratio daemon/watch p50 {result['ratios']['add p50 daemon/watch']}  "
          f"removal: flanneld p50 {kd['p50']:.2f} ms vs watch {wd['p50']:.2f} ms")
    e2k = hist["event_to_kernel"]
    print(f"  flanneld's own event -> kernel (its histogram, bucket bounds): p50 <= "
          f"{e2k['p50_bucket_ms']} ms, p99 <= {e2k['p99_bucket_ms']} ms (goal p99 < 20 ms)")
    print(f"  flanneld's own histograms during the run: {hist}")
    save(NAME, result)
    return 0


HISTOGRAMS = {"event_to_kernel": "flanneld_event_to_kernel_seconds",
              "incremental_run": 'flanneld_reconcile_duration_seconds{mode="incremental"}',
              "full_run": 'flanneld_reconcile_duration_seconds{mode="full"}'}


def _delta(now: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
           ) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in now:
        count = now[name]["count"] - before[name]["count"]
        total = now[name]["sum"] - before[name]["sum"]
        out[name] = {"count": count, "mean_ms": round(1000 * total / count, 2) if count else 0.0}
    return out


def _histogram(ns: str) -> dict[str, dict[str, float]]:
    """Count, sum and buckets of flanneld's own histograms, from /metrics."""
    from netns_lab.netns import in_netns

    def get() -> str:
        with urllib.request.urlopen("http://127.0.0.1:8471/metrics", timeout=5) as r:
            return str(r.read().decode())
    text = in_netns(ns, get)
    out: dict[str, dict[str, float]] = {}
    for name, series in HISTOGRAMS.items():
        base, _, labels = series.partition("{")
        vals = {"count": 0.0, "sum": 0.0}
        for suffix in ("count", "sum"):
            want = f"{base}_{suffix}" + (("{" + labels) if labels else "")
            for line in text.splitlines():
                if line.startswith(want + " "):
                    vals[suffix] = float(line.split()[1])
        inner = labels.rstrip("}") + "," if labels else ""
        for line in text.splitlines():  # cumulative buckets: le="0.005" -> count
            head = f'{base}_bucket{{{inner}le="'
            if line.startswith(head):
                le = line[len(head):].split('"')[0]
                vals[f"le {le}"] = float(line.split()[1])
        out[name] = vals
    return out


def bucket_quantile(now: dict[str, float], before: dict[str, float], q: float) -> float:
    """Upper bound (ms) of the bucket holding quantile q of what was observed between
    the two readings: Prometheus' histogram_quantile without the interpolation."""
    total = now["count"] - before["count"]
    bounds = sorted((float(k[3:]), now[k] - before.get(k, 0.0)) for k in now
                    if k.startswith("le ") and k != "le +Inf")
    for bound, cumulative in bounds:
        if total and cumulative >= q * total:
            return round(bound * 1000, 2)
    return float("inf")


if __name__ == "__main__":
    sys.exit(main())
