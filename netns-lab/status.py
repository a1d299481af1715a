"""The lab at a glance: hosts, public IPs, subnets, backends, peers programmed, pods.

`collect` reads etcd (leases) and each host's kernel (routes, neighbours, FDB)
into plain data; `render` turns that into the table. Nothing is taken from the
state file that the cluster itself can tell: the state file only says which
hosts and pods the lab made.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from netns_lab import observe
from netns_lab.build import flanneld_proc
from netns_lab.lab import Lab
from netns_lab.netns import list_netns

from core.lease import Lease


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def collect(lab: Lab) -> dict[str, Any]:
    t = lab.topology
    existing = set(list_netns())
    etcd_error = ""
    leases: list[Lease] = []
    health = observe.etcd_health(lab)
    if not any(health.values()):
        etcd_error = "no member is healthy"
    else:
        try:
            leases = observe.read_leases(lab, timeout=5)
        except Exception as exc:  # etcd down is a state worth showing, not a crash
            etcd_error = str(exc).splitlines()[-1] if str(exc) else repr(exc)
    host_ips = {lab.plan.ip_of(h) for h in t.host_names}
    live = [ls for ls in leases if ls.attrs.public_ip in host_ips]

    def host_row(host: str) -> dict[str, Any]:
        ns = lab.ns(host)
        ip = lab.plan.ip_of(host)
        lease = observe.own_lease(leases, ip)
        row: dict[str, Any] = {
            "host": host, "netns": ns, "public_ip": str(ip),
            "subnet": str(lease.subnet) if lease else "", "subnet_from": "etcd" if lease else "",
            "backend": lease.attrs.backend_type if lease else "",
            "flanneld": "down", "peers": {}, "expected_peers": 0,
            "pods": {p.name: p.ip for p in lab.pods.get(host, {}).values()},
        }
        if ns not in existing:
            row["flanneld"] = "no namespace"
            return row
        if lab.sandbox.pid(flanneld_proc(host)) is not None:
            row["flanneld"] = "ready" if observe.flanneld_ready(ns) else "running"
        view = observe.kernel_view(ns)
        if lease is None and etcd_error:
            # Without etcd: our subnet as flanneld wrote it, peers as the kernel has them.
            env = observe.read_subnet_env(lab.host_dir(host) / "subnet.env")
            if "FLANNEL_SUBNET" in env:
                row["subnet"] = str(ip_network(env["FLANNEL_SUBNET"], strict=False))
                row["subnet_from"] = "subnet.env"
            row["kernel_routes"] = observe.pod_routes(view, t.pod_network, row["subnet"])
        row["peers"] = observe.peers_of(lab, host, live, view)
        row["expected_peers"] = len(row["peers"])
        vx = view.vxlan_links()
        if vx:
            row["vxlan_device"] = {"name": vx[0].get("ifname"),
                                   "vni": vx[0]["linkinfo"].get("info_data", {}).get("id"),
                                   "mtu": vx[0].get("mtu")}
        return row

    hosts = observe.parallel(host_row, t.host_names)
    return {
        "lab": lab.name, "description": t.description, "backend": t.backend_type,
        "network": str(t.pod_network), "etcd_error": etcd_error,
        "etcd": [{"name": m.name, "ip": str(lab.plan.ip_of(m.name)), "segment": m.segment,
                  "healthy": health.get(m.name, False)} for m in t.etcd],
        "hosts": hosts,
        "stale_leases": [str(ls.subnet) for ls in leases if ls not in live],
        "partitions": [list(p) for p in lab.partitions],
        "segments": {s.name: str(s.subnet) for s in t.segments},
    }


def _peers_cell(row: dict[str, Any]) -> str:
    peers: dict[str, str] = row["peers"]
    if "kernel_routes" in row:
        return f"{len(row['kernel_routes'])} routes*"
    if not peers and row["flanneld"] == "no namespace":
        return "-"
    good = sum(1 for s in peers.values() if s in ("vxlan", "direct"))
    kinds = sorted({s for s in peers.values() if s in ("vxlan", "direct")})
    bad = sorted(k for k, s in peers.items() if s not in ("vxlan", "direct"))
    cell = f"{good}/{len(peers)}"
    if kinds:
        cell += f" ({'+'.join(kinds)})"
    if bad:
        cell += f" missing {','.join(bad)}"
    return cell


def render(data: dict[str, Any]) -> str:
    rows = [[h["host"], h["public_ip"],
             (h["subnet"] + ("*" if h["subnet_from"] == "subnet.env" else "")) or "-",
             h["backend"] or "-",
             _peers_cell(h), h["flanneld"],
             " ".join(f"{n}={ip}" for n, ip in h["pods"].items()) or "-"]
            for h in data["hosts"]]
    desc = f": {data['description']}" if data["description"] else ""
    out = [f"lab {data['lab']!r}{desc} (network {data['network']}, backend {data['backend']})",
           "",
           table(["HOST", "PUBLIC IP", "SUBNET", "BACKEND", "PEERS", "FLANNELD", "PODS"], rows),
           ""]
    etcd = ", ".join(f"{m['name']} {m['ip']} {'healthy' if m['healthy'] else 'DOWN'}"
                     for m in data["etcd"])
    out.append(f"etcd: {etcd}")
    if data["etcd_error"]:
        out.append(f"etcd unreachable: {data['etcd_error']}")
        if any("kernel_routes" in h for h in data["hosts"]):
            out.append("* without etcd: subnets from subnet.env, routes into the pod network "
                       "from the kernel (peers not checked against leases)")
    if data["stale_leases"]:
        out.append(f"leases held by no lab host: {', '.join(data['stale_leases'])}")
    if data["partitions"]:
        out.append("partitions: " + ", ".join(f"{a}<->{b}" for a, b in data["partitions"]))
    return "\n".join(out)
