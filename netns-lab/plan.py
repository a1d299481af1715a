"""Address planning for a lab, pure: names, underlay addresses and routes from a Topology.

Everything a lab creates carries its name: namespaces are `pfl-<lab>-<thing>`.
Inside a segment namespace, bridge `br0` has one port per attached namespace,
named `to-<owner>`; the attached end is `eth0` (hosts, etcd members, the world)
or `eth<i>` (a router's i-th leg). Each family of a segment (its `subnet`, its
`subnet6`) is numbered the same way: routers take the first addresses, then
etcd members and the world, then hosts (from .10 when there is room), unless a
topology pins an address (`ip`, `ip6`). IPv6 offsets are written with the
same digits (the 10th address is ::10, not ::a), so in a dual-stack segment a
host at .12 is at ::12. Routes to other segments follow the shortest path
through routers, in every family the underlay has.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from netns_lab.model import Address, Segment, url_host
from netns_lab.topology import Topology, TopologyError, validate_lab_name

BRIDGE = "br0"
HOST_IFACE = "eth0"
POD_IFACE = "eth0"
ETCD_CLIENT_PORT = 2379
HOST_OFFSET = 10
MAX_OFFSET6 = 9999  # IPv6 offsets ::1 .. ::9999

Network = IPv4Network | IPv6Network


def lab_prefix(lab: str) -> str:
    """The Sandbox prefix of a lab: every namespace and state dir starts with it."""
    return f"pfl-{validate_lab_name(lab)}"


@dataclass(frozen=True)
class Link:
    """One veth between a namespace (`owner`) and a segment's bridge; `ip` is None on an
    IPv6-only segment, `ip6` None on a segment without a subnet6."""

    owner: str
    kind: str  # "host" | "etcd" | "router" | "world"
    segment: str
    ifname: str  # in the owner's namespace
    port: str  # in the segment's namespace, enslaved to br0
    ip: IPv4Address | None
    prefixlen: int
    mtu: int
    ip6: IPv6Address | None = None
    prefixlen6: int = 0

    @property
    def address(self) -> Address:
        """The address the underlay is used by: IPv4 if the segment has it, else IPv6."""
        addr = self.ip if self.ip is not None else self.ip6
        assert addr is not None  # every segment has a family
        return addr

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen if self.ip is not None else self.prefixlen6}"

    @property
    def cidrs(self) -> list[str]:
        """Every address of the link with its prefix length, IPv4 first."""
        return ([f"{self.ip}/{self.prefixlen}"] if self.ip is not None else []) + (
            [f"{self.ip6}/{self.prefixlen6}"] if self.ip6 is not None else [])


@dataclass(frozen=True)
class Route:
    dst: Network
    via: Address


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

    @cached_property
    def _by_owner(self) -> dict[str, list[Link]]:
        out: dict[str, list[Link]] = {}
        for lk in self.links:
            out.setdefault(lk.owner, []).append(lk)
        return out

    @cached_property
    def host_set(self) -> frozenset[str]:
        return frozenset(self.topology.host_names)

    @cached_property
    def owner_of_address(self) -> dict[Address, str]:
        """Every planned underlay address -> the namespace that holds it."""
        return {a: lk.owner for lk in self.links for a in (lk.ip, lk.ip6) if a is not None}

    def links_of(self, owner: str) -> list[Link]:
        return list(self._by_owner.get(owner, ()))

    def links_on(self, segment: str) -> list[Link]:
        return [lk for lk in self.links if lk.segment == segment]

    def ip_of(self, owner: str) -> IPv4Address:
        ip = self.links_of(owner)[0].ip
        if ip is None:
            raise ValueError(f"{owner} has no IPv4 address: its segment is IPv6-only "
                             "(use ip6_of or addr_of)")
        return ip

    def ip6_of(self, owner: str) -> IPv6Address | None:
        return self.links_of(owner)[0].ip6

    def addr_of(self, owner: str) -> Address:
        """The owner's underlay address: IPv4 when the underlay has IPv4, else IPv6."""
        return self.links_of(owner)[0].address

    def addresses_of(self, owner: str) -> list[Address]:
        lk = self.links_of(owner)[0]
        return [a for a in (lk.ip, lk.ip6) if a is not None]

    @property
    def etcd_endpoints(self) -> list[str]:
        """Over IPv4 when the underlay has it, else over IPv6 (`http://[fd10:1::2]:2379`)."""
        scheme = "https" if self.topology.etcd_tls else "http"
        return [f"{scheme}://{url_host(self.addr_of(m.name))}:{ETCD_CLIENT_PORT}"
                for m in self.topology.etcd]

    def infra_namespaces(self) -> list[str]:
        """Short names of every namespace but pods, segments first (they hold the bridges)."""
        t = self.topology
        return ([s.name for s in t.segments] + [r.name for r in t.routers]
                + [m.name for m in t.etcd] + ([t.world.name] if t.world else [])
                + t.host_names)

    def to_dict(self) -> dict[str, Any]:
        def link(lk: Link) -> dict[str, Any]:
            cidrs = {str(a.version): c for a, c in zip(
                [a for a in (lk.ip, lk.ip6) if a is not None], lk.cidrs, strict=True)}
            return {"owner": lk.owner, "kind": lk.kind, "segment": lk.segment,
                    "ifname": lk.ifname, "port": lk.port, "mtu": lk.mtu,
                    **({"address": cidrs["4"]} if "4" in cidrs else {}),
                    **({"address6": cidrs["6"]} if "6" in cidrs else {})}
        return {
            "lab": self.lab, "prefix": self.prefix,
            "links": [link(lk) for lk in self.links],
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
        links.extend(_plan_segment(topology, seg, problems))
    if problems:
        raise TopologyError(problems)
    routes = _plan_routes(topology, links)
    return Plan(lab=lab, prefix=prefix, topology=topology, links=tuple(links), routes=routes)


# (owner, kind, ifname, pinned IPv4, pinned IPv6), in allocation order
Member = tuple[str, str, str, IPv4Address | None, IPv6Address | None]


def _members(t: Topology, seg_name: str) -> list[Member]:
    out: list[Member] = []
    for r in t.routers:
        if seg_name in r.segments:
            out.append((r.name, "router", f"eth{r.segments.index(seg_name)}", None, None))
    out += [(m.name, "etcd", HOST_IFACE, m.ip, m.ip6) for m in t.etcd if m.segment == seg_name]
    if t.world and t.world.segment == seg_name:
        out.append((t.world.name, "world", HOST_IFACE, t.world.ip, t.world.ip6))
    out += [(h.name, "host", HOST_IFACE, h.ip, h.ip6) for h in t.hosts if h.segment == seg_name]
    return out


def _plan_segment(t: Topology, seg: Segment, problems: list[str]) -> list[Link]:
    members = _members(t, seg.name)
    v4 = _plan_family(seg, 4, members, problems)
    v6 = _plan_family(seg, 6, members, problems)
    if v4 is None or v6 is None:
        return []
    out: list[Link] = []
    for i, (owner, kind, ifname, _, _) in enumerate(members):
        ip, ip6 = v4[i], v6[i]
        assert ip is None or isinstance(ip, IPv4Address)
        assert ip6 is None or isinstance(ip6, IPv6Address)
        out.append(Link(owner=owner, kind=kind, segment=seg.name, ifname=ifname,
                        port=f"to-{owner}", ip=ip,
                        prefixlen=seg.subnet.prefixlen if seg.subnet else 0, mtu=seg.mtu,
                        ip6=ip6, prefixlen6=seg.subnet6.prefixlen if seg.subnet6 else 0))
    return out


def offset_of(version: int, index: int) -> int:
    """The address offset the lab gives the `index`-th address: IPv6 reads like IPv4."""
    return index if version == 4 else int(str(index), 16)


def capacity(net: Network) -> int:
    """How many addresses of `net` the lab numbers from."""
    if net.version == 4:
        return max(0, net.num_addresses - 2)
    return sum(1 for i in range(1, MAX_OFFSET6 + 1) if offset_of(6, i) < net.num_addresses)


def _usable(net: Network, addr: Address) -> bool:
    if addr.version != net.version or addr not in net or addr == net.network_address:
        return False
    return net.version == 6 or addr != net.broadcast_address


def _plan_family(seg: Segment, version: int, members: list[Member],
                 problems: list[str]) -> list[Address | None] | None:
    """Each member's address in this family of the segment (all None if it has none)."""
    net = seg.net(version)
    key, pin_key = ("subnet", "ip") if version == 4 else ("subnet6", "ip6")
    pins = [(owner, kind, m4 if version == 4 else m6) for owner, kind, _, m4, m6 in members]
    where = {"host": "hosts.{}", "etcd": "etcd.members.{}", "world": "{}"}
    if net is None:
        for owner, kind, ip in pins:
            if ip is not None:
                problems.append(f"{where[kind].format(owner)}.{pin_key}: segment {seg.name} has "
                                f"no {key}; give it one or remove the {pin_key}")
        return [None] * len(members)
    taken: dict[Address, str] = {}
    for owner, kind, ip in pins:
        if ip is None:
            continue
        field = f"{where[kind].format(owner)}.{pin_key}"
        if not _usable(net, ip):
            problems.append(f"{field}: {ip} is not a usable address of segment {seg.name} "
                            f"({net})")
        elif ip in taken:
            problems.append(f"{field}: {ip} is already used by {taken[ip]}")
        else:
            taken[ip] = owner
    room = capacity(net)
    if len(members) > room:
        hint = (f"use a larger subnet (a /{net.prefixlen - 1} holds {capacity(net.supernet())})"
                if version == 4 and net.prefixlen > 8 else "use a larger subnet")
        problems.append(f"segments.{seg.name}.{key}: {net} has {room} usable addresses but "
                        f"{len(members)} are needed; {hint}, or spread the hosts over "
                        "several segments joined by routers")
        return None
    # Enough candidates for every member above HOST_OFFSET, whatever is pinned.
    want = min(room, HOST_OFFSET + len(members) + len(taken))
    base = net.network_address
    free = [(i, a) for i in range(1, want + 1) if (a := base + offset_of(version, i)) not in taken]
    n_infra = sum(1 for _, kind, ip in pins if ip is None and kind != "host")
    infra_pool, rest = free[:n_infra], free[n_infra:]
    n_hosts = sum(1 for _, kind, ip in pins if ip is None and kind == "host")
    # hosts from .10 (::10) when the subnet has room, so they are easy to tell from routers
    high = [x for x in rest if x[0] >= HOST_OFFSET]
    host_pool = high if len(high) >= n_hosts else rest
    out: list[Address | None] = []
    for _, kind, ip in pins:
        if ip is None:
            ip = (host_pool if kind == "host" else infra_pool).pop(0)[1]
        out.append(ip)
    return out


def _plan_routes(t: Topology, links: list[Link]) -> dict[str, tuple[Route, ...]]:
    """Per owner, a route to every segment it is not on, via the next router, in each
    family the underlay has (IPv4 routes first)."""
    leg = {(lk.owner, lk.segment): lk for lk in links}
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
        hops: list[tuple[Segment, Link]] = []
        for dst in t.segments:
            if dst.name in on:
                continue
            reachable = [s for s in on if dst.name in dist[s]]
            if not reachable:
                continue
            src = min(reachable, key=lambda s: (dist[s][dst.name], on.index(s)))
            hops.append((dst, leg[(first_hop[src][dst.name], src)]))
        out = [Route(dst.subnet, router.ip) for dst, router in hops
               if dst.subnet is not None and router.ip is not None]
        out += [Route(dst.subnet6, router.ip6) for dst, router in hops
                if dst.subnet6 is not None and router.ip6 is not None]
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
