"""CNI ADD/DEL latency: our `flannel` plugin against the reference bridge + host-local.

Method (cni-spec.md §11): a host netns and N container netns per variant, made
in a Sandbox (creation not timed); from inside the host netns, a Python
harness runs each plugin with subprocess.run, N sequential ADDs then N DELs
(with prevResult), timing fork+exec+plugin+wait. Variants, measured in the
same run and interleaved sample by sample (rotating the order) so that load
from other processes hits them alike:

  ref        Debian /usr/lib/cni/bridge + host-local (ipMasq false, §11's config)
  ours       the installed `flannel` executable, flanneld's CNI server up (standalone)
  fallback   the same executable with no server: the in-process path
  ref-masq / ours-masq (--masq): ipMasq on: iptables chains vs our nft table

--dual-stack: every variant dual-stack, the same names. ref*: host-local with two range
sets (an IPv4 /24 and an IPv6 /64, gateways .1 and ::1; default routes of both
families); ours: a dual-stack subnet.env (FLANNEL_IPV6_NETWORK, FLANNEL_IPV6_SUBNET),
from which the plugin derives the same two range sets, as flannel does. Saved as
cni_latency_dualstack.json; the IPv4 run keeps cni_latency.json.

Prints p50/p95 per variant and the ratios ours/ref, and saves the figures to
bench/results/<name>.json and docs/bench/<name>.json (--out elsewhere: only there).

    sudo .venv/bin/python bench/cni_latency.py [--n 50] [--rounds 3] [--masq] [--dual-stack]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netns_lab.netns import Sandbox, run, wait_for  # noqa: E402

from flanneld.ctl.install_cni import install  # noqa: E402
from netlink.netns import setns  # noqa: E402

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NAME, NAME_DS = "cni_latency", "cni_latency_dualstack"


def default_out(dual_stack: bool) -> Path:
    return REPO / "bench" / "results" / f"{NAME_DS if dual_stack else NAME}.json"


@dataclass
class Variant:
    name: str
    exe: str
    conf: dict[str, Any]
    families: int = 1  # addresses an ADD must return (2: dual stack, v4 then v6)
    pods: list[str] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    add_ms: list[float] = field(default_factory=list)
    del_ms: list[float] = field(default_factory=list)

    def invoke(self, command: str, i: int) -> float:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"bench-{self.name}-{i}",
               "CNI_NETNS": f"/run/netns/{self.pods[i]}", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/usr/lib/cni", "PATH": PATH}
        conf = self.conf if command == "ADD" else dict(self.conf, prevResult=self.results[i])
        data = json.dumps(conf).encode()
        t0 = time.perf_counter()
        proc = subprocess.run([self.exe], env=env, input=data, capture_output=True)
        elapsed = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} {command} #{i} failed: {proc.stdout!r} "
                               f"{proc.stderr!r}")
        if command == "ADD":
            self.results[i] = json.loads(proc.stdout)
            got = [ip["address"] for ip in self.results[i].get("ips", [])]
            if [":" in a for a in got] != [False, True][:self.families]:
                raise RuntimeError(f"{self.name} ADD #{i}: addresses {got}, want "
                                   f"{'IPv4 then IPv6' if self.families > 1 else 'one IPv4'}")
        return elapsed


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (as §11)."""
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p95": round(pct(values, 0.95), 2),
            "n": len(values)}


def v6_of(subnet: str) -> str:
    """The IPv6 /64 a dual-stack variant pairs with an IPv4 /24: 10.5.52.x -> fd00:5:52::."""
    _, b, c, _ = subnet.split("/")[0].split(".")
    return IPv6Address(f"fd00:{int(b):x}:{int(c):x}::").compressed


