"""The lab at a glance: hosts, public IPs, subnets, backends, peers programmed, pods.

`collect` reads etcd (leases) and each host's kernel (routes, neighbours, FDB)
into plain data; `render` turns that into the table. Nothing is taken from the
state file that the cluster itself can tell: the state file only says which
hosts and pods the lab made. Then, unless asked not to, each host's first pod pings one
pod of every other host: a peer programmed but silent shows as `N unreachable` in PEERS
(a full host-wide neighbour table did exactly that). A dual-stack or IPv6-only network gets the IPv6
columns too: the host's PublicIPv6, its IPv6 subnet and its IPv6 peers. A wireguard
lab's hosts also carry their WireGuard devices as the UAPI sockets report them
(`wg_devices`: listen port, public key, peers, allowed IPs), summed up in one line.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from netns_lab import memory, observe, wgview
from netns_lab.lab import Lab, flanneld_proc
from netns_lab.netns import list_netns
from netns_lab.texttable import table

from core.lease import Lease

OK_PEER = observe.OK_PEER
__all__ = ["OK_PEER", "collect", "render", "table"]


def collect(lab: Lab, probe: bool = True, probe_all: bool = False) -> dict[str, Any]:
    """The lab's state; with `probe`, also which peers each host's pod gets no ping reply
    from (`unreachable`, `unreachable6`: programmed is not the same as working), among
    the `probed` ones (every peer up to 64; with more, 64 round the ring unless
    `probe_all`)."""
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
    live = [ls for ls in leases if observe.lease_owner(lab, ls) is not None]

    def host_row(host: str) -> dict[str, Any]:
        ns = lab.ns(host)
        ip6 = lab.plan.ip6_of(host)
        lease = observe.host_lease(lab, host, live)
        row: dict[str, Any] = {
            "host": host, "netns": ns,
            "public_ip": str(lab.plan.addr_of(host)), "public_ipv6": str(ip6) if ip6 else "",
            "subnet": str(lease.ipv4_subnet) if lease and lease.ipv4_subnet else "",
            "subnet6": str(lease.ipv6_subnet) if lease and lease.ipv6_subnet else "",
            "subnet_from": "etcd" if lease else "",
            "backend": lease.attrs.backend_type if lease else "",
            "flanneld": "down", "peers": {}, "peers6": {}, "expected_peers": 0,
            "pods": {p.name: p.ip or p.ip6 for p in lab.pods.get(host, {}).values()},
            "pods6": {p.name: p.ip6 for p in lab.pods.get(host, {}).values() if p.ip6},
        }
        if ns not in existing:
            row["flanneld"] = "no namespace"
            return row
        if lab.sandbox.pid(flanneld_proc(host)) is not None:
            row["flanneld"] = "ready" if observe.flanneld_ready(ns) else "running"
        view = observe.host_view(lab, host)
        if lease is None and etcd_error:
            # Without etcd: our subnets as flanneld wrote them, peers as the kernel has them.
            env = observe.read_subnet_env(lab.host_dir(host) / "subnet.env")
            for key, col in (("FLANNEL_SUBNET", "subnet"), ("FLANNEL_IPV6_SUBNET", "subnet6")):
                if key in env:
                    row[col] = str(ip_network(env[key], strict=False))
                    row["subnet_from"] = "subnet.env"
            row["kernel_routes"] = observe.pod_routes(view, t.pod_network, row["subnet"])
            row["kernel_routes6"] = observe.pod_routes(view, t.pod_network6, row["subnet6"])
        if t.enable_ipv4:
            row["peers"] = observe.peers_of(lab, host, live, view)
        if t.enable_ipv6:
            row["peers6"] = observe.peers6_of(lab, host, live, view)
        row["expected_peers"] = max(len(row["peers"]), len(row["peers6"]))
        if view.wg is not None:
            row["wg_devices"] = wgview.device_summary(view.wg)
        for key, v6 in (("vxlan_device", False), ("vxlan6_device", True)):
            vx = view.vxlan_links(v6=v6)
            if vx:
                row[key] = {"name": vx[0].get("ifname"),
                            "vni": vx[0]["linkinfo"].get("info_data", {}).get("id"),
                            "mtu": vx[0].get("mtu")}
        return row

    hosts = observe.parallel(host_row, t.host_names)
    mem = memory.collect(lab)
    for row in hosts:
        row["memory"] = mem["hosts"].get(row["host"], {})
    if probe:
        from netns_lab import reach  # (reach -> ping -> status: not at import time)
        silent = reach.unreachable_by_host(lab, per_host=None if probe_all else
                                            reach.PROBE_PEERS)
        for row in hosts:
            if row["host"] in silent:  # (a host without a pod is not probed: no key)
                row["probed"] = len(silent[row["host"]]["probed"])
                for v, key in ((4, "unreachable"), (6, "unreachable6")):
                    if v in t.families:
                        row[key] = sorted(silent[row["host"]].get(str(v), []),
                                          key=_host_key)
    world = None
    if t.world:
        world = {"name": t.world.name, "segment": t.world.segment,
                 "addresses": [str(a) for a in lab.plan.addresses_of(t.world.name)]}
    return {
        "lab": lab.name, "description": t.description, "backend": t.backend_type,
        "network": str(t.pod_network or ""), "network6": str(t.pod_network6 or ""),
        "families": list(t.families), "etcd_error": etcd_error,
        "etcd": [{"name": m.name, "ip": str(lab.plan.addr_of(m.name)), "segment": m.segment,
                  "healthy": health.get(m.name, False)} for m in t.etcd],
        "hosts": hosts,
        "stale_leases": [observe.lease_name(ls) for ls in leases if ls not in live],
        "partitions": [list(p) for p in lab.partitions],
        "segments": {s.name: " ".join(str(n) for n in (s.subnet, s.subnet6) if n)
                     for s in t.segments},
        "world": world,
        "memory": {k: v for k, v in mem.items() if k != "hosts"},
    }


def _peers_cell(row: dict[str, Any], key: str = "peers") -> str:
    peers: dict[str, str] = row[key]
    routes = "kernel_routes" + ("6" if key == "peers6" else "")
    if routes in row:
        return f"{len(row[routes])} routes*"
    if not peers and row["flanneld"] == "no namespace":
        return "-"
    good = sum(1 for s in peers.values() if s in OK_PEER)
    kinds = sorted({s for s in peers.values() if s in OK_PEER})
    bad = sorted(k for k, s in peers.items() if s not in OK_PEER)
    cell = f"{good}/{len(peers)}"
    if kinds:
        cell += f" ({'+'.join(kinds)})"
    if bad:
        cell += f" missing {','.join(bad)}"
    silent = row.get("unreachable6" if key == "peers6" else "unreachable")
    if silent:
        probed = row.get("probed", len(peers))
        cell += (f", {len(silent)} unreachable" if probed >= len(peers) else
                 f", {len(silent)} of {probed} probed unreachable")
    return cell


def _host_key(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


def _subnet_cell(h: dict[str, Any], key: str) -> str:
    return (h[key] + ("*" if h["subnet_from"] == "subnet.env" else "")) if h[key] else "-"


def _pods_cell(h: dict[str, Any]) -> str:
    cells = []
    for name, ip in h["pods"].items():
        ip6 = h.get("pods6", {}).get(name, "")
        cells.append(f"{name}={ip}" + (f",{ip6}" if ip6 and ip6 != ip else ""))
    return " ".join(cells) or "-"


def render(data: dict[str, Any]) -> str:
    families = data.get("families", [4])
    headers, cols = ["HOST"], []
    if 4 in families:
        headers += ["PUBLIC IP", "SUBNET", "PEERS"]
        cols += [lambda h: h["public_ip"], lambda h: _subnet_cell(h, "subnet"), _peers_cell]
    if 6 in families:
        headers += ["PUBLIC IPV6", "SUBNET6", "PEERS6"]
        cols += [lambda h: h["public_ipv6"] or "-", lambda h: _subnet_cell(h, "subnet6"),
                 lambda h: _peers_cell(h, "peers6")]
    headers += ["BACKEND", "FLANNELD", "PODS"]
    rows = [[h["host"], *(c(h) for c in cols), h["backend"] or "-", h["flanneld"],
             _pods_cell(h)] for h in data["hosts"]]
    desc = f": {data['description']}" if data["description"] else ""
    nets = " + ".join(n for n in (data["network"], data.get("network6", "")) if n)
    out = [f"lab {data['lab']!r}{desc} (network {nets}, backend {data['backend']})",
           "", table(headers, rows), ""]
    etcd = ", ".join(f"{m['name']} {m['ip']} {'healthy' if m['healthy'] else 'DOWN'}"
                     for m in data["etcd"])
    out.append(f"etcd: {etcd}")
    wg = wgview.devices_line(data["hosts"])
    if wg:
        out.append(wg)
    if data.get("world"):
        w = data["world"]
        out.append(f"world: {' '.join(w['addresses'])} (segment {w['segment']}; "
                   f"`netns-lab exec {w['name']} -- ...`)")
    if data["etcd_error"]:
        out.append(f"etcd unreachable: {data['etcd_error']}")
        if any("kernel_routes" in h for h in data["hosts"]):
            out.append("* without etcd: subnets from subnet.env, routes into the pod network "
                       "from the kernel (peers not checked against leases)")
    if data["stale_leases"]:
        out.append(f"leases held by no lab host: {', '.join(data['stale_leases'])}")
    if data["partitions"]:
        out.append("partitions: " + ", ".join(f"{a}<->{b}" for a, b in data["partitions"]))
    if data.get("memory"):
        out.append(memory.render(data["memory"]))
    silent = [(h["host"], h.get("unreachable", []) + h.get("unreachable6", []))
              for h in data["hosts"] if h.get("unreachable") or h.get("unreachable6")]
    if silent:
        worst = sorted(silent, key=lambda hs: -len(hs[1]))[:5]
        out.append("unreachable (programmed, but its pod gets no ping reply from theirs): "
                   + "; ".join(f"{h} -> {', '.join(sorted(set(d), key=_host_key)[:8])}"
                               + ("..." if len(set(d)) > 8 else "") for h, d in worst)
                   + (f"; {len(silent) - 5} more host(s)" if len(silent) > 5 else ""))
    return "\n".join(out)
