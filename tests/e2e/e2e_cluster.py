"""A small flanneld cluster in namespaces, for the e2e tests.

Underlay: one namespace with bridge `br0`; every host namespace gets `eth0`
(192.168.100.<n>/24, a default route over it) on a veth into that bridge, and
the etcd namespace one more. Each host runs a real flanneld (`ip netns exec`),
and may get a pod: bridge `cni0` with the .1 of the host's subnet (from its
subnet.env) and a veth into a pod namespace holding the .2.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from netns_lab.etcd import EtcdMember
from netns_lab.netns import Sandbox, in_netns, ip, run, wait_for

FLANNELD = str(Path(sys.executable).with_name("flanneld"))
UNDERLAY_NET = "192.168.100"
ETCD_IP = f"{UNDERLAY_NET}.250"
HEALTHZ_PORT = 8471
_host_numbers = itertools.count(1)


@dataclass
class Underlay:
    """The shared L2 segment and the etcd namespace on it."""

    sandbox: Sandbox
    ns: str
    etcd: EtcdMember

    @classmethod
    def create(cls, sandbox: Sandbox) -> Underlay:
        ns = sandbox.add_netns("ul", forwarding=False)
        ip("link", "add", "br0", "type", "bridge", netns=ns)
        ip("link", "set", "br0", "up", netns=ns)
        etcd_ns = sandbox.add_netns("etcd", forwarding=False)
        sandbox.veth(ns, "p-etcd", etcd_ns, "eth0")
        ip("link", "set", "p-etcd", "master", "br0", netns=ns)
        ip("addr", "add", f"{ETCD_IP}/24", "dev", "eth0", netns=etcd_ns)
        etcd = EtcdMember(sandbox, "ul", host=ETCD_IP, netns=etcd_ns).start()
        return cls(sandbox, ns, etcd)

    def stop(self) -> None:
        self.etcd.stop()


@dataclass
class Host:
    name: str
    ns: str
    number: int
    dir: Path
    pod_ns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ip(self) -> str:
        return f"{UNDERLAY_NET}.{self.number}"

    @property
    def subnet_file(self) -> Path:
        return self.dir / "subnet.env"

    @property
    def log(self) -> Path:
        return self.dir / "flanneld.log"

    def subnet_env(self) -> dict[str, str]:
        text = self.subnet_file.read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Interface(self.subnet_env()["FLANNEL_SUBNET"]).network

    @property
    def pod_ip(self) -> str:
        return str(self.subnet.network_address + 2)


@dataclass
class Cluster:
    """flanneld on several hosts sharing one etcd prefix."""

    underlay: Underlay
    name: str
    config: dict[str, Any]
    args: list[str] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    own_etcd: EtcdMember | None = None  # instead of the underlay's shared one

    @property
    def sandbox(self) -> Sandbox:
        return self.underlay.sandbox

    @property
    def prefix(self) -> str:
        return f"/e2e/{os.getpid()}/{self.name}/network"

    @property
    def etcd(self) -> EtcdMember:
        return self.own_etcd or self.underlay.etcd

    def add_etcd(self, name: str, number: int) -> EtcdMember:
        """An etcd of this cluster's own (to stop and start), in its own namespace."""
        ns = self.sandbox.add_netns(f"{self.name}{name}", forwarding=False)
        self.sandbox.veth(self.underlay.ns, f"p-{self.name}{name}", ns, "eth0")
        ip("link", "set", f"p-{self.name}{name}", "master", "br0", netns=self.underlay.ns)
        ip("addr", "add", f"{UNDERLAY_NET}.{number}/24", "dev", "eth0", netns=ns)
        self.own_etcd = EtcdMember(self.sandbox, f"{self.name}{name}",
                                   host=f"{UNDERLAY_NET}.{number}", netns=ns).start()
        return self.own_etcd

    def put_config(self) -> None:
        self.etcd.etcdctl("put", f"{self.prefix}/config", json.dumps(self.config))

    def add_host(self, name: str) -> Host:
        n = next(_host_numbers)
        short = f"{self.name}{name}"
        ns = self.sandbox.add_netns(short)
        self.sandbox.veth(self.underlay.ns, f"p{n}", ns, "eth0")
        ip("link", "set", f"p{n}", "master", "br0", netns=self.underlay.ns)
        ip("addr", "add", f"{UNDERLAY_NET}.{n}/24", "dev", "eth0", netns=ns)
        ip("route", "add", "default", "via", ETCD_IP, "dev", "eth0", netns=ns)
        host = Host(name, ns, n, self.sandbox.state_dir / short)
        host.dir.mkdir(parents=True, exist_ok=True)
        self.hosts.append(host)
        return host

    def argv(self, host: Host, *extra: str) -> list[str]:
        return [FLANNELD, "--etcd-endpoints", self.etcd.client_url,
                "--etcd-prefix", self.prefix, "--subnet-file", str(host.subnet_file),
                "--state-dir", str(host.dir / "state"), "--healthz-port", str(HEALTHZ_PORT),
                "--resync-interval", "1", "--subnet-lease-ttl", "10", "--log-level", "debug",
                *self.args, *extra]

    def start(self, host: Host, *extra: str) -> None:
        host.proc = self.sandbox.spawn(f"flanneld-{host.ns}", self.argv(host, *extra),
                                       netns=host.ns, log=host.log)

    def stop(self, host: Host, sig: int = signal.SIGTERM) -> int | None:
        """Signal flanneld and wait for it; returns its exit code."""
        if host.proc is None:
            return None
        proc, host.proc = host.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        self.sandbox.pidfile(f"flanneld-{host.ns}").unlink(missing_ok=True)
        return code

    def wait_ready(self, host: Host, timeout: float = 30) -> None:
        def ready() -> bool:
            if host.proc is not None and host.proc.poll() is not None:
                raise AssertionError(f"flanneld on {host.name} exited {host.proc.returncode}:"
                                     f"\n{tail(host.log)}")
            return readyz(host)[0] == 200
        try:
            wait_for(ready, timeout, what=f"flanneld on {host.name} to be ready")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{tail(host.log)}") from None

    def add_pod(self, host: Host) -> None:
        """cni0 with the .1 of the host's subnet, a veth to a pod namespace with the .2."""
        env = host.subnet_env()
        gw, mtu = IPv4Interface(env["FLANNEL_SUBNET"]), env["FLANNEL_MTU"]
        pod_ns = self.sandbox.add_netns(f"{self.name}{host.name}p", forwarding=False)
        ip("link", "add", "cni0", "type", "bridge", netns=host.ns)
        ip("addr", "add", str(gw), "dev", "cni0", netns=host.ns)
        ip("link", "set", "cni0", "up", netns=host.ns)
        self.sandbox.veth(host.ns, "vpod", pod_ns, "eth0", mtu=int(mtu))
        ip("link", "set", "vpod", "master", "cni0", netns=host.ns)
        ip("addr", "add", f"{gw.network.network_address + 2}/{gw.network.prefixlen}", "dev",
           "eth0", netns=pod_ns)
        ip("route", "add", "default", "via", str(gw.ip), netns=pod_ns)
        host.pod_ns = pod_ns

    def up(self, names: list[str]) -> None:
        """Hosts started in parallel, each ready and given a pod."""
        hosts = [self.add_host(n) for n in names]
        for h in hosts:
            self.start(h)
        for h in hosts:
            self.wait_ready(h)
            self.add_pod(h)

    def teardown(self) -> None:
        for h in self.hosts:
            self.stop(h)
        if self.own_etcd is not None:
            self.own_etcd.stop()
        else:
            self.etcd.etcdctl("del", "--prefix", self.prefix, check=False)

    def peers_of(self, host: Host) -> list[Host]:
        return [h for h in self.hosts if h is not host]


