"""Is each peer programmed? The desired kernel state for a peer against a kernel dump. Pure.

One answer for every tool that asks: `flannelctl status` and `doctor` (netlink
dumps of this node), and the lab's `status` and convergence checks (`ip -j`
output of each lab host, turned into the same tables by `tables_from_ip_json`).

Per peer (its entries from `backends.desired`: route, and for vxlan the
neighbour and FDB entry):

- programmed: every entry is in the kernel exactly as desired;
- partial: some entries are there and right, the others are absent;
- stale: at least one entry is there with a different value (old MAC, old
  public IP, another gateway): what a peer that re-joined looks like before a
  reconcile;
- missing: none of its entries is there;
- skipped / unreachable: the lease is not programmed on purpose (its reason).

`strays` lists the kernel entries in our scope that no lease wants (left by
a deleted lease, or written by hand): a full reconcile removes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.desired import Desired, PeerEntries
from backends.state import RTPROT_BOOT, RouteSpec, Tables, diff, route_matches

PROGRAMMED, PARTIAL, STALE, MISSING = "programmed", "partial", "stale", "missing"
SKIPPED, UNREACHABLE = "skipped", "unreachable"
OK_STATES = (PROGRAMMED, SKIPPED)  # nothing for a reconcile to do


@dataclass(frozen=True)
class PeerCheck:
    """The verdict for one lease, with one line per entry that is not right."""

    key: str
    state: str
    kind: str = ""  # "vxlan" (route + neighbour + FDB) or "direct" (a route via the peer)
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "state": self.state, "kind": self.kind,
                "problems": list(self.problems)}


def _show_route(cidr: str, spec: RouteSpec) -> str:
    dev = f" dev #{spec.oif}" if spec.oif else ""
    return f"{cidr} via {spec.gateway}{dev}{' onlink' if spec.onlink else ''}"


def check_entries(e: PeerEntries, kernel: Tables) -> tuple[str, tuple[str, ...]]:
    """(state, problems) of one peer's desired entries against the kernel's tables."""
    right = absent = wrong = 0
    problems: list[str] = []
    cidr, spec = e.route
    have = kernel.routes.get(cidr, ())
    if any(route_matches(spec, h) for h in have):
        right += 1
    elif have:
        wrong += 1
        problems.append(f"route {cidr} is {', '.join(_show_route(cidr, h) for h in have)}; "
                        f"want {_show_route(cidr, spec)}")
    else:
        absent += 1
        problems.append(f"route {_show_route(cidr, spec)} missing")
    if e.neigh is not None:
        ip, mac = e.neigh
        got = kernel.neighs.get(ip)
        if got == mac:
            right += 1
        elif got is not None:
            wrong += 1
            problems.append(f"neighbour {ip} has MAC {got}; want {mac}")
        else:
            absent += 1
            problems.append(f"neighbour {ip} lladdr {mac} missing")
    if e.fdb is not None:
        mac, dst = e.fdb
        remotes = kernel.fdb.get(mac)
        if remotes == (dst,):
            right += 1
        elif remotes:
            wrong += 1
            problems.append(f"FDB entry {mac} points at {', '.join(remotes)}; want {dst}")
        else:
            absent += 1
            problems.append(f"FDB entry {mac} dst {dst} missing")
    if wrong:
        return STALE, tuple(problems)
    if absent and right:
        return PARTIAL, tuple(problems)
    if absent:
        return MISSING, tuple(problems)
    return PROGRAMMED, ()


def kind_of(e: PeerEntries) -> str:
    return "vxlan" if e.neigh is not None else "direct"


def check_peers(desired: Desired, kernel: Tables) -> dict[str, PeerCheck]:
    """A verdict for every lease the desired state knows, keyed by lease key."""
    out: dict[str, PeerCheck] = {}
    for key, e in desired.peers.items():
        state, problems = check_entries(e, kernel)
        out[key] = PeerCheck(key, state, kind_of(e), problems)
    for key, reason in desired.skipped.items():
        if key not in out:  # a last-good peer is both programmed and "skipped"
            out[key] = PeerCheck(key, SKIPPED, "", (reason,))
    for key, reason in desired.unreachable.items():
        out[key] = PeerCheck(key, UNREACHABLE, "", (reason,))
    return out


def strays(desired: Desired, kernel: Tables) -> list[str]:
    """Kernel entries in our scope that no lease wants (a full reconcile removes them)."""
    wanted = Tables()
    for e in desired.peers.values():
        wanted.routes[e.route[0]] = (e.route[1],)
        if e.neigh is not None:
            wanted.neighs[e.neigh[0]] = e.neigh[1]
        if e.fdb is not None:
            wanted.fdb[e.fdb[0]] = (e.fdb[1],)
    plan = diff(wanted, kernel)
    out = [f"route {_show_route(cidr, spec)}" for cidr, spec in plan.route_del
           if cidr not in wanted.routes]
    out += [f"neighbour {ip} lladdr {kernel.neighs[ip]}" for ip in plan.neigh_del]
    out += [f"FDB entry {mac} dst {', '.join(kernel.fdb.get(mac, ()))}"
            for mac, dst in plan.fdb_del if dst is None]
    return sorted(out)


def summary(checks: Iterable[PeerCheck]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.state] = counts.get(c.state, 0) + 1
    return counts


# --- the same tables from `ip -j` / `bridge -j` output (the lab reads hosts that way) -------

_PROTOCOLS = {"redirect": 1, "kernel": 2, "boot": 3, "static": 4}


@dataclass
class IpJson:
    """`ip -j -4 route show table main`, `ip -j neigh show`, `bridge -j fdb show`, and
    `ip -j link show` (for interface indexes), as parsed JSON."""

    routes: list[dict[str, Any]]
    neighs: list[dict[str, Any]] = field(default_factory=list)
    fdb: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def ifindexes(self) -> dict[str, int]:
        """Interface name -> index; names without a link entry get stable made-up indexes."""
        index = {str(lk["ifname"]): int(lk["ifindex"]) for lk in self.links
                 if "ifname" in lk and "ifindex" in lk}
        names = [str(x.get("dev") or x.get("ifname") or "")
                 for x in (*self.routes, *self.neighs, *self.fdb)]
        for name in sorted(set(names) - set(index) - {""}):
            index[name] = 100000 + len(index)
        return index


def tables_from_ip_json(view: IpJson, dev: str | None) -> Tables:
    """Routes of the main table, and `dev`'s permanent neighbours and `self` FDB entries."""
    index = view.ifindexes()
    t = Tables()
    for r in view.routes:
        dst = str(r.get("dst", ""))
        if "/" not in dst or r.get("type", "unicast") != "unicast" or "nexthops" in r:
            continue  # `ip` prints host routes without /32: never a peer subnet
        spec = RouteSpec(str(r.get("gateway", "0.0.0.0")), index.get(str(r.get("dev", "")), 0),
                         "onlink" in r.get("flags", ()), int(r.get("metric", 0)),
                         _PROTOCOLS.get(str(r.get("protocol", "boot")), RTPROT_BOOT))
        t.routes[dst] = (*t.routes.get(dst, ()), spec)
    for n in view.neighs:
        if n.get("dev") == dev and "PERMANENT" in n.get("state", ()) and "lladdr" in n:
            t.neighs[str(n["dst"])] = str(n["lladdr"]).lower()
    for f in view.fdb:
        # `bridge -j fdb` names the device "ifname" (older iproute2: "dev")
        if f.get("ifname", f.get("dev")) != dev or "dst" not in f or "self" not in f.get(
                "flags", ()):
            continue
        mac = str(f.get("mac", "")).lower()
        t.fdb[mac] = (*t.fdb.get(mac, ()), str(f["dst"]))
    return t


def index_of(view: IpJson, name: str) -> int:
    return view.ifindexes().get(name, 0)


def by_subnet(checks: Mapping[str, PeerCheck]) -> dict[str, PeerCheck]:
    """Re-key verdicts by subnet (`10.5.34.0/24`) instead of lease key (`10.5.34.0-24`)."""
    return {key.split("&")[0].replace("-", "/"): c for key, c in checks.items()}
