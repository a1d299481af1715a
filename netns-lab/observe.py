"""What a lab looks like right now: leases from etcd, peer state from each host's kernel.

Reading is I/O (etcdctl, `ip -j`, `bridge -j`); deciding whether a peer is
programmed is a pure function over that plain data (`peer_state`).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from netns_lab.etcd import etcdctl_binary
from netns_lab.lab import Lab
from netns_lab.netns import in_netns, list_netns, run

from backends.desired import PeerEntries
from backends.peerstate import (
    MISSING,
    PROGRAMMED,
    IpJson,
    check_entries,
    index_of,
    tables_from_ip_json,
)
from backends.state import RouteSpec
from core.lease import Lease, LeaseError, decode_lease, subnets_prefix

HEALTHZ_PORT = 8471
T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over items in threads (the work is subprocesses and sockets); first error re-raised."""
    from concurrent.futures import ThreadPoolExecutor
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    return [f.result() for f in futures]


# -- etcd ---------------------------------------------------------------------


def etcdctl(lab: Lab, *args: str, timeout: float = 10,
            endpoints: list[str] | None = None, auth: bool = True) -> str:
    """etcdctl against all of the lab's members (or `endpoints`), run from the first member
    that still exists; with the lab's certificates, and as root if `auth` (etcd.auth)."""
    existing = set(list_netns())
    member = next((m for m in lab.topology.etcd if lab.ns(m.name) in existing), None)
    if member is None:
        raise RuntimeError(f"lab {lab.name!r} has no etcd namespace left")
    security, extra_env = lab.etcd_client("root")
    argv = ["ip", "netns", "exec", lab.ns(member.name), etcdctl_binary(),
            "--endpoints", ",".join(endpoints or lab.plan.etcd_endpoints), "--dial-timeout", "1s",
            "--command-timeout", f"{max(1, int(timeout) - 1)}s", *security, *args]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           **(extra_env if auth else {})}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def decode_leases(etcdctl_json: str) -> tuple[list[Lease], list[str]]:
    """Leases from `etcdctl get --prefix -w json` output, and one problem per bad key."""
    leases: list[Lease] = []
    problems: list[str] = []
    for kv in json.loads(etcdctl_json).get("kvs", []) or []:
        key = base64.b64decode(kv["key"]).decode(errors="replace")
        value = base64.b64decode(kv.get("value", ""))
        try:
            leases.append(decode_lease(key, value, lease_id=int(kv.get("lease", 0))))
        except LeaseError as exc:
            problems.append(f"{key}: {exc}")
    return leases, problems


def read_leases(lab: Lab, timeout: float = 10) -> list[Lease]:
    out = etcdctl(lab, "get", "--prefix", subnets_prefix(lab.topology.etcd_prefix) + "/",
                  "-w", "json", timeout=timeout)
    return decode_leases(out)[0]


def etcd_health(lab: Lab) -> dict[str, bool]:
    """Per member: does its /health answer true (probed from its own namespace)."""
    def probe(m: Any) -> bool:
        try:
            return bool(m.healthy())
        except Exception:
            return False
    members = lab.etcd_members()
    existing = set(list_netns())
    return dict(zip([m.name for m in members],
                    parallel(lambda m: m.netns in existing and probe(m), members), strict=True))


# -- kernel ---------------------------------------------------------------------


@dataclass
class KernelView:
    routes: list[dict[str, Any]] = field(default_factory=list)
    neighs: list[dict[str, Any]] = field(default_factory=list)
    fdb: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def vxlan_links(self) -> list[dict[str, Any]]:
        return [lk for lk in self.links
                if lk.get("linkinfo", {}).get("info_kind") == "vxlan"]


def _json_stream(text: str) -> list[Any]:
    """`ip -j -batch` prints one JSON document per command, back to back."""
    dec = json.JSONDecoder()
    out: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        doc, i = dec.raw_decode(text, i)
        out.append(doc)


