"""Show this node: its lease, backend, MTU, readiness, and every peer, programmed or not.

Each peer row is a lease from etcd (subnet, public IP, VtepMAC, expiry) and
its verdict against this node's kernel: programmed, partial, stale, missing,
skipped or unreachable (`flannelctl doctor` says how to fix what is not).
With etcd down it still shows what subnet.env and the kernel hold.

  flannelctl status            # on a node: settings from the running flanneld
  flannelctl status --json
"""

from __future__ import annotations

import argparse
from typing import Any

from backends.peerstate import summary
from flanneld.ctl import _common as c
from flanneld.ctl._node import NodeView, inspect_node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_options(parser)


def collect(args: argparse.Namespace) -> dict[str, Any]:
    o = c.options(args)
    cluster = c.run_async(lambda: c.read_cluster(o))
    view = inspect_node(o.subnet_file, cluster)
    ready, ready_text = c.readyz(o)
    return to_data(o, cluster, view, ready, ready_text)


def to_data(o: Any, cluster: c.Cluster, view: NodeView, ready: bool | None,
            ready_text: str) -> dict[str, Any]:
    env = view.subnet_env
    own = view.own
    rows = []
    for row in cluster.leases:
        if own is not None and row.key == own.key:
            continue
        check = view.checks.get(row.key)
        rows.append({**row.as_dict(), "expires": c.human_ttl(row),
                     "state": check.state if check else ("invalid" if row.problem else "unknown"),
                     "kind": check.kind if check else "",
                     "problems": list(check.problems) if check else
                     ([row.problem] if row.problem else [])})
    dev = view.device
    return {
        "etcd": {"endpoints": list(o.etcd_endpoints), "prefix": cluster.prefix,
                 "error": cluster.error or None, "config_error": cluster.config_error or None},
        "network": str(cluster.config.network) if cluster.config else
        (str(env.network) if env else None),
        "backend": view.backend or None,
        "subnet": str(env.subnet.network) if env else None,
        "subnet_env": {"path": str(o.subnet_file), "error": view.subnet_env_error or None,
                       "mtu": env.mtu if env else None, "ipmasq": env.ipmasq if env else None},
        "lease": {**own.as_dict(), "expires": c.human_ttl(own)} if own else None,
        "public_ip": str(view.public_ip) if view.public_ip else None,
        "interface": {"name": view.ext_name, "index": view.ext_index, "mtu": view.ext_mtu}
        if view.ext_index else None,
        "device": {"name": dev.name, "index": dev.index, "mtu": dev.mtu, "mac": dev.mac,
                   "vni": dev.vni, "up": dev.up} if dev else None,
        "ready": ready, "readyz": ready_text,
        "peers": rows, "summary": summary(view.checks.values()),
        "strays": view.strays, "errors": view.errors,
    }


def render(d: dict[str, Any]) -> str:
    lease = d["lease"]
    out = []
    held = (f"{lease['key']} ({lease['expires']}, etcd lease {lease['etcd_lease']})" if lease
            else "none in etcd" + (" (etcd unreachable)" if d["etcd"]["error"] else ""))
    dev = d["device"]
    mtu = [f"subnet.env {d['subnet_env']['mtu']}"] if d["subnet_env"]["mtu"] else []
    if dev:
        mtu.insert(0, f"{dev['name']} {dev['mtu']}")
    if d["interface"]:
        mtu.append(f"{d['interface']['name']} {d['interface']['mtu']}")
    ready = {True: "ready", False: "NOT READY", None: "unknown"}[d["ready"]]
    out += [f"subnet     {d['subnet'] or '-'} (network {d['network'] or '-'})",
            f"lease      {held}",
            f"public IP  {d['public_ip'] or '-'}"
            + (f" on {d['interface']['name']}" if d["interface"] else ""),
            f"backend    {d['backend'] or '-'}"
            + (f" ({dev['name']}, VNI {dev['vni']}, MAC {dev['mac']}"
               f"{'' if dev['up'] else ', DOWN'})" if dev else ""),
            f"MTU        {', '.join(mtu) or '-'}",
            f"flanneld   {ready}: {d['readyz']}"]
    if d["etcd"]["error"]:
        out.append(f"etcd       UNREACHABLE ({', '.join(d['etcd']['endpoints'])}): "
                   f"{d['etcd']['error']}")
    elif d["etcd"]["config_error"]:
        out.append(f"etcd       network config: {d['etcd']['config_error']}")
    rows = [[p["subnet"] or p["key"], p["public_ip"] or "-", p["vtep_mac"] or "-", p["expires"],
             p["state"] + (f" ({p['kind']})" if p["kind"] and p["state"] == "programmed" else ""),
             "; ".join(p["problems"])[:90]] for p in d["peers"]]
    out += ["", c.table(["PEER SUBNET", "PUBLIC IP", "VTEP MAC", "EXPIRES", "STATE", "DETAIL"],
                        rows) if rows else "no peers"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(d["summary"].items()))
    if counts:
        out.append(f"\n{len(d['peers'])} peers: {counts}")
    if d["strays"]:
        out.append(f"{len(d['strays'])} kernel entries no lease wants: " + "; ".join(d["strays"]))
    out += [f"error: {e}" for e in d["errors"]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    data = collect(args)
    if args.json:
        c.emit_json(data)
    else:
        print(render(data))
    return 0
