"""A lab's topology: parsed from YAML and validated, pure (no I/O but reading the file).

A topology names hosts, underlay segments (one L2 bridge each), routers joining
segments, the etcd members, the flannel network config and the pods per host.
Every error names the field, the bad value and what to do; all problems in a
file are reported at once. The data model is in `netns_lab.model` (re-exported
here), the parser of each section in `netns_lab.topology_sections`; address
planning in `netns_lab.plan`.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from netns_lab.model import (
    DEFAULT_ETCD_PREFIX,
    DEFAULT_KEYS,
    DEFAULT_NETWORK,
    LAB_NAME_RE,
    NAME_RE,
    TOP_KEYS,
    EtcdMemberSpec,
    Host,
    Router,
    Segment,
    Topology,
    TopologyError,
    World,
    ci_get,
    validate_lab_name,
)
from netns_lab.topology_sections import (
    Collector,
    as_mapping,
    etcd_security,
    parse_etcd,
    parse_hosts,
    parse_network,
    parse_routers,
    parse_segments,
    parse_world,
    sized_default_segment,
    unknown_keys,
)

from core.config import ConfigError, parse_network_config

__all__ = ["DEFAULT_ETCD_PREFIX", "DEFAULT_NETWORK", "LAB_NAME_RE", "NAME_RE", "EtcdMemberSpec",
           "Host", "Router", "Segment", "Topology", "TopologyError", "World", "ci_get",
           "example_names", "examples_dir", "load", "parse", "validate_lab_name"]


# ---------------------------------------------------------------------------
# loading


def examples_dir() -> Path:
    return Path(str(resources.files("netns_lab") / "examples"))


def example_names() -> list[str]:
    return sorted(p.stem for p in examples_dir().glob("*.yaml"))


def load(spec: str | Path | None) -> Topology:
    """A topology from a file path or an example name; None is the built-in default."""
    if spec is None:
        spec = "default"
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[a-z0-9-]+", str(spec)):
        candidate = examples_dir() / f"{spec}.yaml"
        if candidate.exists():
            path = candidate
    if not path.exists():
        raise TopologyError([f"no such file, and not an example name (examples: "
                             f"{', '.join(example_names())})"], str(spec))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError([f"not valid YAML: {exc}"], str(path)) from None
    return parse(data, str(path))


# ---------------------------------------------------------------------------
# parsing


def parse(data: Any, source: str = "topology") -> Topology:
    """Validate a topology given as plain data (a parsed YAML document)."""
    c = Collector()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError([f"top level: expected a mapping of keys "
                             f"({', '.join(TOP_KEYS)}), got {type(data).__name__}"], source)
    unknown_keys(c, "", data, TOP_KEYS)
    description = str(data.get("description") or "")
    network = parse_network(c, data.get("network", DEFAULT_NETWORK))
    prefix = data.get("etcd_prefix", DEFAULT_ETCD_PREFIX)
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.rstrip("/") == "":
        c.add("etcd_prefix", f"{prefix!r} is not an etcd key prefix; use e.g. "
                             f"{DEFAULT_ETCD_PREFIX}")
        prefix = DEFAULT_ETCD_PREFIX
    v4, v6 = ci_get(network, "EnableIPv4") is not False, ci_get(network, "EnableIPv6") is True
    segments = parse_segments(c, data.get("segments"), v4, v6)
    seg_names = [s.name for s in segments]
    routers = parse_routers(c, data.get("routers"), seg_names)
    defaults = as_mapping(c, "defaults", data.get("defaults"))
    unknown_keys(c, "defaults", defaults, DEFAULT_KEYS)
    hosts = parse_hosts(c, data.get("hosts"), defaults, seg_names)
    etcd = parse_etcd(c, data.get("etcd"), seg_names)
    tls, auth = etcd_security(c, data.get("etcd"))
    world = parse_world(c, data.get("world"), seg_names)
    if data.get("segments") is None and segments:
        segments[0] = sized_default_segment(c, segments[0],
                                            len(hosts) + len(etcd) + (1 if world else 0))
    topo = Topology(hosts=tuple(hosts), segments=tuple(segments), routers=tuple(routers),
                    etcd=tuple(etcd), network=network, etcd_prefix=prefix.rstrip("/"),
                    description=description, etcd_tls=tls, etcd_auth=auth, world=world)
    if not c.problems:
        _check_whole(c, topo)
    if c.problems:
        raise TopologyError(c.problems, source)
    return topo


def _check_whole(c: Collector, topo: Topology) -> None:
    """Checks across sections: unique names, overlaps, connectivity, backend fit."""
    seen: dict[str, str] = {}
    for kind, names in (("segment", [s.name for s in topo.segments]),
                        ("router", [r.name for r in topo.routers]),
                        ("host", topo.host_names),
                        ("etcd member", [m.name for m in topo.etcd]),
                        ("world", [topo.world.name] if topo.world else [])):
        for n in names:
            if n in seen:
                c.add(f"{kind} {n}", f"name already used by a {seen[n]}; every host, "
                                     "segment, router and etcd member needs its own name")
            seen[n] = kind
    _check_families(c, topo)
    for version, key, pod_net in ((4, "subnet", topo.pod_network),
                                  (6, "subnet6", topo.pod_network6)):
        for i, s in enumerate(topo.segments):
            net = s.net(version)
            if net is None:
                continue
            if pod_net is not None and net.overlaps(pod_net):
                c.add(f"segments.{s.name}.{key}", f"{net} overlaps the pod network "
                                                  f"{pod_net}; pick a disjoint underlay subnet")
            for other in topo.segments[i + 1:]:
                theirs = other.net(version)
                if theirs is not None and net.overlaps(theirs):
                    c.add(f"segments.{other.name}.{key}",
                          f"{theirs} overlaps segment {s.name} ({net})")
    _check_connected(c, topo)
    _check_pod_subnets(c, topo)
    backend = topo.backend_type.lower()
    direct = bool(ci_get(ci_get(topo.network, "Backend"), "DirectRouting"))
    if backend == "host-gw" or (backend == "ipip" and not direct):
        segs = sorted({h.segment for h in topo.hosts})
        if len(segs) > 1:
            c.add("network.Backend.Type",
                  f"{topo.backend_type} routes pod traffic straight to the peer's underlay "
                  f"address, so every host must share one L2 segment, but hosts are on "
                  f"{', '.join(segs)}; use vxlan (optionally DirectRouting: true) instead")


def _check_pod_subnets(c: Collector, topo: Topology) -> None:
    """Every host needs a subnet of the pod network: more hosts than subnets leaves the
    rest `out of subnets` (flannel's SubnetLen/SubnetMin/SubnetMax decide how many)."""
    try:
        config = parse_network_config(json.dumps(topo.network))
    except (ConfigError, TypeError, ValueError):
        return  # flanneld says what is wrong with it; the lab's own checks ran above
    n = len(topo.hosts)
    for count, key, example in ((config.subnet_count() if topo.enable_ipv4 else n, "Network",
                                 "Network: 10.0.0.0/12 or SubnetLen: 26"),
                                (config.ipv6_subnet_count() if topo.enable_ipv6 else n,
                                 "IPv6Network", "IPv6Network: fc00:10::/40")):
        if count < n:
            net = ci_get(topo.network, key)
            c.add(f"network.{key}", f"{net} holds {count} subnet(s) (SubnetLen, SubnetMin, "
                                    f"SubnetMax) but there are {n} hosts; use a larger "
                                    f"network, e.g. {example}")


def _check_families(c: Collector, topo: Topology) -> None:
    """Every segment has the same families, and the ones the overlay needs: flanneld takes
    its PublicIP (IPv4) and PublicIPv6 from the host's underlay interface."""
    segs = topo.segments
    for version, key, example in ((4, "subnet", "192.168.100.0/24"), (6, "subnet6", "fd10:1::/64")):
        lacking = [s for s in segs if s.net(version) is None]
        if not lacking:
            continue
        first = lacking[0]
        needed = topo.enable_ipv4 if version == 4 else topo.enable_ipv6
        if needed:
            why = ("the network runs IPv4 (EnableIPv4 is not false), so every host needs an "
                   f"IPv4 underlay address; give the segment a subnet (e.g. {example}), or set "
                   "EnableIPv4: false in network for an IPv6-only cluster" if version == 4 else
                   "the network enables IPv6 (EnableIPv6: true), so every host needs a global "
                   f"IPv6 underlay address; give every segment a subnet6 (e.g. {example})")
            c.add(f"segments.{first.name}.{key}", f"missing: {why}")
        elif len(lacking) < len(segs):
            has = next(s for s in segs if s.net(version) is not None)
            c.add(f"segments.{first.name}.{key}",
                  f"missing, but segment {has.name} has one; every segment needs the same "
                  f"address families: give {first.name} a {key} (e.g. {example}) or remove "
                  f"{has.name}'s")


def _check_connected(c: Collector, topo: Topology) -> None:
    if not topo.segments:
        return
    adjacency: dict[str, set[str]] = {s.name: set() for s in topo.segments}
    for r in topo.routers:
        for a in r.segments:
            adjacency[a].update(x for x in r.segments if x != a)
    start = topo.segments[0].name
    reached, todo = {start}, [start]
    while todo:
        for nxt in adjacency[todo.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    used = ({h.segment for h in topo.hosts} | {m.segment for m in topo.etcd}
            | ({topo.world.segment} if topo.world else set()))
    for s in topo.segments:
        if s.name not in reached and s.name in used:
            c.add(f"segments.{s.name}", f"not reachable from segment {start}; add a router "
                                        f"with legs on both, e.g. routers: {{r1: "
                                        f"{{segments: [{start}, {s.name}]}}}}")