def kernel_view(netns: str) -> KernelView:
    batch = "route show table main\nneigh show\nlink show\n"
    proc = subprocess.run(["ip", "-j", "-d", "-4", "-n", netns, "-batch", "-"], input=batch,
                          capture_output=True, text=True, timeout=10, check=True)
    docs = _json_stream(proc.stdout)
    fdb = run(["bridge", "-j", "-n", netns, "fdb", "show"], check=False).stdout
    return KernelView(routes=docs[0], neighs=docs[1], links=docs[2],
                      fdb=json.loads(fdb) if fdb.strip() else [])


def peer_state(lease: Lease, view: KernelView) -> str:
    """How a host reaches a remote lease: "vxlan", "direct", "partial" or "missing".

    vxlan: route S via S0 dev flannel.N onlink + neighbour S0 -> VtepMAC + fdb VtepMAC -> P.
    direct: route S via P (host-gw, or vxlan DirectRouting to an on-link peer).
    partial: some of the entries, or stale ones. The verdict is flannelctl's
    (`backends.peerstate.check_entries`), over this host's `ip -j` output.
    """
    j = IpJson(view.routes, view.neighs, view.fdb, view.links)
    cidr = str(lease.subnet)
    s0 = str(lease.subnet.network_address)
    public = str(lease.attrs.public_ip)
    routes = tables_from_ip_json(j, None)
    direct = PeerEntries(None, None, (cidr, RouteSpec(public, 0)))
    if check_entries(direct, routes)[0] == PROGRAMMED:
        return "direct"
    dev = next((str(lk.get("ifname")) for lk in view.vxlan_links()), None) or next(
        (str(r["dev"]) for r in view.routes if str(r.get("dev", "")).startswith("flannel")),
        "flannel.1")
    mac = (lease.attrs.vtep_mac or "").lower()
    vxlan = PeerEntries((s0, mac), (mac, public),
                        (cidr, RouteSpec(s0, index_of(j, dev), onlink=True)))
    state = check_entries(vxlan, tables_from_ip_json(j, dev))[0]
    return {PROGRAMMED: "vxlan", MISSING: "missing"}.get(state, "partial")


def read_subnet_env(path: Path) -> dict[str, str]:
    """subnet.env as flannel's CNI plugin reads it: KEY=value lines, nothing trimmed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def pod_routes(view: KernelView, network: IPv4Network, own: str) -> list[str]:
    """Routes into the pod network other than our own subnet (the peers, as programmed)."""
    out = []
    for r in view.routes:
        try:
            dst = IPv4Network(str(r.get("dst")))
        except ValueError:
            continue
        if dst.subnet_of(network) and str(dst) != own:
            out.append(str(dst))
    return out


def own_lease(leases: list[Lease], ip: IPv4Address) -> Lease | None:
    return next((ls for ls in leases if ls.attrs.public_ip == ip), None)


def peers_of(lab: Lab, host: str, leases: list[Lease], view: KernelView) -> dict[str, str]:
    """peer state per remote lease (keyed by subnet) as seen from `host`."""
    mine = lab.plan.ip_of(host)
    return {str(ls.subnet): peer_state(ls, view) for ls in leases if ls.attrs.public_ip != mine}


def converged(lab: Lab) -> bool:
    """Every host holds a lease, and every host has programmed every other host's lease."""
    leases = read_leases(lab)
    hosts = lab.topology.host_names
    if any(own_lease(leases, lab.plan.ip_of(h)) is None for h in hosts):
        return False
    views = parallel(lambda h: kernel_view(lab.ns(h)), hosts)
    ips = {lab.plan.ip_of(h) for h in hosts}
    live = [ls for ls in leases if ls.attrs.public_ip in ips]
    for host, view in zip(hosts, views, strict=True):
        states = peers_of(lab, host, live, view)
        if any(s not in ("vxlan", "direct") for s in states.values()):
            return False
    return True


# -- flanneld -------------------------------------------------------------------


def flanneld_ready(netns: str, port: int = HEALTHZ_PORT) -> bool:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False
    return in_netns(netns, probe)
