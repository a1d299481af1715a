"""The lab's data model: a Topology of segments, routers, etcd members and hosts (pure).

Built by `netns_lab.topology.parse` from YAML; `to_dict` gives the normalised
form the lab stores in its state file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
)
from typing import Any

NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
LAB_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,19}")
DEFAULT_ETCD_PREFIX = "/coreos.com/network"
DEFAULT_NETWORK: dict[str, Any] = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
DEFAULT_SEGMENT_BASE = IPv4Network("192.168.100.0/24")
# The default segment's IPv6 prefix, when the network enables IPv6 and no segment is declared.
DEFAULT_SEGMENT6 = IPv6Network("fd10:100::/64")
WORLD = "world"  # the name of the optional outside namespace (`world:` in a topology)
# flanneld flags the lab sets for every host, or whose defaults it relies on (--subnet-file,
# --state-dir: a host's own /run/flannel and /var/lib/pyflannel); a topology cannot set them.
MANAGED_FLAGS = ("--etcd-endpoints", "--iface", "--subnet-file", "--state-dir",
                 "--healthz-port", "--healthz-ip", "--etcd-prefix")
# No cap on hosts: the segment's subnet and the pod network's subnets bound them (both
# checked, with what to do), and `up` sizes the kernel tables the namespaces share.
MAX_PODS = 32
# The default segment (no `segments:`) grows from a /24 to this when the hosts need it.
MAX_DEFAULT_SEGMENT_PREFIX = 22
# `ip` and `ip6` last: pinned addresses are per host, never defaults
HOST_KEYS = ("segment", "pods", "flanneld_args", "ip_masq", "ip", "ip6")
DEFAULT_KEYS = HOST_KEYS[:-2]
TOP_KEYS = ("description", "network", "etcd_prefix", "etcd", "segments", "routers",
            "hosts", "defaults", "world")
Address = IPv4Address | IPv6Address


class TopologyError(ValueError):
    """One or more problems in a topology; `problems` lists each as `field: message`."""

    def __init__(self, problems: list[str], source: str = "topology") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Segment:
    """An L2 segment; `subnet` None with a `subnet6`: an IPv6-only underlay."""

    name: str
    subnet: IPv4Network | None
    mtu: int = 1500
    subnet6: IPv6Network | None = None

    def net(self, version: int) -> IPv4Network | IPv6Network | None:
        return self.subnet if version == 4 else self.subnet6


@dataclass(frozen=True)
class Router:
    name: str
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Host:
    name: str
    segment: str
    pods: tuple[str, ...] = ()
    flanneld_args: tuple[str, ...] = ()
    ip: IPv4Address | None = None
    # flanneld --ip-masq, on by default as in kube-flannel's manifest: without it the
    # bridge plugin masquerades pod-to-pod traffic (flannel's FLANNEL_IPMASQ=false rule).
    ip_masq: bool = True
    ip6: IPv6Address | None = None


@dataclass(frozen=True)
class EtcdMemberSpec:
    name: str
    segment: str
    ip: IPv4Address | None = None
    ip6: IPv6Address | None = None


@dataclass(frozen=True)
class World:
    """A namespace outside the cluster on a segment (no flanneld, no pods): where pod
    traffic to the outside goes, to be seen masqueraded to its host's address."""

    segment: str
    ip: IPv4Address | None = None
    ip6: IPv6Address | None = None
    name: str = WORLD


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...]
    segments: tuple[Segment, ...]
    routers: tuple[Router, ...] = ()
    etcd: tuple[EtcdMemberSpec, ...] = ()
    network: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NETWORK))
    etcd_prefix: str = DEFAULT_ETCD_PREFIX
    description: str = ""
    etcd_tls: bool = False  # https, client certificates (made by the lab, netns_lab.tls)
    etcd_auth: bool = False  # etcd users: flanneld may only use the network's prefix
    world: World | None = None

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in this lab (hosts: {', '.join(self.host_names)})")

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def segment(self, name: str) -> Segment:
        return next(s for s in self.segments if s.name == name)

    @property
    def backend_type(self) -> str:
        backend = ci_get(self.network, "Backend") or {}
        return str(ci_get(backend, "Type") or "")

    @property
    def enable_ipv4(self) -> bool:
        """flannel's EnableIPv4 (default true; null is the default, as in Go)."""
        return ci_get(self.network, "EnableIPv4") is not False

    @property
    def enable_ipv6(self) -> bool:
        return ci_get(self.network, "EnableIPv6") is True

    @property
    def families(self) -> tuple[int, ...]:
        """The overlay's IP versions, IPv4 first."""
        return tuple(v for v, on in ((4, self.enable_ipv4), (6, self.enable_ipv6)) if on)

    @property
    def pod_network(self) -> IPv4Network | None:
        """The IPv4 pod network; None when the network is IPv6-only."""
        cidr = ci_get(self.network, "Network")
        if not self.enable_ipv4 or cidr is None:
            return None
        return IPv4Network(str(cidr), strict=False)

    @property
    def pod_network6(self) -> IPv6Network | None:
        cidr = ci_get(self.network, "IPv6Network")
        if not self.enable_ipv6 or cidr is None:
            return None
        return IPv6Network(str(cidr), strict=False)

    @property
    def underlay_versions(self) -> tuple[int, ...]:
        """The underlay's IP versions (every segment has the same ones), IPv4 first."""
        if not self.segments:
            return ()
        return tuple(v for v in (4, 6) if all(s.net(v) is not None for s in self.segments))

    def to_dict(self) -> dict[str, Any]:
        """The normalised form, stored in the lab's state file and re-parsable by `parse`."""
        return {
            "description": self.description,
            "network": self.network,
            "etcd_prefix": self.etcd_prefix,
            "segments": {s.name: _drop_none({"subnet": s.subnet, "subnet6": s.subnet6,
                                             "mtu": s.mtu}) for s in self.segments},
            "routers": {r.name: {"segments": list(r.segments)} for r in self.routers},
            "etcd": {"members": {m.name: _drop_none({"segment": m.segment, "ip": m.ip,
                                                     "ip6": m.ip6})
                                 for m in self.etcd},
                     **({"tls": True} if self.etcd_tls else {}),
                     **({"auth": True} if self.etcd_auth else {})},
            "hosts": {h.name: _drop_none({"segment": h.segment, "pods": list(h.pods),
                                          "flanneld_args": list(h.flanneld_args), "ip": h.ip,
                                          "ip_masq": h.ip_masq, "ip6": h.ip6})
                      for h in self.hosts},
            **({"world": _drop_none({"segment": self.world.segment, "ip": self.world.ip,
                                     "ip6": self.world.ip6})} if self.world else {}),
        }


_IP_TYPES = (IPv4Address, IPv6Address, IPv4Network, IPv6Network)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, _IP_TYPES) else v) for k, v in d.items()
            if v is not None}


def url_host(addr: Address) -> str:
    """An address as the host part of a URL: an IPv6 one in brackets."""
    return f"[{addr}]" if addr.version == 6 else str(addr)



def ci_get(mapping: Any, key: str) -> Any:
    """A key looked up case-insensitively, as flannel's Go JSON decoding does."""
    if not isinstance(mapping, dict):
        return None
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == key.lower():
            return v
    return None


def validate_lab_name(name: str) -> str:
    if not isinstance(name, str) or not LAB_NAME_RE.fullmatch(name):
        raise ValueError(f"lab name {name!r}: use 1-20 lowercase letters and digits, starting "
                         "with a letter (e.g. --name lab2)")
    return name
