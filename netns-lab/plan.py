"""Address planning for a lab, pure: names, underlay addresses and routes from a Topology.

Everything a lab creates carries its name: namespaces are `pfl-<lab>-<thing>`.
Inside a segment namespace, bridge `br0` has one port per attached namespace,
named `to-<owner>`; the attached end is `eth0` (hosts, etcd members) or
`eth<i>` (a router's i-th leg). Within each segment subnet, routers take the
first addresses, then etcd members, then hosts (from .10 when there is room),
unless a topology pins an address. Routes to other segments follow the
shortest path through routers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from netns_lab.topology import Topology, TopologyError, validate_lab_name

BRIDGE = "br0"
HOST_IFACE = "eth0"
POD_IFACE = "eth0"
ETCD_CLIENT_PORT = 2379
HOST_OFFSET = 10


def lab_prefix(lab: str) -> str:
    """The Sandbox prefix of a lab: every namespace and state dir starts with it."""
    return f"pfl-{validate_lab_name(lab)}"


@dataclass(frozen=True)
class Link:
    """One veth between a namespace (`owner`) and a segment's bridge."""

    owner: str
    kind: str  # "host" | "etcd" | "router"
    segment: str
    ifname: str  # in the owner's namespace
    port: str  # in the segment's namespace, enslaved to br0
    ip: IPv4Address
    prefixlen: int
    mtu: int

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    via: IPv4Address


