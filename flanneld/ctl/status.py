"""Show this node: its lease, backend, MTU, readiness, and every peer, programmed or not.

Each peer row is a lease from etcd (subnet, public IP, VtepMAC, expiry) and
its verdict against this node's kernel: programmed, partial, stale, missing,
skipped or unreachable (`flannelctl doctor` says how to fix what is not).
With IPv6 enabled it shows both families: the IPv6 subnet and PublicIPv6, the
IPv6 device (vxlan: flannel-v6.<VNI>), and a second table with every peer's
IPv6 verdict (programmed / expected). With the wireguard backend: the devices
(userspace wireguard-go or kernel, listen port), the key file, and per peer its
endpoint, last handshake, received and sent bytes and its verdict. With etcd
down it still shows what subnet.env and the kernel hold.

  flannelctl status            # on a node: settings from the running flanneld
  flannelctl status --json
"""

from __future__ import annotations

import argparse
from typing import Any

from backends.peerstate import summary
from flanneld.ctl import _common as c
from flanneld.ctl._node import NodeView, inspect_node
from flanneld.ctl._node6 import View6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_options(parser)


def collect(args: argparse.Namespace) -> dict[str, Any]:
    o = c.options(args)
    cluster = c.run_async(lambda: c.read_cluster(o))
    view = inspect_node(o.subnet_file, cluster)
    ready, ready_text = c.readyz(o)
    return to_data(o, cluster, view, ready, ready_text)


def _peer_row(row: c.LeaseRow, view: NodeView) -> dict[str, Any]:
    check = view.checks.get(row.key) if view.ipv4 else None
    v6_only = row.lease is not None and row.lease.ipv4_subnet is None
    out = {**row.as_dict(), "expires": c.human_ttl(row),
           "state": check.state if check else ("invalid" if row.problem else
                                               "ipv6-only" if v6_only else "unknown"),
           "kind": check.kind if check else "",
           "problems": list(check.problems) if check else
           ([row.problem] if row.problem else [])}
    if view.wg is not None:
        out["wg"] = [d.verdicts[row.key].as_dict() for d in view.wg.devices
                     if row.key in d.verdicts]
    if view.v6 is not None:
        check6 = view.v6.checks.get(row.key)
        out.update(state6=check6.state if check6 else ("invalid" if row.problem else "unknown"),
                   kind6=check6.kind if check6 else "",
                   problems6=list(check6.problems) if check6 else [])
    return out


def ipv6_data(v6: View6 | None) -> dict[str, Any] | None:
    """The IPv6 side as data (None: IPv6 not enabled)."""
    if v6 is None:
        return None
    dev = v6.device
    return {"network": str(v6.network) if v6.network else None,
            "subnet": str(v6.subnet) if v6.subnet else None,
            "public_ipv6": str(v6.public_ipv6) if v6.public_ipv6 else None,
            "device_name": v6.device_name or None,
            "device": {"name": dev.name, "index": dev.index, "mtu": dev.mtu, "mac": dev.mac,
                       "vni": dev.vni, "up": dev.up, "local": dev.local,
                       "addresses": list(v6.addresses), "accept_ra": v6.accept_ra}
            if dev else None,
            "programmed": v6.programmed, "expected": v6.expected,
            "summary": summary(v6.checks.values()), "strays": v6.strays}