def ref_ranges(subnet: str, dual_stack: bool) -> tuple[list[Any], list[dict[str, str]]]:
    """host-local's range sets and routes for the reference: v4 (and v6) with gateways."""
    ranges: list[Any] = [[{"subnet": subnet, "gateway": subnet.replace(".0/24", ".1")}]]
    routes = [{"dst": "0.0.0.0/0"}]
    if dual_stack:
        ranges.append([{"subnet": f"{v6_of(subnet)}/64", "gateway": f"{v6_of(subnet)}1"}])
        routes.append({"dst": "::/0"})
    return ranges, routes


def subnet_env(subnet: str, ip_masq: bool, dual_stack: bool) -> str:
    """Our variant's subnet.env (flannel's layout); dual stack adds the IPv6 lines."""
    v6 = (f"FLANNEL_IPV6_NETWORK=fd00::/16\nFLANNEL_IPV6_SUBNET={v6_of(subnet)}1/64\n"
          if dual_stack else "")
    return (f"FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET={subnet}\n{v6}FLANNEL_MTU=1450\n"
            f"FLANNEL_IPMASQ={'false' if ip_masq else 'true'}\n")


def build_variants(tmp: Path, masq: bool, fallback: bool,
                   dual_stack: bool = False) -> list[Variant]:
    exe = str(install(tmp / "bin"))
    variants = []

    def ref(name: str, subnet: str, bridge: str, ip_masq: bool) -> Variant:
        ranges, routes = ref_ranges(subnet, dual_stack)
        return Variant(name, "/usr/lib/cni/bridge", {
            "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
            "isGateway": True, "ipMasq": ip_masq, "hairpinMode": True, "mtu": 1450,
            "ipam": {"type": "host-local", "dataDir": str(tmp / "ref-ipam"),
                     "ranges": ranges, "routes": routes}}, len(ranges))

    def ours(name: str, run_dir: str, subnet: str, bridge: str, ip_masq: bool,
             socket: str = "") -> Variant:
        d = tmp / run_dir
        d.mkdir(mode=0o700, exist_ok=True)
        (d / "subnet.env").write_text(subnet_env(subnet, ip_masq, dual_stack))
        conf = {"cniVersion": "1.0.0", "name": name, "type": "flannel",
                "subnetFile": str(d / "subnet.env"), "dataDir": str(tmp / f"{name}-flannel"),
                "ipam": {"dataDir": str(tmp / "ours-ipam")},
                "delegate": {"bridge": bridge, "hairpinMode": True, "isDefaultGateway": True}}
        if socket:
            conf["cniSocket"] = socket
        return Variant(name, exe, conf, 2 if dual_stack else 1)

    variants.append(ref("ref", "10.99.0.0/24", "cn-br0", False))
    variants.append(ours("ours", "run", "10.5.52.1/24", "cni0", False))
    if fallback:
        variants.append(ours("fallback", "norun", "10.6.52.1/24", "cni1", False))
    if masq:
        variants.append(ref("ref-masq", "10.98.0.0/24", "cn-br1", True))
        variants.append(ours("ours-masq", "run-masq", "10.7.52.1/24", "cni2", True,
                             socket=str(tmp / "run" / "cni.sock")))
    return variants


def measure(box: Sandbox, variants: list[Variant], n: int, rounds: int) -> None:
    for r in range(rounds):
        names = {v.name: [f"{box.prefix}-r{r}{v.name.replace('-', '')}{i}" for i in range(n)]
                 for v in variants}
        run(["ip", "-batch", "-"], input="".join(f"netns add {p}\n" for ps in names.values()
                                                 for p in ps))
        for v in variants:
            v.pods, v.results = names[v.name], {}
        for command in ("ADD", "DEL"):
            for i in range(n):
                k = i % len(variants)  # rotate who goes first
                for v in variants[k:] + variants[:k]:
                    ms = v.invoke(command, i)
                    (v.add_ms if command == "ADD" else v.del_ms).append(ms)
        run(["ip", "-batch", "-"], input="".join(f"netns del {p}\n" for ps in names.values()
                                                 for p in ps), check=False)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)


