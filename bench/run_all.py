#!/usr/bin/env python3
"""Run the whole benchmark suite; write docs/bench/summary.json, PNG plots and docs/benchmarks.md.

Each benchmark is its own script (run here as a subprocess, in turn, so they do
not disturb each other) and saves its JSON in docs/bench/. Every figure is a
ratio to a reference measured in the same run of that script; the machine
(CPU, cores, kernel, Python, load average) is recorded with them.

Run as root: .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--plots-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import machine  # noqa: E402
from plot import plot_all  # noqa: E402

DOCS = ROOT / "docs" / "bench"
# name -> (script arguments, quick arguments)
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "codec": ([], ["--peers", "300", "--rounds", "3"]),
    "programming": ([], ["--rounds", "3", "--events", "50"]),
    "cni_latency": (["--masq"], ["--n", "20", "--rounds", "2"]),
    "daemon_latency": (["--events", "200"], ["--events", "30"]),
    "throughput": (["--seconds", "3", "--runs", "9"], ["--seconds", "2", "--runs", "1"]),
    "flanneld_resources": ([], ["--idle", "10"]),
    # scale (issue 14): 1000..10000 peers, every figure against its reference per size
    "scale": ([], ["--sizes", "1000,5000", "--events", "50", "--daemon-events", "20",
                   "--rounds", "1"]),
    # etcd requests per node, from the member's own /metrics (issue 14)
    "etcd_load": (["--nodes", "10", "30", "100"], ["--nodes", "10"]),
    # dual stack (issue 12): modes of the scripts above, and IPv6 throughput
    "programming_dualstack": (["--dual-stack"], ["--dual-stack", "--rounds", "3",
                                                 "--events", "50"]),
    "cni_latency_dualstack": (["--dual-stack", "--masq"], ["--dual-stack", "--n", "20",
                                                           "--rounds", "2"]),
    "throughput_ipv6": (["--seconds", "3", "--runs", "9"], ["--seconds", "2", "--runs", "1"]),
    # WireGuard (wireguard-go: this kernel has no WireGuard module)
    "wireguard_programming": ([], ["--rounds", "2", "--events", "50"]),
    "throughput_wg": (["--seconds", "3", "--runs", "9"], ["--seconds", "2", "--runs", "1"]),
}
# suite name -> (script under bench/, what it measures) where the two differ
MODES: dict[str, tuple[str, str]] = {
    "programming_dualstack": ("programming", "programming 1000 dual-stack vxlan peers "
                              "(IPv4 and IPv6 neighbour, FDB entry and route each) against "
                              "`ip -batch` + `bridge -batch` (`--dual-stack`)."),
    "cni_latency_dualstack": ("cni_latency", "CNI ADD/DEL latency with a dual-stack "
                              "subnet.env against bridge + host-local with two range sets "
                              "(`--dual-stack`)."),
    "throughput_ipv6": ("throughput6", "pod-to-pod TCP throughput over IPv6 (iperf3) "
                        "through dual-stack pyflannel, against the same path built by hand."),
}


def script(name: str) -> str:
    return MODES[name][0] if name in MODES else name


def ratios(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The headline ratio of each benchmark: (value, reference, what)."""
    out: dict[str, dict[str, Any]] = {}
    if k := data.get("codec"):
        out["codec"] = {f"encode {k['messages']} requests, pyroute2 / ours":
                        k["ratio_pyroute2_vs_ours"],
                        "us per message, ours / pyroute2":
                        f"{k['us_per_message']['ours']} / {k['us_per_message']['pyroute2']}"}
    if p := data.get("programming"):
        e = p["events_with_peers_present"]["add_ms"]
        out["programming"] = {
            "initial programming, pyflannel / ip+bridge -batch": p["ratio_ours_vs_ip_batch"],
            "initial programming, pyroute2 / ip+bridge -batch": p["ratio_pyroute2_vs_ip_batch"],
            "one event, backend only, p50 / p99 ms": f"{e['p50']} / {e['p99']}"}
    if c := data.get("cni_latency"):
        f = c["figures"]
        # the ratio moves with the reference's own run-to-run spread; show both sides
        out["cni_latency"] = {**c["ratios"], "ADD p50 ms, ours / ref":
                              f"{f['ours']['ADD']['p50']} / {f['ref']['ADD']['p50']}"}
    if d := data.get("daemon_latency"):
        out["daemon_latency"] = {**d["ratios"],
                                 "flanneld p50 / p99 ms": f"{d['add_ms']['kernel']['p50']} / "
                                 f"{d['add_ms']['kernel']['p99']}"}
    if t := data.get("throughput"):
        out["throughput"] = dict(t["ratios"])
    if p := data.get("programming_dualstack"):
        e = p["events_with_peers_present"]["add_ms"]
        out["programming_dualstack"] = {
            "initial programming, pyflannel / ip+bridge -batch": p["ratio_ours_vs_ip_batch"],
            "one dual-stack event, backend only, p50 / p99 ms": f"{e['p50']} / {e['p99']}"}
    if c := data.get("cni_latency_dualstack"):
        f = c["figures"]
        out["cni_latency_dualstack"] = {**c["ratios"], "ADD p50 ms, ours / ref":
                                        f"{f['ours']['ADD']['p50']} / {f['ref']['ADD']['p50']}"}
    if t := data.get("throughput_ipv6"):
        out["throughput_ipv6"] = dict(t["ratios"])
    if w := data.get("wireguard_programming"):
        e = w["events_with_peers_present"]
        add, hand, rm = e["add_ms"], e["uapi_add_ms"], e["remove_ms"]
        out["wireguard_programming"] = {
            "initial programming, pyflannel / hand UAPI set": w["ratio_ours_vs_uapi_set"],
            "the same, median of per-round ratios": w["ratio_ours_vs_uapi_set_paired"],
            "initial programming, wg setconf / hand UAPI set": w["ratio_wg_setconf_vs_uapi_set"],
            "one new lease, backend only, p50 / p99 ms": f"{add['p50']} / {add['p99']}",
            "one new peer by hand (UAPI set), p50 / p99 ms": f"{hand['p50']} / {hand['p99']}",
            "its removal, p50 / p99 ms": f"{rm['p50']} / {rm['p99']}",
            "50 new leases back to back, p50 / p99 ms":
            f"{e['burst_add_ms']['p50']} / {e['burst_add_ms']['p99']}",
            "full resync, nothing to do, p50 ms / bare UAPI get p50 ms":
            f"{e['full_resync_noop_ms']['p50']} / {e['uapi_get_ms']['p50']}"}
    if t := data.get("throughput_wg"):
        out["throughput_wg"] = dict(t["ratios"])
    if s := data.get("scale"):
        sizes, by = s["sizes"], s["by_size"]
        big = str(max(sizes))
        ev = {k: v for k, v in s["ratios"].items() if isinstance(v, dict)}
        out["scale"] = {
            **{f"one event {s['ratios']['sizes']} peers, {k}, p50 / p99 (goal <= 1.3)":
               f"{v['p50']} / {v['p99']}" for k, v in ev.items()},
            "RSS KB per peer over 0 peers, by size": ", ".join(
                f"{n}: {by[str(n)]['daemon']['rss_per_peer_kb']}" for n in sizes
                if "daemon" in by[str(n)]),
            f"initial programming of {big}, pyflannel / ip+bridge -batch":
            by[big]["initial_programming_ms"]["ratio"],
            f"full resync of {big}, pyflannel / iproute2 show": by[big]["full_resync_ms"]["ratio"],
            f"ready with {big} peers, s, pyflannel / etcd list + ip -batch":
            f"{by[big]['daemon']['ready_s']} / {by[big]['daemon']['ready_reference_s']['total']}"
            if "daemon" in by[big] else "-"}
    if r := data.get("flanneld_resources"):
        n, refs = r["flanneld_n_peers"], r["references_rss_mb"]
        out["flanneld_resources"] = {
            "RSS / python+asyncio+aetcd+pyroute2": round(
                n["rss_mb"] / refs["python_asyncio_aetcd_pyroute2"], 2),
            "RSS MB (goal < 60)": n["rss_mb"], "idle CPU % (goal < 0.5)": n["idle_cpu_pct"]}
    if e := data.get("etcd_load"):
        out["etcd_load"] = dict(e["ratios"])
    return out


