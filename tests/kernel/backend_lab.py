"""A small multi-host topology for the backend kernel tests, and readers of kernel state.

Per host: a namespace with `eth0` on a shared underlay bridge (in an "underlay"
namespace that can also route between two underlay subnets), a `cni0` bridge
holding the .1 of the host's pod subnet, and a pod namespace behind it with
the .2 and a default route via .1. Everything is created inside namespaces of
the test's Sandbox and removed by `Lab.close()`.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from netns_lab.netns import Sandbox, in_netns, run, wait_for

from backends import create_backend
from backends.base import Backend, ExternalInterface, ReconcileResult
from core.config import HostGwConfig, NetworkConfig, VxlanConfig
from core.lease import Lease, LeaseAttrs

NETWORK = IPv4Network("10.5.0.0/16")
_counter = itertools.count()


def network_config(backend: str = "vxlan", **vxlan: Any) -> NetworkConfig:
    return NetworkConfig(
        ipv4_network=NETWORK, subnet_len=24, subnet_min=IPv4Address("10.5.1.0"),
        subnet_max=IPv4Address("10.5.255.0"), backend_type=backend,
        backend=VxlanConfig(**vxlan) if backend == "vxlan" else HostGwConfig())


def ipj(ns: str, *args: str) -> Any:
    """`ip -j ARGS` in `ns`, parsed."""
    out = run(["ip", "-n", ns, "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def bridge_fdb(ns: str, dev: str) -> list[dict[str, Any]]:
    out = run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev]).stdout
    return json.loads(out) if out.strip() else []


def batch(ns: str, commands: list[str]) -> None:
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


@dataclass
class Host:
    name: str
    ns: str
    pod_ns: str
    address: IPv4Interface  # on eth0, the underlay
    subnet: IPv4Network  # the pod subnet (its lease)
    ext: ExternalInterface = field(init=False)

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip

    @property
    def pod_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    def lease(self, attrs: LeaseAttrs) -> Lease:
        return Lease(self.subnet, attrs)


@dataclass
class Lab:
    box: Sandbox
    underlay: str
    hosts: dict[str, Host]
    state_root: Path
    _made: list[str] = field(default_factory=list)

    def close(self) -> None:
        for ns in reversed(self._made):
            run(["ip", "netns", "del", ns], check=False)

    def state_dir(self, host: str) -> Path:
        path = self.state_root / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ping(self, src: str, dst_ip: str, *, timeout: float = 5.0) -> None:
        """Wait until one ping from `src`'s pod to `dst_ip` gets an answer."""
        pod = self.hosts[src].pod_ns

        def once() -> bool:
            return run(["ip", "netns", "exec", pod, "ping", "-c1", "-W1", "-n", dst_ip],
                       check=False).returncode == 0
        wait_for(once, timeout, what=f"ping {src} pod -> {dst_ip}")

    def cannot_ping(self, src: str, dst_ip: str) -> bool:
        pod = self.hosts[src].pod_ns
        return run(["ip", "netns", "exec", pod, "ping", "-c1", "-W1", "-n", dst_ip],
                   check=False).returncode != 0


def build(box: Sandbox, hosts: dict[str, tuple[str, str]], *, pod_mtu: int = 1450) -> Lab:
    """hosts: name -> (underlay address/len, pod subnet).

    Hosts of one underlay subnet share a bridge; a second subnet gets its own
    bridge, and the underlay namespace (holding .1 on each) routes between them.
    """
    tag = f"b{os.getpid() % 1000}{next(_counter)}"
    underlay = box.add_netns(f"{tag}u")
    lab = Lab(box, underlay, {}, box.state_dir / tag)
    lab._made.append(underlay)
    bridges: dict[IPv4Network, str] = {}
    try:
        for i, (name, (addr, subnet)) in enumerate(hosts.items()):
            iface = IPv4Interface(addr)
            if iface.network not in bridges:
                br = f"br{len(bridges)}"
                bridges[iface.network] = br
                gw = iface.network.network_address + 1
                batch(underlay, [f"link add {br} type bridge", f"link set {br} up",
                                 f"addr add {gw}/{iface.network.prefixlen} dev {br}"])
            ns = box.add_netns(f"{tag}h{i}")
            pod = box.add_netns(f"{tag}p{i}")
            lab._made += [ns, pod]
            host = Host(name, ns, pod, iface, IPv4Network(subnet))
            port = f"u{i}"
            box.veth(underlay, port, ns, "eth0")
            sub = host.subnet
            batch(underlay, [f"link set {port} master {bridges[iface.network]}"])
            batch(ns, [
                f"addr add {addr} dev eth0",
                f"route add default via {iface.network.network_address + 1}",
                "link add cni0 type bridge", "link set cni0 up",
                f"addr add {sub.network_address + 1}/{sub.prefixlen} dev cni0",
                f"link add veth0 mtu {pod_mtu} type veth peer name eth0 mtu {pod_mtu} netns {pod}",
                "link set veth0 master cni0", "link set veth0 up",
            ])
            batch(pod, ["link set eth0 up", f"addr add {host.pod_ip}/{sub.prefixlen} dev eth0",
                        f"route add default via {sub.network_address + 1}"])
            (link,) = ipj(ns, "link", "show", "eth0")
            host.ext = ExternalInterface("eth0", link["ifindex"], iface.ip, link["mtu"])
            lab.hosts[name] = host
    except BaseException:
        lab.close()
        raise
    return lab


# --- capture on the underlay -------------------------------------------------------------------


class Capture:
    """Raw frames seen on an interface of a namespace, collected in a thread."""

    def __init__(self, ns: str, iface: str) -> None:
        self.frames: list[bytes] = []
        self._sock = in_netns(ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                        socket.htons(0x0003)))
        self._sock.bind((iface, 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self._sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._thread.join()
        self._sock.setblocking(False)
        try:  # frames already queued when the thread stopped reading
            while True:
                self.frames.append(self._sock.recv(65535))
        except BlockingIOError:
            pass
        self._sock.close()
        return self.frames


def ping_flood(pod_ns: str, dst: str, seconds: float) -> subprocess.Popen[str]:
    """A fast ping running in the background (its summary tells the loss)."""
    count = int(seconds / 0.01)
    return subprocess.Popen(["ip", "netns", "exec", pod_ns, "ping", "-n", "-i", "0.01", "-W", "1",
                             "-c", str(count), dst], stdout=subprocess.PIPE, text=True)


# --- a cluster of backends driven with synthetic leases (no etcd) ------------------------------


@dataclass
class Cluster:
    lab: Lab
    config: NetworkConfig
    backends: dict[str, Backend] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)

    def peers(self, *extra: Lease) -> list[Lease]:
        return [*self.leases.values(), *extra]

    def reconcile(self, name: str, peers: list[Lease] | None = None, *,
                  full: bool = True) -> ReconcileResult:
        peers = self.peers() if peers is None else peers
        return self.backends[name].reconcile(self.leases[name], peers, full=full)

    def close(self) -> None:
        for be in self.backends.values():
            be.close()


def start_cluster(lab: Lab, config: NetworkConfig, names: list[str] | None = None) -> Cluster:
    """A backend per host, each publishing its lease, then a full reconcile everywhere."""
    cluster = Cluster(lab, config)
    for name in names or list(lab.hosts):
        host = lab.hosts[name]
        be = create_backend(config, host.ext, lab.state_dir(name), netns=host.ns)
        cluster.backends[name] = be
        cluster.leases[name] = host.lease(be.lease_attrs())
    for name in cluster.backends:
        result = cluster.reconcile(name)
        assert not result.errors, result.errors
    return cluster