def harness_overhead(n: int) -> dict[str, float]:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["/bin/true"])
        xs.append((time.perf_counter() - t0) * 1000)
    return summary(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="containers per round and variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--masq", action="store_true", help="also compare ipMasq=true")
    ap.add_argument("--no-fallback", action="store_true")
    ap.add_argument("--dual-stack", action="store_true",
                    help="every variant dual-stack; saved as cni_latency_dualstack.json")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/results/<name>.json")
    args = ap.parse_args(argv)
    default = default_out(args.dual_stack)
    args.out = args.out or default
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    box = Sandbox(f"pfb{os.getpid() % 100000}x{secrets.token_hex(2)}")
    box.start_reaper()
    load_before = os.getloadavg()
    try:
        host = box.add_netns("bh")
        tmp = Path(tempfile.mkdtemp(prefix="cni-bench-"))
        variants = build_variants(tmp, args.masq, not args.no_fallback, args.dual_stack)
        sock = tmp / "run" / "cni.sock"
        box.spawn("cni-server", [sys.executable, "-m", "flanneld.cni_server", "--socket",
                                 str(sock)], netns=host,
                  env=dict(os.environ, PYTHONPATH=str(REPO)))
        wait_for(sock.exists, 30, what="the CNI server socket")
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        with open(f"/run/netns/{host}") as ns:
            setns(ns.fileno())  # the harness, and every plugin it runs, live in the host netns
        try:
            measure(box, variants, args.n, args.rounds)
            overhead = harness_overhead(args.n)
        finally:
            setns(home)  # cleanup kills whatever is left in the host netns: not us
    finally:
        box.cleanup()
    report = render(variants, overhead, args, load_before)
    print(report["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in report.items() if k != "table"}
    args.out.write_text(json.dumps(body, indent=2) + "\n")
    if args.out == default:  # a run saved elsewhere is an experiment: leave the docs alone
        docs = REPO / "docs" / "bench" / default.name
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(json.dumps(body, indent=2) + "\n")
    return 0


def render(variants: list[Variant], overhead: dict[str, float], args: argparse.Namespace,
           load_before: tuple[float, float, float]) -> dict[str, Any]:
    figures = {v.name: {"ADD": summary(v.add_ms), "DEL": summary(v.del_ms)} for v in variants}
    ratios: dict[str, float] = {}
    for ours, ref in (("ours", "ref"), ("ours-masq", "ref-masq")):
        if ours in figures and ref in figures:
            for op in ("ADD", "DEL"):
                ratios[f"{ours}/{ref} {op} p50"] = round(
                    figures[ours][op]["p50"] / figures[ref][op]["p50"], 3)
    lines = [f"{'variant':<11} {'ADD p50':>8} {'ADD p95':>8} {'DEL p50':>8} {'DEL p95':>8}  (ms)"]
    for name, f in figures.items():
        lines.append(f"{name:<11} {f['ADD']['p50']:>8} {f['ADD']['p95']:>8} "
                     f"{f['DEL']['p50']:>8} {f['DEL']['p95']:>8}")
    lines.append(f"harness /bin/true p50 {overhead['p50']} ms")
    lines += [f"ratio {k}: {v}x (goal <= 1.0)" for k, v in ratios.items()]
    if "fallback" in figures:
        lines.append(f"fallback ADD p50 {figures['fallback']['ADD']['p50']} ms (goal < 300)")
    return {
        "benchmark": NAME_DS if args.dual_stack else NAME,
        "method": "cni-spec.md §11, interleaved variants",
        **({"dual_stack": True} if args.dual_stack else {}),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n_per_round": args.n,
        "rounds": args.rounds, "kernel": platform.release(), "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "harness_true_ms": overhead, "figures": figures, "ratios": ratios,
        "table": "\n".join(lines)}


if __name__ == "__main__":
    sys.exit(main())