def to_data(o: Any, cluster: c.Cluster, view: NodeView, ready: bool | None,
            ready_text: str) -> dict[str, Any]:
    env = view.subnet_env
    own = view.own
    rows = [_peer_row(row, view) for row in cluster.leases
            if own is None or row.key != own.key]
    dev = view.device
    network = cluster.config.ipv4_network if cluster.config else (env.ipv4_network if env
                                                                  else None)
    return {
        "etcd": {"endpoints": list(o.etcd_endpoints), "prefix": cluster.prefix,
                 "error": cluster.error or None, "config_error": cluster.config_error or None},
        "network": str(network) if network else None,
        "backend": view.backend or None,
        "subnet": str(env.ipv4_subnet.network) if env and env.ipv4_subnet else None,
        "subnet_env": {"path": str(o.subnet_file), "error": view.subnet_env_error or None,
                       "mtu": env.mtu if env else None, "ipmasq": env.ipmasq if env else None},
        "lease": {**own.as_dict(), "expires": c.human_ttl(own)} if own else None,
        "public_ip": str(view.public_ip) if view.public_ip else None,
        "interface": {"name": view.ext_name, "index": view.ext_index, "mtu": view.ext_mtu}
        if view.ext_index else None,
        "device": {"name": dev.name, "index": dev.index, "mtu": dev.mtu, "mac": dev.mac,
                   "vni": dev.vni, "up": dev.up} if dev else None,
        "ipv4": view.ipv4,
        "ipv6": ipv6_data(view.v6),
        "wireguard": view.wg.as_dict() if view.wg is not None else None,
        "ready": ready, "readyz": ready_text,
        "peers": rows, "summary": summary(view.checks.values()) if view.ipv4 else {},
        "strays": view.strays, "errors": [*view.errors, *(view.v6.errors if view.v6 else [])],
    }


def _state(state: str, kind: str) -> str:
    return state + (f" ({kind})" if kind and state == "programmed" else "")


def _counts(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(found.items()))


def render(d: dict[str, Any]) -> str:
    lease = d["lease"]
    v6 = d.get("ipv6")
    out = []
    held = (f"{lease['key']} ({lease['expires']}, etcd lease {lease['etcd_lease']})" if lease
            else "none in etcd" + (" (etcd unreachable)" if d["etcd"]["error"] else ""))
    dev = d["device"]
    dev6 = v6["device"] if v6 else None
    mtu = [f"subnet.env {d['subnet_env']['mtu']}"] if d["subnet_env"]["mtu"] else []
    mtu[:0] = [f"{x['name']} {x['mtu']}" for x in (dev, dev6) if x]
    if d["interface"]:
        mtu.append(f"{d['interface']['name']} {d['interface']['mtu']}")
    ready = {True: "ready", False: "NOT READY", None: "unknown"}[d["ready"]]
    on = f" on {d['interface']['name']}" if d["interface"] else ""
    if d.get("ipv4", True):
        out.append(f"subnet     {d['subnet'] or '-'} (network {d['network'] or '-'})")
    if v6:
        out.append(f"subnet v6  {v6['subnet'] or '-'} (network {v6['network'] or '-'})")
    out.append(f"lease      {held}")
    if d.get("ipv4", True):
        out.append(f"public IP  {d['public_ip'] or '-'}{on}")
    if v6:
        out.append(f"public v6  {v6['public_ipv6'] or '-'}" + ("" if d.get("ipv4", True)
                                                                else on))
    out.append(f"backend    {d['backend'] or '-'}"
               + (f" ({dev['name']}, VNI {dev['vni']}, MAC {dev['mac']}"
                  f"{'' if dev['up'] else ', DOWN'})" if dev else ""))
    if v6 and v6["device_name"]:
        out.append(f"device v6  {v6['device_name']} " + (
            f"(VNI {dev6['vni']}, MAC {dev6['mac']}, local {dev6['local'] or '-'}, "
            f"accept_ra {dev6['accept_ra']}{'' if dev6['up'] else ', DOWN'})" if dev6
            else "MISSING"))
    wg = d.get("wireguard")
    if wg:
        mtu[:0] = [f"{x['name']} {x['mtu']}" for x in wg["devices"] if x["mtu"]]
        out += _wg_head(wg)
    out += [f"MTU        {', '.join(mtu) or '-'}",
            f"flanneld   {ready}: {d['readyz']}"]
    if d["etcd"]["error"]:
        out.append(f"etcd       UNREACHABLE ({', '.join(d['etcd']['endpoints'])}): "
                   f"{d['etcd']['error']}")
    elif d["etcd"]["config_error"]:
        out.append(f"etcd       network config: {d['etcd']['config_error']}")
    if wg:
        out += _wg_peers(d["peers"])
    elif d.get("ipv4", True):
        peers4 = [p for p in d["peers"] if p["subnet"] or p["problem"]]
        rows = [[p["subnet"] or p["key"], p["public_ip"] or "-", p["vtep_mac"] or "-",
                 p["expires"], _state(p["state"], p["kind"]), "; ".join(p["problems"])[:90]]
                for p in peers4]
        out += ["", c.table(["PEER SUBNET", "PUBLIC IP", "VTEP MAC", "EXPIRES", "STATE",
                             "DETAIL"], rows) if rows else "no peers"]
        if d["summary"]:
            out.append(f"\n{len(peers4)} peers: {_counts(d['summary'])}")
    if v6 and not wg:
        rows = [[p["ipv6_subnet"] or p["subnet"] or p["key"], p["public_ipv6"] or "-",
                 p["vtep_mac_v6"] or "-", p["expires"], _state(p["state6"], p["kind6"]),
                 "; ".join(p["problems6"])[:90]] for p in d["peers"]]
        out += ["", c.table(["IPv6 PEER SUBNET", "PUBLIC IPv6", "VTEP MAC (v6)", "EXPIRES",
                             "STATE", "DETAIL"], rows) if rows else "no IPv6 peers"]
        counts = _counts(v6["summary"])
        out.append(f"\nIPv6: {v6['programmed']}/{v6['expected']} peers programmed"
                   + (f" ({counts})" if counts else ""))
        if v6["strays"]:
            out.append(f"{len(v6['strays'])} IPv6 kernel entries no lease wants: "
                       + "; ".join(v6["strays"]))
    if d["strays"]:
        out.append(f"{len(d['strays'])} kernel entries no lease wants: " + "; ".join(d["strays"]))
    out += [f"error: {e}" for e in d["errors"]]
    return "\n".join(out)


