"""List the pod address reservations of this node, and release the leaked ones.

  flannelctl ipam list [--network cbr0] [--data-dir /var/lib/cni/networks]
  flannelctl ipam gc             # dry run: what would be released, and why
  flannelctl ipam gc --yes       # release them (the CNI plugin's own GC does the work)

The store is host-local's (`<dataDir>/<network>/<ip>`); the CNI plugin's
attachment records (`<flannel dataDir>/.pyflannel/<network>/`) say which
namespace and host veth each pod had. A reservation is leaked when its pod's
namespace or host veth no longer exists (a runtime that lost a pod without
CNI DEL). Reservations without a record (made by flannel + host-local before a
migration) cannot be judged and are kept. Paths come from the conflist
(--conflist, default /etc/cni/net.d/10-flannel.conflist) when it exists.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flanneld.ctl import _common as c

CONFLIST = Path("/etc/cni/net.d/10-flannel.conflist")


def add_store_options(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    d = argparse.SUPPRESS if nested else None
    g = parser.add_argument_group("address store (default: from the conflist)")
    g.add_argument("--conflist", type=Path, default=argparse.SUPPRESS if nested else CONFLIST,
                   help=f"the flannel conflist to read paths from ({CONFLIST})")
    g.add_argument("--network", default=d, help="network name (cbr0)")
    g.add_argument("--data-dir", default=d, help="host-local dataDir (/var/lib/cni/networks)")
    g.add_argument("--flannel-data-dir", default=d,
                   help="the flannel plugin's dataDir (/var/lib/cni/flannel)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    add_store_options(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    lst = sub.add_parser("list", help="every reservation, with its pod and whether it exists")
    add_store_options(lst, nested=True)
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    gc = sub.add_parser("gc", help="release reservations whose pod is gone (dry run unless "
                        "--yes)")
    gc.add_argument("--yes", action="store_true", help="really release them")
    gc.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    add_store_options(gc, nested=True)


@dataclass(frozen=True)
class Paths:
    network: str
    data_dir: str  # host-local's
    flannel_data_dir: str


def paths(args: argparse.Namespace) -> Paths:
    conf: dict[str, Any] = {}
    conflist = getattr(args, "conflist", None)
    if conflist is not None and Path(conflist).exists():
        doc = json.loads(Path(conflist).read_text())
        conf = next((p for p in doc.get("plugins", [doc]) if p.get("type") == "flannel"), {})
        conf = {**conf, "name": doc.get("name", conf.get("name"))}
    ipam_conf = conf.get("ipam") or {}
    return Paths(getattr(args, "network", None) or conf.get("name") or "cbr0",
                 getattr(args, "data_dir", None) or ipam_conf.get("dataDir")
                 or "/var/lib/cni/networks",
                 getattr(args, "flannel_data_dir", None) or conf.get("dataDir")
                 or "/var/lib/cni/flannel")


@dataclass
class Allocation:
    ip: str
    container_id: str
    ifname: str
    netns: str = ""
    host_veth: str = ""
    state: str = "unknown"  # "alive", "gone" (and why), "unknown" (no record)
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def judge(netns: str, veth: str, netns_exists: bool, veth_exists: bool) -> tuple[str, str]:
    """Pure: is the pod of a record still there?"""
    if netns and not netns_exists:
        return "gone", f"netns {netns} does not exist"
    if veth and not veth_exists:
        return "gone", f"host veth {veth} does not exist"
    return "alive", ""


def allocations(p: Paths) -> list[Allocation]:
    from cni import ipam, state

    store = ipam.Store(p.data_dir, p.network)
    records = {(r.container_id, r.ifname): r for r in state.all_records(p.flannel_data_dir,
                                                                        p.network)}
    out = []
    for ip, (cid, ifname) in sorted(store.owners().items()):
        a = Allocation(ip, cid, ifname)
        rec = records.get((cid, ifname))
        if rec is not None:
            a.netns, a.host_veth = rec.netns, rec.host_veth
            a.state, a.why = judge(rec.netns, rec.host_veth, os.path.exists(rec.netns),
                                   os.path.exists(f"/sys/class/net/{rec.host_veth}"))
        else:
            a.why = "no attachment record (host-local or flannel made it): kept"
        out.append(a)
    return out


def gc(p: Paths, allocs: list[Allocation]) -> str:
    """Run the CNI plugin's GC with every attachment that is not gone marked valid."""
    from cni.plugin import handle

    valid = [{"containerID": a.container_id, "ifname": a.ifname} for a in allocs
             if a.state != "gone"]
    conf = {"cniVersion": "1.1.0", "name": p.network, "type": "flannel",
            "dataDir": p.flannel_data_dir, "ipam": {"dataDir": p.data_dir},
            "cni.dev/valid-attachments": valid}
    code, out, err = handle({"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"},
                            json.dumps(conf).encode())
    if code != 0:
        raise SystemExit(f"flannelctl ipam gc: {out.decode(errors='replace')}"
                         f"{err.decode(errors='replace')}")
    return ""


def finding(args: argparse.Namespace, o: Any) -> Any:
    """doctor's `ipam` check."""
    from flanneld.ctl.findings import OK, SKIP, WARN, Finding

    p = paths(args)
    if not Path(p.data_dir, p.network).exists():
        return Finding("ipam", SKIP, f"no address store at {Path(p.data_dir, p.network)}")
    allocs = allocations(p)
    gone = [a for a in allocs if a.state == "gone"]
    return Finding("ipam", WARN if gone else OK,
                   f"{len(gone)} of {len(allocs)} reservations leaked" if gone
                   else f"{len(allocs)} reservations, all with a pod (or no record)",
                   tuple(f"{a.ip} ({a.container_id}/{a.ifname}): {a.why}" for a in gone))


def run(args: argparse.Namespace) -> int:
    p = paths(args)
    allocs = allocations(p)
    if args.action == "gc":
        gone = [a for a in allocs if a.state == "gone"]
        if args.yes and gone:
            gc(p, allocs)
        after = allocations(p) if args.yes else allocs
        if args.json:
            c.emit_json({"released" if args.yes else "would_release":
                         [a.as_dict() for a in gone], "remaining": len(after)})
            return 0
        verb = "released" if args.yes else "would release"
        for a in gone:
            print(f"{verb} {a.ip} ({a.container_id}/{a.ifname}): {a.why}")
        print(f"{len(gone)} leaked of {len(allocs)} in {Path(p.data_dir, p.network)}"
              + ("" if args.yes or not gone else "; run with --yes to release them"))
        return 0
    if args.json:
        c.emit_json({"store": str(Path(p.data_dir, p.network)),
                     "allocations": [a.as_dict() for a in allocs]})
        return 0
    rows = [[a.ip, a.container_id, a.ifname, a.netns or "-", a.host_veth or "-", a.state, a.why]
            for a in allocs]
    print(f"{Path(p.data_dir, p.network)}: {len(allocs)} reservations\n")
    print(c.table(["IP", "CONTAINER", "IFNAME", "NETNS", "HOST VETH", "STATE", "WHY"], rows))
    return 0
