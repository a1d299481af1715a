#!/usr/bin/env python3
"""Pod-to-pod TCP throughput (iperf3) through pyflannel, against the same path built by hand.

Contenders, interleaved run by run (iperf3 -t S, R runs each, median):

- lab-vxlan / lab-hostgw: two pods on two hosts of a `netns-lab` lab (real
  flanneld, real CNI plugin: cni0 bridge, veth, flannel.1 or host-gw routes,
  and flanneld's nftables masquerade table as kube-flannel runs it);
- hand-vxlan / hand-hostgw: the same topology and kernel state typed with
  iproute2 (segment bridge, host veths, vxlan device with flannel's attributes,
  neighbour/FDB/route, cni0, pod veths, same MTUs, and the same nftables
  masquerade/forward table flanneld installs, rendered by flanneld.masq), no flanneld;
- veth: two namespaces joined by one veth pair (the ceiling of this machine).

Goal: lab / hand >= 0.97 (pyflannel adds nothing to the data path but what flannel
itself puts there). Run as root: .venv/bin/python bench/throughput.py [--seconds 3 --runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-lab"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine, save  # noqa: E402
from netns_lab.netns import Sandbox, ip, run, wait_for  # noqa: E402

from flanneld.masq import RuleParams, render_transaction  # noqa: E402

NAME = "throughput"
GOAL = 0.97
LAB = [str(Path(sys.executable).with_name("netns-lab"))]


def iperf(box: Sandbox, server_ns: str, client_ns: str, server_ip: str, seconds: float) -> float:
    """Gbit/s of one iperf3 run from client_ns to server_ns."""
    name = f"iperf-{server_ns}"
    box.spawn(name, ["iperf3", "-s", "-1", "-B", server_ip], netns=server_ns)
    try:
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", server_ns, "ss", "-ltn"],
                                        capture_output=True, text=True).stdout.count(":5201") > 0,
                 10, what="iperf3 to listen")
        out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-t",
                              str(seconds), "-J"], capture_output=True, text=True, check=True,
                             timeout=seconds + 30).stdout
    finally:
        box.kill(name)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def build_hand(box: Sandbox, kind: str) -> tuple[str, str, str]:
    """Two hosts and two pods wired by hand; (server pod ns, client pod ns, server pod IP)."""
    seg = box.add_netns(f"{kind}-seg", forwarding=False)
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    hosts = {"a": ("192.168.77.10", "10.99.1"), "b": ("192.168.77.11", "10.99.2")}
    pods = {}
    vx = kind == "vxlan"
    mtu = 1450 if vx else 1500
    for h, (addr, sub) in hosts.items():
        ns = box.add_netns(f"{kind}-{h}")
        box.veth(ns, "eth0", seg, f"to-{h}")
        ip("link", "set", f"to-{h}", "master", "br0", "up", netns=seg)
        ip("addr", "add", f"{addr}/24", "dev", "eth0", netns=ns)
        if vx:
            ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", addr, "dev",
               "eth0", "nolearning", "dstport", "8472", netns=ns)
            ip("link", "set", "flannel.1", "mtu", "1450", "up", netns=ns)
            ip("addr", "add", f"{sub}.0/32", "dev", "flannel.1", netns=ns)
        ip("link", "add", "cni0", "type", "bridge", netns=ns)
        ip("addr", "add", f"{sub}.1/24", "dev", "cni0", netns=ns)
        ip("link", "set", "cni0", "mtu", str(mtu), "up", netns=ns)
        pod = box.add_netns(f"{kind}-{h}-pod", forwarding=False)
        ip("link", "add", f"veth{h}", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
           "mtu", str(mtu), "netns", pod, netns=ns)
        ip("link", "set", f"veth{h}", "master", "cni0", "up", netns=ns)
        ip("addr", "add", f"{sub}.2/24", "dev", "eth0", netns=pod)
        ip("link", "set", "eth0", "up", netns=pod)
        ip("route", "add", "default", "via", f"{sub}.1", netns=pod)
        pods[h] = (pod, f"{sub}.2")
        # flannel's --ip-masq table, as flanneld installs it in the lab: same kernel state.
        rules = render_transaction(RuleParams(IPv4Network("10.99.0.0/16"),
                                              IPv4Network(f"{sub}.0/24"), masquerade=True))
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules)
    for h, (_addr, _sub) in hosts.items():
        other = "b" if h == "a" else "a"
        oaddr, osub = hosts[other]
        ns = box.ns(f"{kind}-{h}")
        if vx:
            mac = ip("-j", "link", "show", "flannel.1", netns=box.ns(f"{kind}-{other}"))
            omac = json.loads(mac)[0]["address"]
            ip("neigh", "replace", f"{osub}.0", "lladdr", omac, "dev", "flannel.1", "nud",
               "permanent", netns=ns)
            subprocess.run(["bridge", "-n", ns, "fdb", "append", omac, "dev", "flannel.1", "dst",
                            oaddr, "self", "permanent"], check=True)
            ip("route", "add", f"{osub}.0/24", "via", f"{osub}.0", "dev", "flannel.1", "onlink",
               netns=ns)
        else:
            ip("route", "add", f"{osub}.0/24", "via", oaddr, "dev", "eth0", netns=ns)
    return pods["b"][0], pods["a"][0], pods["b"][1]


def build_veth(box: Sandbox) -> tuple[str, str, str]:
    a, b = box.add_netns("veth-a", forwarding=False), box.add_netns("veth-b", forwarding=False)
    box.veth(a, "eth0", b, "eth0")
    ip("addr", "add", "10.98.0.1/24", "dev", "eth0", netns=a)
    ip("addr", "add", "10.98.0.2/24", "dev", "eth0", netns=b)
    return b, a, "10.98.0.2"


def lab_up(name: str, topology: str) -> tuple[str, str, str]:
    subprocess.run([*LAB, "--name", name, "up", "--replace", topology], check=True,
                   capture_output=True, timeout=300)
    data = json.loads(Path(f"/tmp/pyflannel/pfl-{name}/lab.json").read_text())
    pods = data["pods"]
    server = pods["h2"]["p1"]["ip"] if "h2" in pods else None
    assert server, f"lab {name}: no pod h2/p1"
    return f"pfl-{name}-h2-p1", f"pfl-{name}-h1-p1", str(server).split("/")[0]


def paired(samples: dict[str, list[float]], ours: str, ref: str) -> float:
    """Median over runs of ours/ref, each pair measured back to back."""
    return round(statistics.median(a / b for a, b in zip(samples[ours], samples[ref],
                                                         strict=True)), 3)


def measure(box: Sandbox, paths: dict[str, tuple[str, str, str]], runs: int,
            seconds: float) -> dict[str, list[float]]:
    """`runs` rounds over every path in turn, so that each pair is measured back to back."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, (server, client, server_ip) in paths.items():
            samples.setdefault(name, []).append(iperf(box, server, client, server_ip, seconds))
    return samples