def markdown(summary: dict[str, Any], pngs: list[Path]) -> str:
    m = summary["machine"]
    lines = ["# Benchmarks", "",
             "Generated by `bench/run_all.py` (do not edit): every figure is a ratio to a "
             "reference measured in the same run of the same script, on this machine:", "",
             f"- CPU: {m['cpu']} ({m['cpus']} cores), kernel {m['kernel']}, "
             f"Python {m['python']}",
             f"- load average before the suite: {', '.join(f'{x:.1f}' for x in m['loadavg'])} "
             "(the machine is shared with other work: absolute times move, ratios much less)",
             (f"- rendered at {summary['when']} from each benchmark's last saved run "
              "(docs/bench/<name>.json holds its own time, settings and load average)"
              if summary.get("plots_only") else
              f"- run at {summary['when']}, {'quick' if summary['quick'] else 'full'} settings"),
             "", "| benchmark | figure | value |", "|---|---|---|"]
    for name, figs in summary["ratios"].items():
        for what, value in figs.items():
            lines.append(f"| {name} | {what} | {value} |")
    side = DOCS / "side_by_side.json"
    if side.exists():
        sb = json.loads(side.read_text())
        lines += ["", f"Side by side with commit {sb['before']} (`bench/side_by_side.py`, run at "
                  f"{sb['when']}: each benchmark of both trees in turn, same settings):", "",
                  f"| benchmark | figure | {sb['before']} | {sb['after']} |", "|---|---|---|---|"]
        lines += [f"| {r['benchmark']} | {r['figure']} | {r['before']} | {r['after']} |"
                  for r in sb["rows"]]
        lines += ["", *sb.get("notes", [])]
    lines += ["", "What each one measures (the script's docstring has the method):", ""]
    for name in summary["ratios"]:
        what = MODES[name][1] if name in MODES else (ROOT / "bench" / f"{name}.py").read_text(
        ).split('"""')[1].strip().split("\n")[0]
        lines.append(f"- `bench/{script(name)}.py`" + (f" ({name})" if name in MODES else "")
                     + f": {what}")
    lines.append("")
    for png in pngs:
        lines += [f"![{png.stem}](bench/{png.name})", ""]
    lines += ["Raw figures: `docs/bench/<name>.json`; this summary: `docs/bench/summary.json`.",
              ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes)")
    ap.add_argument("--only", nargs="*", choices=list(SUITE), help="run only these")
    ap.add_argument("--plots-only", action="store_true",
                    help="run nothing; plot and summarise the saved JSON")
    args = ap.parse_args()
    before = machine()
    failed = []
    for name in ([] if args.plots_only else (args.only or list(SUITE))):
        full, quick = SUITE[name]
        argv = [sys.executable, str(ROOT / "bench" / f"{script(name)}.py"),
                *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        if subprocess.run(argv, cwd=ROOT).returncode != 0:
            failed.append(name)
    data = {}
    for name in SUITE:
        path = DOCS / f"{name}.json"
        if path.exists():
            data[name] = json.loads(path.read_text())
    pngs = plot_all(data, DOCS)
    summary = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": before,
               "quick": args.quick, "plots_only": args.plots_only, "failed": failed,
               "ratios": ratios(data),
               "plots": [p.name for p in pngs]}
    (DOCS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (ROOT / "docs" / "benchmarks.md").write_text(markdown(summary, pngs))
    for name, figs in summary["ratios"].items():
        for what, value in figs.items():
            print(f"{name:20} {what:55} {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
