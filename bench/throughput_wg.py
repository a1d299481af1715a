#!/usr/bin/env python3
"""Pod-to-pod TCP throughput (iperf3) over WireGuard: pyflannel against wireguard-go by hand.

Contenders, interleaved run by run (iperf3 -t S, R runs each, median):

- lab-wg: two pods on two hosts of a `netns-lab` lab with Backend wireguard (real
  flanneld, which starts wireguard-go for flannel-wg in the host's own mount namespace
  and programs it through its UAPI socket; real CNI plugin: cni0, veth; flanneld's
  nftables masquerade table);
- hand-wg: the same topology typed by hand: segment bridge, host veths, per host its own
  mount namespace (netns_lab's, so /run/wireguard is private) with `wireguard-go -f
  flannel-wg` in it, configured with `wg set` (private key, ListenPort 51820, the other
  host as peer: endpoint, allowed IPs = its pod subnet), `ip` for MTU 1420, the subnet's
  /32 and the Network route through the device; cni0 and pod veths at MTU 1420 as
  bench/throughput.py builds them, and the same nftables masquerade/forward table
  flanneld installs (rendered by flanneld.masq); no flanneld;
- veth: two namespaces joined by one veth pair (the ceiling of this machine).

wireguard-go encrypts in user space: on two cores the client, the server and both
wireguard-go processes share them, so runs drift; within each round the order of
hand-wg and lab-wg alternates, and the headline is the median of per-round ratios.

Goal: lab-wg / hand-wg >= 0.97. Run as root: .venv/bin/python bench/throughput_wg.py
[--seconds 3 --runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "netns-lab"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine, save  # noqa: E402
from netns_lab.netns import Sandbox, ip, run, wait_for  # noqa: E402
from throughput import LAB, build_veth, iperf, paired  # noqa: E402

from core.wgkey import encode_key, generate_private_key, public_key  # noqa: E402
from flanneld.masq import RuleParams, render_transaction  # noqa: E402

NAME = "throughput_wg"
GOAL = 0.97
DEV, PORT, MTU = "flannel-wg", 51820, 1420  # flannel's device; 1500 - 80
NET = IPv4Network("10.95.0.0/16")
# host -> (underlay address, pod /24 prefix)
HOSTS = {"a": ("192.168.76.10", "10.95.1"), "b": ("192.168.76.11", "10.95.2")}
PATHS = ("veth", "hand-wg", "lab-wg")


def topology() -> str:
    """The lab: two hosts on one segment, Backend wireguard (flannel's defaults: ListenPort
    51820, MTU 1420 on a 1500 underlay), one pod each, --ip-masq as the other labs."""
    return json.dumps({  # JSON is YAML
        "description": "throughput over wireguard, 2 hosts, 1 pod each",
        "network": {"Network": "10.94.0.0/16", "Backend": {"Type": "wireguard"}},
        "segments": {"lan": {"subnet": "192.168.75.0/24"}},
        "etcd": {"members": 1}, "hosts": 2, "defaults": {"pods": 1}})


def round_order(paths: list[str], r: int) -> list[str]:
    """The order of round r: as given on even rounds; on odd ones each pair hand-X, lab-X
    swapped, so that neither side of a pair always goes first."""
    out = list(paths)
    if r % 2:
        for name in paths:
            if name.startswith("hand-") and f"lab-{name[5:]}" in paths:
                i, j = paths.index(name), paths.index(f"lab-{name[5:]}")
                out[i], out[j] = paths[j], paths[i]
    return out


def wg_peer_argv(peer_public: str, endpoint: str, allowed: str) -> list[str]:
    return ["wg", "set", DEV, "peer", peer_public, "endpoint", endpoint, "allowed-ips", allowed]


def build_hand_wg(box: Sandbox) -> tuple[str, str, str]:
    """Two hosts and two pods over wireguard-go, wired by hand; (server pod ns, client pod
    ns, server pod IP)."""
    seg = box.add_netns("wg-seg", forwarding=False)
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    pods, pubs = {}, {}
    for h, (addr, sub) in HOSTS.items():
        ns = box.add_netns(f"wg-{h}")
        box.veth(ns, "eth0", seg, f"to-{h}")
        ip("link", "set", f"to-{h}", "master", "br0", "up", netns=seg)
        ip("addr", "add", f"{addr}/24", "dev", "eth0", netns=ns)
        # its own /run/wireguard: wireguard-go's socket never lands in the machine's
        wg_dir = box.state_dir / f"wg-{h}-run-wireguard"
        wg_dir.mkdir(mode=0o700)
        box.add_mount_ns(ns, [(wg_dir, "/run/wireguard")])
        box.spawn(f"wireguard-go-{h}", ["wireguard-go", "-f", DEV], netns=ns,
                  env={**os.environ, "LOG_LEVEL": "error"})
        wait_for((wg_dir / f"{DEV}.sock").exists, 10, what=f"wireguard-go's socket on {h}")
        private = generate_private_key()
        pubs[h] = encode_key(public_key(private))
        key_file = box.state_dir / f"wg-{h}.key"
        key_file.write_text(encode_key(private))
        key_file.chmod(0o600)
        enter = box.enter(ns)
        run([*enter, "wg", "set", DEV, "private-key", str(key_file), "listen-port", str(PORT)])
        ip("link", "set", DEV, "mtu", str(MTU), "up", netns=ns)
        ip("addr", "add", f"{sub}.0/32", "dev", DEV, netns=ns)
        ip("route", "add", str(NET), "dev", DEV, "scope", "link", netns=ns)
        ip("link", "add", "cni0", "type", "bridge", netns=ns)
        ip("addr", "add", f"{sub}.1/24", "dev", "cni0", netns=ns)
        ip("link", "set", "cni0", "mtu", str(MTU), "up", netns=ns)
        pod = box.add_netns(f"wg-{h}-pod", forwarding=False)
        ip("link", "add", f"veth{h}", "mtu", str(MTU), "type", "veth", "peer", "name", "eth0",
           "mtu", str(MTU), "netns", pod, netns=ns)
        ip("link", "set", f"veth{h}", "master", "cni0", "up", netns=ns)
        ip("addr", "add", f"{sub}.2/24", "dev", "eth0", netns=pod)
        ip("link", "set", "eth0", "up", netns=pod)
        ip("route", "add", "default", "via", f"{sub}.1", netns=pod)
        pods[h] = (pod, f"{sub}.2")
        # flannel's --ip-masq table, as flanneld installs it in the lab: same kernel state.
        rules = render_transaction(RuleParams(NET, IPv4Network(f"{sub}.0/24"), masquerade=True))
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules)
    for h in HOSTS:
        other = "b" if h == "a" else "a"
        oaddr, osub = HOSTS[other]
        run([*box.enter(box.ns(f"wg-{h}")),
             *wg_peer_argv(pubs[other], f"{oaddr}:{PORT}", f"{osub}.0/24")])
    return pods["b"][0], pods["a"][0], pods["b"][1]


def lab_up_wg(name: str, tmp: Path) -> tuple[str, str, str]:
    path = tmp / "wireguard.yaml"
    path.write_text(topology() + "\n")
    subprocess.run([*LAB, "--name", name, "up", "--replace", str(path)], check=True,
                   capture_output=True, timeout=300)
    data = json.loads(Path(f"/tmp/pyflannel/pfl-{name}/lab.json").read_text())
    server = data["pods"].get("h2", {}).get("p1", {}).get("ip")
    assert server, f"lab {name}: no pod h2/p1"
    return f"pfl-{name}-h2-p1", f"pfl-{name}-h1-p1", str(server).split("/")[0]


def reachable(client: str, server_ip: str) -> None:
    """The path carries packets before it is measured (the WireGuard handshake done)."""
    wait_for(lambda: run(["ip", "netns", "exec", client, "ping", "-c1", "-W1", "-n",
                          server_ip], check=False).returncode == 0, 20,
             what=f"{client} to reach {server_ip}")


def measure(box: Sandbox, paths: dict[str, tuple[str, str, str]], runs: int,
            seconds: float) -> dict[str, list[float]]:
    """`runs` rounds over every path, each pair back to back, its order alternating."""
    samples: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(runs):
        for name in round_order(list(paths), r):
            server, client, server_ip = paths[name]
            samples[name].append(iperf(box, server, client, server_ip, seconds))
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    if not is_root():
        return 1
    before = machine()
    box = Sandbox.scratch()
    tmp = Path(tempfile.mkdtemp(prefix="pyflannel-tpwg-"))
    lab = f"tpwg{os.getpid() % 10000}"
    try:
        paths = {"veth": build_veth(box), "hand-wg": build_hand_wg(box),
                 "lab-wg": lab_up_wg(lab, tmp)}
        for _server, client, server_ip in paths.values():
            reachable(client, server_ip)
        samples = measure(box, paths, args.runs, args.seconds)
    finally:
        subprocess.run([*LAB, "--name", lab, "down"], capture_output=True, timeout=120)
        box.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    ratios = {"wireguard: pyflannel / by hand": paired(samples, "lab-wg", "hand-wg"),
              "wireguard: ratio of medians": round(med["lab-wg"] / med["hand-wg"], 3),
              "wireguard / plain veth": round(med["lab-wg"] / med["veth"], 3)}
    result = {
        "benchmark": NAME, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": before,
        "loadavg_after": list(os.getloadavg()), "seconds": args.seconds, "runs": args.runs,
        "mtu": MTU, "order": "veth, then hand-wg and lab-wg, swapped every other round",
        "gbit_per_s": {k: {"median": med[k], "runs": [round(x, 3) for x in v]}
                       for k, v in samples.items()},
        "per_run_ratio_lab_vs_hand": [round(a / b, 3) for a, b in
                                      zip(samples["lab-wg"], samples["hand-wg"], strict=True)],
        "ratios": ratios, "goal": GOAL, "goal_met": ratios["wireguard: pyflannel / by hand"]
        >= GOAL,
    }
    print(f"pod-to-pod TCP over WireGuard (wireguard-go), iperf3 {args.seconds:g} s x "
          f"{args.runs}, median Gbit/s:")
    for k, v in med.items():
        print(f"  {k:8} {v:7.3f}")
    for k, v in ratios.items():
        print(f"  {k:31} {v:.3f}" + (f"  (goal >= {GOAL})" if "by hand" in k else ""))
    print(f"  per-run lab/hand: {result['per_run_ratio_lab_vs_hand']}")
    save(NAME, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