def report(name: str, title: str, samples: dict[str, list[float]], args: argparse.Namespace,
           before: dict[str, object], tag: str) -> None:
    """Print and save the medians and ratios. The samples are keyed veth{tag},
    hand{tag}-vxlan, lab{tag}-vxlan, hand{tag}-hostgw and lab{tag}-hostgw; `tag` also
    names the family in the ratios ("" for IPv4, "6" for IPv6)."""
    med = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    fam = " v6" if tag else ""
    ratios: dict[str, float] = {}
    for kind, label in (("vxlan", "vxlan"), ("hostgw", "host-gw")):
        lab, hand = f"lab{tag}-{kind}", f"hand{tag}-{kind}"
        # Headline: the median of per-run ratios of back-to-back pairs. iperf3 on a shared
        # VM drifts by 2-4x between runs; a pair measured seconds apart cancels the drift.
        ratios[f"{label}{fam}: pyflannel / by hand"] = paired(samples, lab, hand)
        ratios[f"{label}{fam}: ratio of medians"] = round(med[lab] / med[hand], 3)
        ratios[f"{label}{fam} / plain veth"] = round(med[lab] / med[f"veth{tag}"], 3)
    result = {
        "benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": before,
        "loadavg_after": list(os.getloadavg()), "seconds": args.seconds, "runs": args.runs,
        "gbit_per_s": {k: {"median": med[k], "runs": [round(x, 3) for x in v]}
                       for k, v in samples.items()},
        "ratios": ratios, "goal": GOAL,
    }
    print(f"{title}, iperf3 {args.seconds:g} s x {args.runs}, median Gbit/s:")
    for k, v in med.items():
        print(f"  {k:13} {v:7.2f}")
    for k, v in ratios.items():
        print(f"  {k:33} {v:.3f}")
    save(name, result)


def parse_args(doc: str | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=9)
    return ap.parse_args()


def main() -> int:
    args = parse_args(__doc__)
    if not is_root():
        return 1
    before = machine()
    box = Sandbox.scratch()
    labs = {"vxlan": f"tp{os.getpid() % 10000}v", "hostgw": f"tp{os.getpid() % 10000}h"}
    try:
        paths = {"veth": build_veth(box), "hand-vxlan": build_hand(box, "vxlan"),
                 "lab-vxlan": lab_up(labs["vxlan"], "default"),
                 "hand-hostgw": build_hand(box, "hostgw"),
                 "lab-hostgw": lab_up(labs["hostgw"], "hostgw-l2")}  # pairs back to back
        samples = measure(box, paths, args.runs, args.seconds)
    finally:
        for lab in labs.values():
            subprocess.run([*LAB, "--name", lab, "down"], capture_output=True, timeout=120)
        box.cleanup()
    report(NAME, "pod-to-pod TCP", samples, args, before, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