# -- observing ------------------------------------------------------------------------------

def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def http_get(host: Host, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    return in_netns(host.ns, get)


def readyz(host: Host) -> tuple[int, str]:
    try:
        return http_get(host, "/readyz")
    except OSError as exc:
        return 0, str(exc)


def metric(host: Host, name: str, labels: str = "") -> float:
    """One sample from /metrics (0 if absent); `labels` like 'kind="route"'."""
    text = http_get(host, "/metrics")[1]
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", "-n", ns, *args]).stdout
    return json.loads(out) if out.strip() else []


def vxlan_device(ns: str) -> dict[str, Any] | None:
    links = ip_json(ns, "-d", "link", "show", "type", "vxlan")
    return links[0] if links else None


def entries_for(host: Host, peer_subnet: IPv4Network, peer_ip: str) -> dict[str, bool]:
    """Which of the kernel entries for one peer exist on `host`."""
    net = str(peer_subnet)
    routes = [r for r in ip_json(host.ns, "-4", "route", "show", "table", "main")
              if r.get("dst") == net]
    dev = vxlan_device(host.ns)
    if dev is None:
        return {"route": bool(routes), "neigh": False, "fdb": False}
    name = dev["ifname"]
    s0 = str(peer_subnet.network_address)
    neighs = ip_json(host.ns, "-4", "neigh", "show", "dev", name)
    macs = {n.get("lladdr") for n in neighs if n.get("dst") == s0}
    fdb = json.loads(run(["bridge", "-j", "-n", host.ns, "fdb", "show", "dev", name]).stdout
                     or "[]")
    return {"route": bool(routes), "neigh": bool(macs),
            "fdb": any(f.get("mac") in macs and f.get("dst") == peer_ip for f in fdb)}


def all_programmed(cluster: Cluster, host: Host, want: str = "vxlan") -> bool:
    """Every peer of `host` has all its entries (route only for host-gw)."""
    for peer in cluster.peers_of(host):
        e = entries_for(host, peer.subnet, peer.ip)
        if not (e["route"] and (want != "vxlan" or (e["neigh"] and e["fdb"]))):
            return False
    return True


def ping(src: Host, dst: Host, count: int = 3, interval: str = "0.2") -> tuple[int, int]:
    """(transmitted, received) of a ping between two pods."""
    assert src.pod_ns is not None
    proc = run(["ip", "netns", "exec", src.pod_ns, "ping", "-n", "-q", "-c", str(count),
                "-i", interval, "-W", "1", dst.pod_ip], check=False, timeout=120)
    return ping_counts(proc.stdout)


def ping_counts(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    if not m:
        raise AssertionError(f"no ping summary in: {out!r}")
    return int(m.group(1)), int(m.group(2))
