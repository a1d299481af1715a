"""A named lab's persistent state: the parsed topology, its plan and the live pods.

State lives in `<STATE_ROOT>/pfl-<name>/` (the lab's Sandbox state dir):
`lab.json` (topology, assigned addresses, pods, partitions), one directory per
host (subnet.env, flanneld state, CNI config and IPAM data), pidfiles and logs.
Commands that change the state hold `lab.lock` while they read-modify-write.

A lab host is a node: it has its own mount namespace in which flannel's default
paths are its own directories (NODE_DIRS), so flanneld, the CNI plugin and
flannelctl run there with their defaults, and the same files are read from
outside under the host's directory:

    inside the host          outside: <state dir>/<host>/...
    /run/flannel             .            subnet.env, cni.sock, flanneld's runtime file
    /var/lib/pyflannel       .            vtep-mac.*
    /etc/cni/net.d           cni/         10-flannel.conflist
    /var/lib/cni             var-lib-cni/
    /var/lib/cni/networks    ipam/        host-local's address store
    /var/lib/cni/flannel     cni-flannel/ the flannel plugin's dataDir
    /run/wireguard           run-wireguard/
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab import netns
from netns_lab.etcd import EtcdMember
from netns_lab.forkserver import BACKEND_MODULES, ForkServer
from netns_lab.model import url_host
from netns_lab.netns import Sandbox
from netns_lab.plan import Plan, lab_prefix, make_plan
from netns_lab.runtime import result_address
from netns_lab.tls import Pki, passwords
from netns_lab.topology import Topology, parse

STATE_FILE = "lab.json"
DEFAULT_NAME = "lab"
# A host's default path -> (its directory under the host dir, mode); parents come first.
NODE_DIRS: tuple[tuple[str, str, int], ...] = (
    ("/run/flannel", ".", 0o755),
    ("/var/lib/pyflannel", ".", 0o755),
    ("/etc/cni/net.d", "cni", 0o755),
    ("/var/lib/cni", "var-lib-cni", 0o755),
    ("/var/lib/cni/networks", "ipam", 0o755),
    ("/var/lib/cni/flannel", "cni-flannel", 0o700),
    ("/run/wireguard", "run-wireguard", 0o700),
)


class LabError(RuntimeError):
    """A lab command that cannot proceed; the message says what to do."""



def flanneld_proc(host: str) -> str:
    """The sandbox's process name of `host`'s flanneld."""
    return f"flanneld-{host}"

@dataclass
class Pod:
    """A pod and its addresses from its CNI result: `ip` (IPv4) and `ip6`, "" if it has
    none of that family (an IPv6-only pod has no `ip`)."""

    host: str
    name: str
    ip: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    ip6: str = ""

    def address(self, version: int) -> str:
        return self.ip if version == 4 else self.ip6

    @property
    def addresses(self) -> list[str]:
        return [a for a in (self.ip, self.ip6) if a]


@dataclass
class Lab:
    name: str
    topology: Topology
    plan: Plan
    pods: dict[str, dict[str, Pod]] = field(default_factory=dict)  # host -> name -> Pod
    partitions: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    _sandbox: Sandbox | None = field(default=None, init=False, repr=False)
    _forks: ForkServer | None = field(default=None, init=False, repr=False)

    # -- naming and places ---------------------------------------------------

    @staticmethod
    def state_dir_of(name: str) -> Path:
        return netns.STATE_ROOT / lab_prefix(name)

    @property
    def state_dir(self) -> Path:
        return self.state_dir_of(self.name)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.plan.prefix)
        return self._sandbox

    def forks(self) -> ForkServer | None:
        """This command's fork server for the lab's flanneld and mount-namespace holders
        (netns_lab.forkserver), started on first use; None with NETNS_LAB_FORKSERVER=0,
        which execs every flanneld afresh instead."""
        if os.environ.get("NETNS_LAB_FORKSERVER", "1") == "0":
            return None
        if self._forks is None or self._forks.proc.poll() is not None:
            backend = BACKEND_MODULES.get(self.topology.backend_type.lower())
            log = self.state_dir / f"forkserver-{os.getpid()}.log"
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._forks = ForkServer(log, [backend] if backend else [])
            # tracked like the lab's daemons: `down` stops it if this command dies first
            pidfile = self.sandbox.pidfile(f"forkserver-{os.getpid()}")
            pidfile.write_text(f"{self._forks.pid}\n")
            atexit.register(self._close_forks, self._forks, pidfile)
        return self._forks

    @staticmethod
    def _close_forks(forks: ForkServer, pidfile: Path) -> None:
        forks.close()
        pidfile.unlink(missing_ok=True)

    def host_dir(self, host: str) -> Path:
        return self.state_dir / host

    def node_path(self, host: str, path: str) -> Path:
        """Where a file that `host` sees at `path` (under one of NODE_DIRS) is, from outside."""
        for inside, rel, _ in sorted(NODE_DIRS, key=lambda d: -len(d[0])):
            if path == inside or path.startswith(inside + "/"):
                return self.host_dir(host) / rel / path[len(inside):].lstrip("/")
        raise ValueError(f"{path} is not one of a lab host's own directories "
                         f"({', '.join(d for d, _, _ in NODE_DIRS)})")

    def node_binds(self, host: str) -> list[tuple[Path, str]]:
        """The host's directories (made here), each with the default path it is mounted on."""
        binds: list[tuple[Path, str]] = []
        for inside, rel, mode in NODE_DIRS:
            src = self.host_dir(host) / rel
            src.mkdir(parents=True, exist_ok=True)
            if rel != ".":
                src.chmod(mode)
            for outer_src, outer in binds:  # a bind inside an earlier one: its mountpoint
                if inside.startswith(outer + "/"):
                    (outer_src / inside[len(outer) + 1:]).mkdir(parents=True, exist_ok=True)
            binds.append((src.resolve(), inside))
        return binds

    def enter(self, target: str, *, wd: str | None = None) -> list[str]:
        """argv prefix that runs a command on a host (its network and mount namespaces),
        or in the namespace of a pod, router, segment or etcd member."""
        _, ns = self.resolve(target)
        return self.sandbox.enter(ns, wd=wd)

    @property
    def cni_bin(self) -> Path:
        return self.state_dir / "cni-bin"

    def ns(self, short: str) -> str:
        return self.plan.ns(short)

    def etcd_members(self) -> list[EtcdMember]:
        # over IPv4 when the underlay has it, else over IPv6 (etcd listens on that address)
        cluster = {m.name: f"http://{url_host(self.plan.addr_of(m.name))}:2380"
                   for m in self.topology.etcd}
        extra: tuple[str, ...] = ()
        if self.topology.etcd_tls:  # clients: https with certificates; peers stay plain
            pki = self.pki
            extra = (f"--cert-file={pki.cert('server')}", f"--key-file={pki.key('server')}",
                     "--client-cert-auth", f"--trusted-ca-file={pki.ca}")
        return [EtcdMember(self.sandbox, m.name, host=str(self.plan.addr_of(m.name)),
                           netns=self.ns(m.name), cluster=cluster, extra_args=extra)
                for m in self.topology.etcd]

    @property
    def pki(self) -> Pki:
        """Where an `etcd: {tls: true}` lab keeps its CA, certificates and passwords."""
        return Pki(self.state_dir / "pki")

    def etcd_client(self, user: str = "root") -> tuple[list[str], dict[str, str]]:
        """etcdctl's extra flags and environment for this lab's etcd, as `user`."""
        args: list[str] = []
        env: dict[str, str] = {}
        if self.topology.etcd_tls:
            pki = self.pki
            args = ["--cacert", str(pki.ca), "--cert", str(pki.cert(user)),
                    "--key", str(pki.key(user))]
        if self.topology.etcd_auth:
            env["ETCDCTL_USER"] = f"{user}:{passwords(self.pki.dir)[user]}"
        return args, env

    def all_pods(self) -> list[Pod]:
        return [p for h in self.topology.host_names for p in self.pods.get(h, {}).values()]

    def resolve(self, target: str) -> tuple[str, str]:
        """(kind, namespace) of a host, pod (`pod`, `host/pod` or `host-pod`), router,
        segment, etcd member or world of this lab."""
        t = self.topology
        kinds = {**{s.name: "segment" for s in t.segments}, **{r.name: "router" for r in t.routers},
                 **{m.name: "etcd" for m in t.etcd}, **{h: "host" for h in t.host_names},
                 **({t.world.name: "world"} if t.world else {})}
        if target in kinds:
            return kinds[target], self.ns(target)
        for sep in ("/", "-"):
            if sep in target:
                host, pod = target.split(sep, 1)
                if pod in self.pods.get(host, {}):
                    return "pod", self.plan.pod_ns(host, pod)
        owners = [p for p in self.all_pods() if p.name == target]
        if len(owners) == 1:
            return "pod", self.plan.pod_ns(owners[0].host, target)
        if len(owners) > 1:
            raise LabError(f"pod name {target!r} is on several hosts; say which: "
                           + ", ".join(f"{p.host}/{p.name}" for p in owners))
        pods = [f"{p.host}/{p.name}" for p in self.all_pods()]
        raise LabError(f"{target!r} is not in lab {self.name!r}; hosts: "
                       f"{', '.join(t.host_names)}; pods: {', '.join(pods) or 'none'}; "
                       f"others: {', '.join(k for k, v in kinds.items() if v != 'host')}")

    # -- persistence -----------------------------------------------------------

    @classmethod
    def new(cls, name: str, topology: Topology, source: str = "") -> Lab:
        return cls(name=name, topology=topology, plan=make_plan(topology, name), source=source)

    @classmethod
    def exists(cls, name: str) -> bool:
        return (cls.state_dir_of(name) / STATE_FILE).exists()

    @classmethod
    def load(cls, name: str) -> Lab:
        path = cls.state_dir_of(name) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            leftovers = [n for n in netns.list_netns() if n.startswith(lab_prefix(name) + "-")]
            hint = (f" ({len(leftovers)} of its namespaces are left over: run "
                    f"`netns-lab down --name {name}`)" if leftovers else "")
            raise LabError(f"lab {name!r} is not up{hint}; start it with "
                           f"`netns-lab up --name {name}`") from None
        topology = parse(data["topology"], str(path))
        lab = cls.new(name, topology, data.get("source", ""))
        for host, pods in data.get("pods", {}).items():
            lab.pods[host] = {n: Pod(host, n, p.get("ip", ""), p.get("result", {}),
                                     p.get("ip6") or result_address(p.get("result", {}), 6))
                              for n, p in pods.items()}
        lab.partitions = [(a, b) for a, b in data.get("partitions", [])]
        return lab

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1, "name": self.name, "source": self.source,
            "topology": self.topology.to_dict(), "plan": self.plan.to_dict(),
            "pods": {h: {n: {"ip": p.ip, "ip6": p.ip6, "netns": self.plan.pod_ns(h, n),
                             "container_id": self.plan.container_id(h, n), "result": p.result}
                         for n, p in pods.items()} for h, pods in self.pods.items()},
            "partitions": [list(p) for p in self.partitions],
        }

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Lab]:
        """This lab re-read under its lock, saved on normal exit."""
        with lab_lock(self.name):
            fresh = Lab.load(self.name)
            yield fresh
            fresh.save()


@contextlib.contextmanager
def lab_lock(name: str) -> Iterator[None]:
    d = Lab.state_dir_of(name)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "lab.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def list_labs() -> list[str]:
    """Names of labs with a state file or left-over namespaces."""
    names = set()
    if netns.STATE_ROOT.exists():
        names |= {d.name[4:] for d in netns.STATE_ROOT.iterdir() if d.name.startswith("pfl-")}
    names |= {n.split("-")[1] for n in netns.list_netns() if n.startswith("pfl-")}
    return sorted(names)
