"""A CNI "node" for tests: a host netns of our own, the installed plugin, subnet.env, a server.

The plugin is exec'd exactly as a runtime does it (env + stdin, in the host
netns via nsenter); state lives in temp dirs (ipam.dataDir, dataDir, the
socket dir), never in /var/lib/cni or /run/flannel of the machine.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab.netns import Sandbox, run, wait_for

from flanneld.ctl.install_cni import install

REPO = Path(__file__).resolve().parents[2]
CRASHPOINT = Path(__file__).with_name("crashpoint.py")
_seq = itertools.count()


@dataclass
class Outcome:
    code: int
    out: bytes
    err: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def ok(self) -> Outcome:
        assert self.code == 0, f"rc={self.code} out={self.out!r} err={self.err!r}"
        return self

    def failed(self, code: int | None = None) -> dict[str, Any]:
        """Assert the CNI error contract: non-zero exit, exactly one JSON error object."""
        assert self.code != 0, f"expected a failure, got {self.out!r}"
        body: dict[str, Any] = json.loads(self.out)  # exactly one JSON document
        assert isinstance(body.get("code"), int) and body.get("msg"), body
        if code is not None:
            assert body["code"] == code, body
        return body


@dataclass
class Node:
    sandbox: Sandbox
    root: Path
    subnet: str = "10.5.52.1/24"
    network: str = "10.5.0.0/16"
    ipmasq: bool = True          # FLANNEL_IPMASQ: true means flanneld masquerades, we don't
    ipv6_network: str = ""       # FLANNEL_IPV6_NETWORK/SUBNET when set (network="" with
    ipv6_subnet: str = ""        # subnet="" and these: an IPv6-only node)
    mtu: int = 1450
    host: str = ""
    server: subprocess.Popen[bytes] | None = None
    pods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = next(_seq)
        self.host = f"{self.sandbox.prefix}-ch{os.getpid() % 1000}n{n}"
        run(["ip", "netns", "add", self.host])
        run(["ip", "-n", self.host, "link", "set", "lo", "up"])
        self.run_dir = self.root / "run"
        self.run_dir.mkdir(mode=0o700)
        self.bin_dir = self.root / "bin"
        self.data_dir = self.root / "flannel"
        self.ipam_dir = self.root / "networks"
        self.plugin = install(self.bin_dir)
        self.write_subnet_env()

    @property
    def subnet_file(self) -> Path:
        return self.run_dir / "subnet.env"

    @property
    def socket(self) -> Path:
        return self.run_dir / "cni.sock"

    def write_subnet_env(self, **over: Any) -> None:
        for key, value in over.items():
            setattr(self, key, value)
        text = ""
        if self.network:
            text += f"FLANNEL_NETWORK={self.network}\nFLANNEL_SUBNET={self.subnet}\n"
        if self.ipv6_network:
            text += (f"FLANNEL_IPV6_NETWORK={self.ipv6_network}\n"
                     f"FLANNEL_IPV6_SUBNET={self.ipv6_subnet}\n")
        self.subnet_file.write_text(
            f"{text}FLANNEL_MTU={self.mtu}\n"
            f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}\n")

    def dual_stack(self, **over: Any) -> None:
        """subnet.env of a dual-stack node (flannel's layout), with `over` applied."""
        self.write_subnet_env(**{"ipv6_network": "fd00:10:5::/48",
                                 "ipv6_subnet": "fd00:10:5:52::1/64", **over})

    def ipv6_only(self, **over: Any) -> None:
        """subnet.env of an IPv6-only node: no FLANNEL_NETWORK/FLANNEL_SUBNET at all."""
        self.dual_stack(network="", subnet="", **over)

    def pod_exec(self, netns: str, *argv: str, check: bool = False
                 ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", netns.rsplit("/", 1)[-1], *argv], check=check)

    def ping(self, netns: str, target: str) -> None:
        """One ping (IPv4 or IPv6: iputils picks the family from the address) must answer."""
        out = self.pod_exec(netns, "ping", "-c", "1", "-W", "2", target)
        assert out.returncode == 0, f"ping {target} from {netns}: {out.stdout}{out.stderr}"

    def conf(self, version: str = "0.3.1", name: str = "cbr0", **extra: Any) -> dict[str, Any]:
        """The kube-flannel conflist's flannel entry, as the runtime derives it."""
        conf: dict[str, Any] = {
            "cniVersion": version, "name": name, "type": "flannel",
            "subnetFile": str(self.subnet_file), "dataDir": str(self.data_dir),
            "ipam": {"dataDir": str(self.ipam_dir)},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
        conf.update(extra)
        return conf

    # namespaces ------------------------------------------------------------------

    def pod(self, tag: str = "") -> str:
        name = f"{self.host}p{tag or next(_seq)}"
        run(["ip", "netns", "add", name])
        self.pods.append(name)
        return f"/run/netns/{name}"

    def pods_batch(self, count: int) -> list[str]:
        names = [f"{self.host}p{next(_seq)}" for _ in range(count)]
        run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names))
        self.pods += names
        return [f"/run/netns/{n}" for n in names]

    def ip(self, *args: str, netns: str | None = None) -> str:
        ns = netns.rsplit("/", 1)[-1] if netns else self.host
        return run(["ip", "-n", ns, *args]).stdout

    def ipj(self, *args: str, netns: str | None = None) -> Any:
        return json.loads(self.ip("-j", *args, netns=netns) or "[]")

    def nft(self) -> str:
        return run(["ip", "netns", "exec", self.host, "nft", "list", "ruleset"]).stdout

    def reservations(self, name: str = "cbr0") -> dict[str, str]:
        d = self.ipam_dir / name
        if not d.exists():
            return {}
        return {p.name: p.read_bytes().decode() for p in d.iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved_ip")}

    def host_veths(self) -> list[str]:
        return [link["ifname"] for link in self.ipj("link", "show", "type", "veth")]

    # invocation ------------------------------------------------------------------

    def env(self, command: str, cid: str = "", netns: str = "", ifname: str = "eth0",
            args: str = "", **extra: str) -> dict[str, str]:
        env = {"CNI_COMMAND": command, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "CNI_PATH": "/usr/lib/cni"}
        if cid:
            env["CNI_CONTAINERID"] = cid
        if command in ("ADD", "DEL", "CHECK"):
            env["CNI_NETNS"] = netns
            env["CNI_IFNAME"] = ifname
        if args:
            env["CNI_ARGS"] = args
        env.update(extra)
        return env

    def call(self, env: dict[str, str], conf: Any, exe: str | Path | None = None,
             timeout: float = 60, argv: list[str] | None = None) -> Outcome:
        """Run the plugin (or `argv`, e.g. a crashpoint) in the host's netns."""
        data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        cmd = argv or [str(exe or self.plugin)]
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{self.host}", *cmd],
                              input=data, env=env, capture_output=True, timeout=timeout)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    def add(self, conf: Any, cid: str, netns: str, ifname: str = "eth0", **kw: str) -> Outcome:
        return self.call(self.env("ADD", cid, netns, ifname, **kw), conf)

    def delete(self, conf: Any, cid: str, netns: str, ifname: str = "eth0",
               prev: Any = None, **kw: str) -> Outcome:
        if prev is not None:
            conf = dict(conf, prevResult=prev)
        return self.call(self.env("DEL", cid, netns, ifname, **kw), conf)

    def check(self, conf: Any, cid: str, netns: str, prev: Any, ifname: str = "eth0") -> Outcome:
        return self.call(self.env("CHECK", cid, netns, ifname), dict(conf, prevResult=prev))

    # the server ------------------------------------------------------------------

    def start_server(self, crash: str | None = None) -> None:
        """Start flanneld's CNI server; with `crash`, one that SIGKILLs itself there."""
        name = self.host.rsplit("-", 1)[-1] + "srv"
        self.socket.unlink(missing_ok=True)  # a killed server leaves its socket file behind
        head = ([sys.executable, str(CRASHPOINT), crash, "server"] if crash
                else [sys.executable, "-m", "flanneld.cni_server"])
        self.server = self.sandbox.spawn(
            name, [*head, "--socket", str(self.socket)], netns=self.host,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        wait_for(lambda: self._socket_answers(), 20, what=f"CNI server on {self.socket}")

    def _socket_answers(self) -> bool:
        if self.server is not None and self.server.poll() is not None:
            raise RuntimeError(f"CNI server exited with {self.server.returncode}")
        return self.socket.exists()

    def stop_server(self) -> None:
        if self.server is not None:
            self.sandbox.kill(self.host.rsplit("-", 1)[-1] + "srv")
            self.server.wait(timeout=10)
            self.server = None

    def cleanup(self) -> None:
        self.stop_server()
        for name in [*self.pods, self.host]:
            run(["ip", "netns", "del", name], check=False)
