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


def curves(path: Path, title: str,
           panels: list[tuple[str, str, dict[str, list[float]], bool]], x: list[int]) -> Path:
    """Line charts side by side over the same x (peers): (title, unit, {series: y}, log y);
    a series named "... (ref)" is dashed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2), dpi=110)
    for ax, (name, unit, series, log) in zip(axes, panels, strict=True):
        for label, ys in series.items():
            ax.plot(x, ys, marker="o", markersize=3, label=label,
                    linestyle="--" if label.endswith("(ref)") else "-")
        if log:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{n // 1000}k" for n in x])
        ax.minorticks_off()
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
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
    if s := data.get("scale"):
        x, by = s["sizes"], s["by_size"]

        def col(*path: str) -> list[float]:
            out_: list[float] = []
            for n in x:
                v: Any = by[str(n)]
                for p in path:
                    v = v[p]
                out_.append(v)
            return out_
        ev, d = ("event_ms",), ("daemon", "event_ms")
        made.append(curves(out / "scale.png", "vxlan peers: pyflannel against its references", [
            ("initial programming", "ms", {
                "ip -batch (ref)": col("initial_programming_ms", "ip_bridge_batch"),
                "pyflannel": col("initial_programming_ms", "ours")}, False),
            ("one new lease, p50", "ms (log)", {
                "kernel floor (ref)": col(*ev, "kernel_floor", "p50"),
                "backend, CPU": col(*ev, "outside_netlink", "p50"),
                "backend, total": col(*ev, "total", "p50"),
                "etcd watch (ref)": col(*d, "etcd_watch", "p50"),
                "put -> route": col(*d, "flanneld", "p50")}, True),
            ("full resync, nothing to do", "ms", {
                "iproute2 show (ref)": col("full_resync_ms", "iproute2_show", "p50"),
                "pyflannel": col("full_resync_ms", "ours", "p50")}, False),
            ("resident memory", "MB", {
                "flanneld, 0 peers (ref)": [s["flanneld_0_peers"]["rss_mb"]] * len(x),
                "flanneld": col("daemon", "rss_mb")}, False)], x))
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