def _wg_head(wg: dict[str, Any]) -> list[str]:
    """The wireguard devices and key, one line each."""
    out = []
    for x in wg["devices"]:
        how = (f"{x['kind']}, port {x['listen_port'] or '-'}" + ("" if x["up"] else ", DOWN")
               if x["kind"] else "MISSING")
        out.append(f"device     {x['name']} ({how})" + (f": {x['error']}" if x["error"] else ""))
    key = wg["key_error"] or f"mode {wg['key_mode']}"
    out.append(f"key        {wg['key_file']} ({key}), public key {wg['public_key'] or '-'}")
    return out


def _wg_peers(peers: list[dict[str, Any]]) -> list[str]:
    """One row per peer lease and device: endpoint, handshake age, transfer, verdict."""
    from flanneld.ctl.wgpeers import human_age, human_bytes

    rows = []
    for p in peers:
        for v in p.get("wg") or [{}]:
            ep = (v.get("endpoint") or "-") + (" (roamed)" if v.get("roamed") else "")
            rows.append([p["subnet"] or p["ipv6_subnet"] or p["key"], ep,
                         (v.get("public_key") or "-")[:11],
                         human_age(v["handshake_age"]) if v else "-",
                         human_bytes(v["rx_bytes"]) if v else "-",
                         human_bytes(v["tx_bytes"]) if v else "-",
                         _state(v.get("state") or p["state"], "wg" if v else ""),
                         "; ".join(v.get("problems") or p["problems"])[:90]])
    if not rows:
        return ["", "no peers"]
    states = [r[6].split(" ")[0] for r in rows]
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    return ["", c.table(["PEER SUBNET", "ENDPOINT", "PUBLIC KEY", "HANDSHAKE", "RX", "TX",
                         "STATE", "DETAIL"], rows), f"\n{len(rows)} peers: {counts}"]


def run(args: argparse.Namespace) -> int:
    data = collect(args)
    if args.json:
        c.emit_json(data)
    else:
        print(render(data))
    return 0
