"""Check this node end to end; say what is wrong and how to fix it (exit 1 on any FAIL).

Every check prints OK, WARN, FAIL or SKIP with one line of detail, and a fix
for anything not OK: etcd and the network config, our lease against
subnet.env, flanneld's readiness, every peer's kernel state against etcd,
stray entries, MTUs, ip_forward, rp_filter, the VXLAN checksum-offload bug
of old kernels, and the pod address store against the pods that exist.
With the wireguard backend (wg-*): the key file, the devices, every peer on them and
their handshakes.
With IPv6 enabled, the same for the IPv6 side (v6-*: our lease's IPv6 half,
flannel-v6.<VNI>, every peer's IPv6 entries; ip6-forward; an MTU for both
families). docs/troubleshooting.md is generated from the table of checks in
findings.py.

  flannelctl doctor            # on a node configured for flanneld (FLANNELD_* env)
  flannelctl doctor --json
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from backends.vxlan6 import VXLAN6_OVERHEAD
from flanneld import neightables
from flanneld.ctl import _checks6 as v6checks
from flanneld.ctl import _checkswg as wgchecks
from flanneld.ctl import _common as c
from flanneld.ctl._node import NodeView, inspect_node, link_mtu
from flanneld.ctl.findings import (
    BY_NAME,
    CHECKS,
    FAIL,
    OK,
    SKIP,
    WARN,
    Check,
    Finding,
    peer_findings,
)
from netlink import ntable
from netlink.uapi import AF_INET, AF_INET6

WG_OVERHEAD = 80  # flannel's: one cost for both families (IPv6 + UDP + WireGuard)
__all__ = ["BY_NAME", "CHECKS", "FAIL", "OK", "SKIP", "WARN", "Check", "Finding"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_options(parser)
    from flanneld.ctl import ipam

    ipam.add_store_options(parser)


# --- the checks: pure over what was read ------------------------------------------------


def check_cluster(cluster: c.Cluster) -> list[Finding]:
    if cluster.error:
        return [Finding("etcd", FAIL, f"unreachable: {cluster.error}"),
                Finding("network-config", SKIP, "etcd unreachable")]
    out = [Finding("etcd", OK, f"{len(cluster.leases)} leases under {cluster.prefix}")]
    if cluster.config_error:
        out.append(Finding("network-config", FAIL, cluster.config_error))
    else:
        cfg = cluster.config
        nets = [f"network {cfg.ipv4_network}"] if cfg.ipv4_network is not None else []
        nets += [f"IPv6 network {cfg.ipv6_network}"] if cfg.enable_ipv6 else []
        out.append(Finding("network-config", OK, f"{', '.join(nets)}, backend "
                           f"{cfg.backend_type}"))
    return out


def check_lease(cluster: c.Cluster, view: NodeView) -> list[Finding]:
    env = view.subnet_env
    if env is None:
        return [Finding("subnet-env", FAIL, view.subnet_env_error),
                Finding("lease", SKIP, "no subnet.env")]
    shown = [f"FLANNEL_SUBNET={env.ipv4_subnet}"] if env.ipv4_subnet else []
    shown += [f"FLANNEL_IPV6_SUBNET={env.ipv6_subnet}"] if env.ipv6_subnet else []
    out = [Finding("subnet-env", OK, ", ".join([*shown, f"FLANNEL_MTU={env.mtu}"]))]
    if cluster.error:
        return [*out, Finding("lease", SKIP, "etcd unreachable")]
    own = view.own
    subnet = env.ipv4_subnet.network if env.ipv4_subnet else (
        env.ipv6_subnet.network if env.ipv6_subnet else None)
    if own is None or own.lease is None:
        return [*out, Finding("lease", FAIL, f"no lease for {subnet} in etcd")]
    local = view.device.local if view.device is not None else None
    if local and own.lease.ipv4_subnet is not None and str(own.lease.attrs.public_ip) != local:
        return [*out, Finding("lease", FAIL, f"{own.key} belongs to PublicIP "
                              f"{own.lease.attrs.public_ip}, but this node's device says "
                              f"{local}")]
    return [*out, Finding("lease", OK, f"{own.key} ({c.human_ttl(own)})")]


def check_peers(view: NodeView) -> list[Finding]:
    names = ("peers", "skipped", "strays")
    if not view.ipv4:
        return [Finding(n, SKIP, "IPv6-only network (EnableIPv4 false); see v6-peers")
                for n in names]
    if view.desired is None:
        why = ("no lease or interface found" if view.subnet_env else "no subnet.env")
        return [Finding(n, SKIP, why) for n in names]
    return peer_findings(view.checks, view.strays, names)


def check_mtu(view: NodeView, backend_overhead: int, bridge_mtu: int | None,
              config_mtu: int | None = None, overhead6: int | None = None) -> Finding:
    """`overhead6`: IPv6 is enabled and its encapsulation costs that much (vxlan 70, host-gw
    0); FLANNEL_MTU must then fit both families (flanneld writes the smaller)."""
    env = view.subnet_env
    if not view.ext_mtu:
        return Finding("mtu", SKIP, "external interface not found")
    base = config_mtu or view.ext_mtu
    want = base - backend_overhead
    costs = ([backend_overhead] if view.ipv4 else []) + ([overhead6] if overhead6 is not None
                                                          else [])
    want_env = base - max(costs or [backend_overhead])
    have: list[str] = [f"{view.ext_name} {view.ext_mtu}"]
    problems = []
    if view.device is not None:
        have.append(f"{view.device.name} {view.device.mtu}")
        if view.device.mtu != want:
            problems.append(f"{view.device.name} MTU {view.device.mtu}, want {want}")
    dev6 = view.v6.device if view.v6 is not None else None
    if dev6 is not None:
        have.append(f"{dev6.name} {dev6.mtu}")
    if env is not None:
        have.append(f"subnet.env {env.mtu}")
        if env.mtu != want_env:
            why = (f" (VXLAN over IPv6 costs {VXLAN6_OVERHEAD} bytes; one pod MTU must fit "
                   "both families)" if overhead6 is not None and overhead6 > backend_overhead
                   and view.ipv4 else "")
            problems.append(f"FLANNEL_MTU {env.mtu}, want {want_env}{why}")
    if bridge_mtu is not None:
        have.append(f"cni0 {bridge_mtu}")
        if env is not None and bridge_mtu > env.mtu:
            problems.append(f"cni0 MTU {bridge_mtu} is above FLANNEL_MTU {env.mtu}")
    return Finding("mtu", FAIL if problems else OK, "; ".join(problems) or ", ".join(have))


def check_sysctls(ip_forward: str | None, rp: dict[str, int], ipv4: bool = True
                  ) -> list[Finding]:
    out = [Finding("ip-forward", OK if ip_forward == "1" else FAIL,
                   f"net.ipv4.ip_forward = {ip_forward}") if ipv4 else
           Finding("ip-forward", SKIP, "IPv6-only network (EnableIPv4 false)")]
    strict = [f"{dev} {v}" for dev, v in rp.items() if v == 1]
    out.append(Finding("rp-filter", WARN if strict else OK,
                       "strict on " + ", ".join(strict) if strict else
                       ", ".join(f"{d} {v}" for d, v in rp.items()) or "nothing to check"))
    return out


def check_neigh(tables: list[ntable.NeighTable] | None, peers: int,
                families: tuple[int, ...]) -> Finding:
    if tables is None:
        return Finding("neigh-table", SKIP, "the neighbour tables could not be read")
    found = neightables.findings(tables, peers, families)
    mine = [t for t in tables if t.family in families]
    have = ", ".join(f"{t.name} gc_thresh2 {t.thresh2} gc_thresh3 {t.thresh3}, {t.entries} in "
                     "use" for t in mine)
    if not found:
        return Finding("neigh-table", OK, f"{peers} peers: {have or 'no table read'}")
    worst = FAIL if any(peers + ntable.HEADROOM >= t.thresh3 for t, _, _ in found) else WARN
    return Finding("neigh-table", worst, "; ".join(f"{t.name}: {p}" for t, p, _ in found),
                   fix=" and ".join(fix for _, _, fix in found))


def kernel_at_least(release: str, want: tuple[int, int]) -> bool:
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= want


def check_csum(release: str, device: str | None, offload: str | None) -> Finding:
    if device is None:
        return Finding("vxlan-csum", SKIP, "no vxlan device")
    fixed = kernel_at_least(release, (5, 7))
    if offload is None:
        return Finding("vxlan-csum", OK if fixed else WARN,
                       f"kernel {release}" + ("" if fixed else "; ethtool not found to check"))
    if offload.startswith("on") and not fixed:
        return Finding("vxlan-csum", WARN, f"kernel {release} < 5.7 and {device} "
                       f"tx-checksum-ip-generic: {offload}")
    return Finding("vxlan-csum", OK, f"kernel {release}, tx-checksum-ip-generic: {offload}")


# --- reading the host ---------------------------------------------------------------------


def _sysctl(path: str) -> str | None:
    try:
        return Path("/proc/sys", path).read_text().strip()
    except OSError:
        return None


def _rp_filters(devices: list[str]) -> dict[str, int]:
    out = {}
    every = int(_sysctl("net/ipv4/conf/all/rp_filter") or 0)
    for dev in devices:
        value = _sysctl(f"net/ipv4/conf/{dev}/rp_filter")
        if value is not None:
            out[dev] = max(every, int(value))  # the kernel uses the larger of the two
    return out


def _offload(device: str) -> str | None:
    exe = shutil.which("ethtool")
    if exe is None:
        return None
    proc = subprocess.run([exe, "-k", device], capture_output=True, text=True, timeout=10)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("tx-checksum-ip-generic:"):
            return line.split(":", 1)[1].strip()
    return None


def diagnose(args: argparse.Namespace) -> list[Finding]:
    from flanneld.ctl import ipam

    o = c.options(args)
    cluster = c.run_async(lambda: c.read_cluster(o))
    view = inspect_node(o.subnet_file, cluster)
    findings = check_cluster(cluster) + check_lease(cluster, view)
    if view.v6 is not None:
        findings.append(v6checks.check_lease6(view))
    ready, text = c.readyz(o)
    findings.append(Finding("flanneld", {True: OK, False: FAIL, None: WARN}[ready], text))
    findings += wgchecks.findings(view.wg) if view.wg is not None else check_peers(view)
    vxlan = view.backend == "vxlan"
    config_mtu = getattr(cluster.config.backend, "mtu", None) if cluster.config else None
    overhead = {"vxlan": 50, "wireguard": WG_OVERHEAD}.get(view.backend, 0)
    if view.v6 is not None and view.wg is None:
        device = v6checks.check_device6(view, config_mtu)
        findings += [device] if device is not None else []
        findings += v6checks.check_peers6(view)
    findings.append(check_mtu(view, overhead, link_mtu("cni0"), config_mtu,
                              (VXLAN6_OVERHEAD if vxlan else overhead) if view.v6 is not None
                              else None))
    devices = [d for d in (view.device.name if view.device else None, "cni0") if d]
    forward, rp = check_sysctls(_sysctl("net/ipv4/ip_forward"), _rp_filters(devices), view.ipv4)
    findings.append(forward)
    if view.v6 is not None:
        findings.append(v6checks.check_forward6(_sysctl("net/ipv6/conf/all/forwarding")))
    findings.append(rp)
    try:
        tables: list[ntable.NeighTable] | None = neightables.read_tables()
    except OSError:
        tables = None
    peers = max(len(cluster.leases) - 1, 0)
    families = tuple(f for f, on in ((AF_INET, view.ipv4), (AF_INET6, view.v6 is not None)) if on)
    findings.append(check_neigh(tables, peers, families))
    dev = view.device.name if view.device else (
        view.v6.device.name if view.v6 is not None and view.v6.device else None)
    findings.append(check_csum(platform.release(), dev, _offload(dev) if dev else None))
    findings.append(ipam.finding(args, o))
    return findings


def render(findings: list[Finding]) -> str:
    out = []
    for f in findings:
        out.append(f"{f.status:<4}  {f.check:<14} {f.detail}")
        out += [f"{'':20}- {line}" for line in f.lines[:20]]
        if len(f.lines) > 20:
            out.append(f"{'':20}... and {len(f.lines) - 20} more")
        if f.status in (WARN, FAIL):
            out.append(f"{'':20}fix: {f.what_to_do}")
    worst = FAIL if any(f.status == FAIL for f in findings) else (
        WARN if any(f.status == WARN for f in findings) else OK)
    counts = {s: sum(f.status == s for f in findings) for s in (OK, WARN, FAIL, SKIP)}
    out.append(f"\n{worst}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    findings = diagnose(args)
    if args.json:
        c.emit_json({"ok": not any(f.status == FAIL for f in findings),
                     "checks": [f.as_dict() for f in findings]})
    else:
        print(render(findings))
    return 1 if any(f.status == FAIL for f in findings) else 0


def render_markdown() -> str:
    """docs/troubleshooting.md's check list, generated from CHECKS."""
    out = []
    for ch in CHECKS:
        out += [f"### `{ch.name}`", "", f"- **Looks at:** {ch.what}.",
                f"- **When it is not OK:** {ch.means}.", f"- **Fix:** {ch.fix}", ""]
    return "\n".join(out)


BEGIN, END = "<!-- checks:begin (generated by flanneld.ctl.doctor) -->", "<!-- checks:end -->"
Render = Callable[[], str]


def update_docs(path: Path, render_fn: Render = render_markdown) -> None:
    from flanneld.flags import rewrite_generated

    rewrite_generated(path, BEGIN, END, render_fn())