@dataclass(frozen=True)
class Plan:
    lab: str
    prefix: str
    topology: Topology
    links: tuple[Link, ...]
    routes: dict[str, tuple[Route, ...]]

    def ns(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def pod_short(self, host: str, pod: str) -> str:
        return f"{host}-{pod}"

    def pod_ns(self, host: str, pod: str) -> str:
        return self.ns(self.pod_short(host, pod))

    def container_id(self, host: str, pod: str) -> str:
        return f"{self.lab}-{host}-{pod}"

    def links_of(self, owner: str) -> list[Link]:
        return [lk for lk in self.links if lk.owner == owner]

    def links_on(self, segment: str) -> list[Link]:
        return [lk for lk in self.links if lk.segment == segment]

    def ip_of(self, owner: str) -> IPv4Address:
        return self.links_of(owner)[0].ip

    @property
    def etcd_endpoints(self) -> list[str]:
        scheme = "https" if self.topology.etcd_tls else "http"
        return [f"{scheme}://{self.ip_of(m.name)}:{ETCD_CLIENT_PORT}"
                for m in self.topology.etcd]

    def infra_namespaces(self) -> list[str]:
        """Short names of every namespace but pods, segments first (they hold the bridges)."""
        t = self.topology
        return ([s.name for s in t.segments] + [r.name for r in t.routers]
                + [m.name for m in t.etcd] + t.host_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab, "prefix": self.prefix,
            "links": [{"owner": lk.owner, "kind": lk.kind, "segment": lk.segment,
                       "ifname": lk.ifname, "port": lk.port, "address": lk.cidr, "mtu": lk.mtu}
                      for lk in self.links],
            "routes": {o: [{"dst": str(r.dst), "via": str(r.via)} for r in rs]
                       for o, rs in self.routes.items() if rs},
            "etcd_endpoints": self.etcd_endpoints,
        }


def make_plan(topology: Topology, lab: str) -> Plan:
    """Assign underlay addresses and routes; raises TopologyError if addresses clash."""
    prefix = lab_prefix(lab)
    problems: list[str] = []
    links: list[Link] = []
    for seg in topology.segments:
        links.extend(_plan_segment(topology, seg.name, problems))
    if problems:
        raise TopologyError(problems)
    routes = _plan_routes(topology, links)
    return Plan(lab=lab, prefix=prefix, topology=topology, links=tuple(links), routes=routes)


def _plan_segment(t: Topology, seg_name: str, problems: list[str]) -> list[Link]:
    seg = t.segment(seg_name)
    usable = list(seg.subnet.hosts())
    # (owner, kind, ifname, pinned ip), in allocation order
    members: list[tuple[str, str, str, IPv4Address | None]] = []
    for r in t.routers:
        if seg_name in r.segments:
            members.append((r.name, "router", f"eth{r.segments.index(seg_name)}", None))
    members += [(m.name, "etcd", HOST_IFACE, m.ip) for m in t.etcd if m.segment == seg_name]
    hosts = [h for h in t.hosts if h.segment == seg_name]
    members += [(h.name, "host", HOST_IFACE, h.ip) for h in hosts]
    taken: dict[IPv4Address, str] = {}
    for owner, kind, _, ip in members:
        if ip is None:
            continue
        field = f"{'hosts' if kind == 'host' else 'etcd.members'}.{owner}.ip"
        if ip not in seg.subnet or ip not in usable:
            problems.append(f"{field}: {ip} is not a usable address of segment {seg_name} "
                            f"({seg.subnet})")
        elif ip in taken:
            problems.append(f"{field}: {ip} is already used by {taken[ip]}")
        else:
            taken[ip] = owner
    if len(members) > len(usable):
        problems.append(f"segments.{seg_name}.subnet: {seg.subnet} has {len(usable)} usable "
                        f"addresses but {len(members)} are needed; use a larger subnet")
        return []
    free = [ip for ip in usable if ip not in taken]
    n_infra = sum(1 for _, kind, _, ip in members if ip is None and kind != "host")
    infra_pool, rest = free[:n_infra], free[n_infra:]
    n_hosts = sum(1 for _, kind, _, ip in members if ip is None and kind == "host")
    # hosts from .10 when the subnet has room, so they are easy to tell from routers
    base = int(seg.subnet.network_address)
    high = [x for x in rest if int(x) - base >= HOST_OFFSET]
    host_pool = high if len(high) >= n_hosts else rest
    out: list[Link] = []
    for owner, kind, ifname, ip in members:
        if ip is None:
            ip = (host_pool if kind == "host" else infra_pool).pop(0)
        out.append(Link(owner=owner, kind=kind, segment=seg_name, ifname=ifname,
                        port=f"to-{owner}", ip=ip, prefixlen=seg.subnet.prefixlen, mtu=seg.mtu))
    return out


def _plan_routes(t: Topology, links: list[Link]) -> dict[str, tuple[Route, ...]]:
    """Per owner, a route to every segment it is not on, via the next router."""
    leg_ip = {(lk.owner, lk.segment): lk.ip for lk in links}
    # first_hop[s][d] = router to take from segment s towards segment d
    first_hop: dict[str, dict[str, str]] = {}
    dist: dict[str, dict[str, int]] = {}
    for s in t.segments:
        first_hop[s.name], dist[s.name] = _bfs(t, s.name)
    routes: dict[str, tuple[Route, ...]] = {}
    owners: dict[str, list[str]] = {}
    for lk in links:
        owners.setdefault(lk.owner, []).append(lk.segment)
    for owner, on in owners.items():
        out: list[Route] = []
        for dst in t.segments:
            if dst.name in on:
                continue
            reachable = [s for s in on if dst.name in dist[s]]
            if not reachable:
                continue
            src = min(reachable, key=lambda s: (dist[s][dst.name], on.index(s)))
            out.append(Route(dst.subnet, leg_ip[(first_hop[src][dst.name], src)]))
        routes[owner] = tuple(out)
    return routes


def _bfs(t: Topology, start: str) -> tuple[dict[str, str], dict[str, int]]:
    first: dict[str, str] = {}
    dist = {start: 0}
    queue = deque([start])
    while queue:
        seg = queue.popleft()
        for r in t.routers:
            if seg not in r.segments:
                continue
            for nxt in r.segments:
                if nxt not in dist:
                    dist[nxt] = dist[seg] + 1
                    first[nxt] = r.name if seg == start else first[seg]
                    queue.append(nxt)
    return first, dist
