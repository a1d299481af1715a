"""PNG plots of the benchmark JSON files (matplotlib, Agg backend), one per benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def bars(path: Path, title: str, labels: list[str], values: list[float], unit: str,
         reference: int | None = None) -> Path:
    """A bar chart; the reference bar (index) is grey, ours are blue."""
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    colors = ["#8c8c8c" if i == reference else "#2f6db5" for i in range(len(values))]
    drawn = ax.barh(labels, values, color=colors)
    ax.bar_label(drawn, fmt="%.3g", padding=3, fontsize=8)
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(data: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per benchmark present in `data` (name -> its JSON)."""
    made = []
    if p := data.get("programming"):
        ms = p["initial_programming_ms"]
        made.append(bars(out / "programming.png", f"{p['peers']} vxlan peers: initial programming",
                         ["ip -batch + bridge -batch (ref)", "pyflannel", "pyroute2, per entry"],
                         [ms["ip_bridge_batch"]["median"], ms["ours"]["median"],
                          ms["pyroute2_per_call"]["median"]], "ms (median)", 0))
    if c := data.get("cni_latency"):
        f = c["figures"]
        names = [k for k in ("ref", "ours", "ref-masq", "ours-masq", "fallback") if k in f]
        made.append(bars(out / "cni_latency.png", "CNI ADD latency, p50 (ref: bridge + host-local)",
                         names, [f[k]["ADD"]["p50"] for k in names], "ms", 0))
    if d := data.get("daemon_latency"):
        made.append(bars(out / "daemon_latency.png",
                         f"one new lease among {d['peers']}: put -> route in the kernel",
                         ["etcd watch p50 (ref)", "flanneld p50", "etcd watch p99",
                          "flanneld p99"],
                         [d["add_ms"]["watch"]["p50"], d["add_ms"]["kernel"]["p50"],
                          d["add_ms"]["watch"]["p99"], d["add_ms"]["kernel"]["p99"]], "ms", 0))
    if t := data.get("throughput"):
        g = t["gbit_per_s"]
        names = [k for k in ("veth", "hand-vxlan", "lab-vxlan", "hand-hostgw", "lab-hostgw")
                 if k in g]
        made.append(bars(out / "throughput.png", "pod-to-pod TCP (iperf3), median",
                         names, [g[k]["median"] for k in names], "Gbit/s", 0))
    if p := data.get("programming_dualstack"):
        ms = p["initial_programming_ms"]
        made.append(bars(out / "programming_dualstack.png",
                         f"{p['peers']} dual-stack vxlan peers: initial programming",
                         ["ip -batch + bridge -batch (ref)", "pyflannel", "pyroute2, per entry"],
                         [ms["ip_bridge_batch"]["median"], ms["ours"]["median"],
                          ms["pyroute2_per_call"]["median"]], "ms (median)", 0))
    if c := data.get("cni_latency_dualstack"):
        f = c["figures"]
        names = [k for k in ("ref", "ours", "ref-masq", "ours-masq", "fallback") if k in f]
        made.append(bars(out / "cni_latency_dualstack.png",
                         "dual-stack CNI ADD latency, p50 (ref: bridge + host-local, 2 ranges)",
                         names, [f[k]["ADD"]["p50"] for k in names], "ms", 0))
    if t := data.get("throughput_ipv6"):
        g = t["gbit_per_s"]
        names = [k for k in ("veth6", "hand6-vxlan", "lab6-vxlan", "hand6-hostgw", "lab6-hostgw")
                 if k in g]
        made.append(bars(out / "throughput_ipv6.png", "pod-to-pod TCP over IPv6 (iperf3), median",
                         names, [g[k]["median"] for k in names], "Gbit/s", 0))
    if w := data.get("wireguard_programming"):
        ms = w["initial_programming_ms"]
        made.append(bars(out / "wireguard_programming.png",
                         f"{w['peers']} WireGuard peers (wireguard-go): initial programming",
                         ["one hand-written UAPI set (ref)", "pyflannel", "wg setconf"],
                         [ms["uapi_set"]["median"], ms["ours"]["median"],
                          ms["wg_setconf"]["median"]], "ms (median)", 0))
    if t := data.get("throughput_wg"):
        g = t["gbit_per_s"]
        # plain veth is two orders of magnitude above: named in the title, not drawn
        made.append(bars(out / "throughput_wg.png",
                         "pod-to-pod TCP over WireGuard (wireguard-go, iperf3), median; plain "
                         f"veth {g['veth']['median']:.3g}", ["hand-wg (ref)", "lab-wg"],
                         [g["hand-wg"]["median"], g["lab-wg"]["median"]], "Gbit/s", 0))
    if r := data.get("flanneld_resources"):
        refs = r["references_rss_mb"]
        made.append(bars(out / "flanneld_resources.png", "resident memory",
                         ["python + asyncio + aetcd + pyroute2 (ref)", "flanneld, 0 peers",
                          f"flanneld, {r['flanneld_n_peers']['peers']} peers"],
                         [refs["python_asyncio_aetcd_pyroute2"], r["flanneld_0_peers"]["rss_mb"],
                          r["flanneld_n_peers"]["rss_mb"]], "MB", 0))
    if e := data.get("etcd_load"):
        runs = e["runs"]
        big = max(r["nodes"] for r in runs)
        top = {r["path"]: r for r in runs if r["nodes"] == big}
        if "direct" in top:
            names = ["flannel, from its code, at most (ref)"]
            values = [top["direct"]["flannel_total_requests"][1]]
            for path, how in (("direct", "straight to etcd"), ("proxy", "via grpc-proxy")):
                if path in top:
                    names.append(f"pyflannel, {how}")
                    values.append(top[path]["total_requests"])
            made.append(bars(out / "etcd_load_requests.png",
                             f"etcd member requests, {big} nodes: start, {e['churn']} puts, "
                             "restart", names, values, "requests", 0))
        made.append(bars(out / "etcd_load_watchers.png",
                         "etcd member watchers added by N flanneld (flannel: 2 per node)",
                         [f"N={r['nodes']} {r['path']}" for r in runs],
                         [r["watchers_added"]["start"] for r in runs], "watchers"))
    return made
