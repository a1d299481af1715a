"""The lab's data model: a Topology of segments, routers, etcd members and hosts (pure).

Built by `netns_lab.topology.parse` from YAML; `to_dict` gives the normalised
form the lab stores in its state file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
LAB_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,19}")
DEFAULT_ETCD_PREFIX = "/coreos.com/network"
DEFAULT_NETWORK: dict[str, Any] = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
DEFAULT_SEGMENT_BASE = IPv4Network("192.168.100.0/24")
# flanneld flags the lab sets for every host, or whose defaults it relies on (--subnet-file,
# --state-dir: a host's own /run/flannel and /var/lib/pyflannel); a topology cannot set them.
MANAGED_FLAGS = ("--etcd-endpoints", "--iface", "--subnet-file", "--state-dir",
                 "--healthz-port", "--healthz-ip", "--etcd-prefix")
MAX_HOSTS = 64
MAX_PODS = 32
HOST_KEYS = ("segment", "pods", "flanneld_args", "ip_masq", "ip")  # `ip` last: not a default
TOP_KEYS = ("description", "network", "etcd_prefix", "etcd", "segments", "routers",
            "hosts", "defaults")


class TopologyError(ValueError):
    """One or more problems in a topology; `problems` lists each as `field: message`."""

    def __init__(self, problems: list[str], source: str = "topology") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Segment:
    name: str
    subnet: IPv4Network
    mtu: int = 1500


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


@dataclass(frozen=True)
class EtcdMemberSpec:
    name: str
    segment: str
    ip: IPv4Address | None = None


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
    def pod_network(self) -> IPv4Network:
        return IPv4Network(str(ci_get(self.network, "Network")), strict=False)

    def to_dict(self) -> dict[str, Any]:
        """The normalised form, stored in the lab's state file and re-parsable by `parse`."""
        return {
            "description": self.description,
            "network": self.network,
            "etcd_prefix": self.etcd_prefix,
            "segments": {s.name: {"subnet": str(s.subnet), "mtu": s.mtu} for s in self.segments},
            "routers": {r.name: {"segments": list(r.segments)} for r in self.routers},
            "etcd": {"members": {m.name: _drop_none({"segment": m.segment, "ip": m.ip})
                                 for m in self.etcd},
                     **({"tls": True} if self.etcd_tls else {}),
                     **({"auth": True} if self.etcd_auth else {})},
            "hosts": {h.name: _drop_none({"segment": h.segment, "pods": list(h.pods),
                                          "flanneld_args": list(h.flanneld_args), "ip": h.ip,
                                          "ip_masq": h.ip_masq})
                      for h in self.hosts},
        }


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, IPv4Address) else v) for k, v in d.items()
            if v is not None}


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
