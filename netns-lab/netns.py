"""Network namespaces and processes owned by one run, cleaned up even after a kill.

A `Sandbox` owns every namespace whose name starts with its prefix and every
process it spawned (tracked by pidfile). Tests use a prefix that embeds the
owning PID (`pft<pid>x<rand>`), so a later run can sweep namespaces whose owner
is dead; a reaper child removes them at once if the owner is SIGKILLed.
Nothing here touches the root namespace's links, routes or firewall: links are
created directly inside the namespaces that own them.

A network namespace may also get its own mount namespace (`add_mount_ns`, a
lab host: see netns_lab.nodens). It is held by a tracked process that lives in
the network namespace, so it goes away with the rest at `cleanup`; no mount is
ever made in the caller's mount namespace. `enter` gives the argv prefix that
runs a command in both namespaces, and `spawn` uses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from netns_lab.forkserver import ForkServer

NETNS_DIR = Path("/run/netns")
STATE_ROOT = Path(os.environ.get("PYFLANNEL_STATE_ROOT", "/tmp/pyflannel"))
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its stderr on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return run(argv, check=check).stdout


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Call `fn` in a thread switched into `netns`; sockets it opens stay there."""
    result: list[Any] = []

    def worker() -> None:
        try:
            with open(NETNS_DIR / netns) as target:
                _setns(target.fileno())
            result.append((True, fn()))
        except BaseException as exc:  # handed back to the caller's thread
            result.append((False, exc))

    # A fresh thread, so the caller's namespace is never switched.
    t = threading.Thread(target=worker, name=f"netns-{netns}")
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def socket_in_netns(netns: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    return in_netns(netns, lambda: socket.socket(family, type, proto))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # (gone meanwhile: ENOENT, or ESRCH from the read)
        return False


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


class WaitAbort(Exception):
    """Raised by a `wait_for` condition that can never become true (e.g. the process died)."""


def wait_for(cond: Callable[[], T], timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll `cond` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except WaitAbort:
            raise
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class Sandbox:
    """Namespaces and processes of one run, all named `<prefix>-…`."""

    prefix: str
    state_dir: Path = field(init=False)
    _reaper: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Labs use `pfl-<name>`; nothing else may contain '-', so that no prefix is the
        # start of another's namespace names (`<prefix>-…`).
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"sandbox prefix {self.prefix!r}: use 2-24 lowercase letters/digits"
                             " (or pfl-<lab name> for a lab)")
        self.state_dir = STATE_ROOT / self.prefix
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def scratch(cls) -> Sandbox:
        """A throwaway sandbox (tests, benchmarks): its prefix carries this PID, a reaper
        removes it if we die, and ones left by dead runs are swept first."""
        sweep_stale_test_sandboxes()
        box = cls(f"pft{os.getpid()}x{secrets.token_hex(2)}")
        box.start_reaper()
        return box

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def namespaces(self) -> list[str]:
        return [n for n in list_netns() if n.startswith(self.prefix + "-")]

    def add_netns(self, name: str, *, forwarding: bool = True, forwarding6: bool = False) -> str:
        """A namespace with lo up; `forwarding` makes it a router (ip_forward, no rp_filter),
        `forwarding6` an IPv6 router too."""
        full = self.ns(name)
        if full not in list_netns():
            run(["ip", "netns", "add", full])
        ip("link", "set", "lo", "up", netns=full)
        keys = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0"] if forwarding else []
        keys += ["net.ipv6.conf.all.forwarding=1"] if forwarding6 else []
        if keys:
            run(["ip", "netns", "exec", full, "sysctl", "-qw", *keys])
        return full

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int = 1500) -> None:
        """A veth pair created inside `ns_a`, its peer placed straight into `ns_b`."""
        ip("link", "add", if_a, "mtu", str(mtu), "type", "veth", "peer", "name", if_b,
           "mtu", str(mtu), "netns", ns_b, netns=ns_a)
        ip("link", "set", if_a, "up", netns=ns_a)
        ip("link", "set", if_b, "up", netns=ns_b)

    # mount namespaces ------------------------------------------------------

    def mount_ns_proc(self, netns: str) -> str:
        return f"mntns-{netns}"

    def add_mount_ns(self, netns: str, binds: Sequence[tuple[Path, str]],
                     timeout: float = 30, forks: ForkServer | None = None) -> int:
        """Give `netns` its own mount namespace with `binds` (source dir, default path)
        mounted in it; the pid of the process that holds it (a fork of `forks` if given,
        else `python -m netns_lab.nodens`)."""
        name = self.mount_ns_proc(netns)
        log = self.state_dir / f"{name}.log"
        if forks is not None:
            pid = forks.request({"kind": "nodens", "netns": str(NETNS_DIR / netns),
                                 "binds": [[str(src), dst] for src, dst in binds],
                                 "label": netns, "log": str(log)}, timeout)
            self.pidfile(name).write_text(f"{pid}\n")
            return pid
        spec = json.dumps({"binds": [[str(src), dst] for src, dst in binds], "label": netns})
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR / netns}", "--", _python(), "-m",
                 "netns_lab.nodens", spec], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err, start_new_session=True)
        self.pidfile(name).write_text(f"{proc.pid}\n")  # first: a crash now still cleans up
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if line.strip() != b"ready":
            _kill_pid(proc.pid, signal.SIGKILL, 5)
            self.pidfile(name).unlink(missing_ok=True)
            tail = "".join(list(iter_lines(log))[-5:]).strip() or "no output"
            raise RuntimeError(f"mount namespace for {netns} not set up: {tail}")
        return proc.pid

    def mount_ns_pid(self, netns: str) -> int | None:
        """The holder of `netns`'s mount namespace; None if it never had one.

        Raises when it had one that is gone: a command meant for that host's own
        /run/flannel must not run against the box's."""
        try:
            pid = int(self.pidfile(self.mount_ns_proc(netns)).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            same_net = (os.stat(f"/proc/{pid}/ns/net").st_ino
                        == os.stat(NETNS_DIR / netns).st_ino)
            own_mnt = (os.stat(f"/proc/{pid}/ns/mnt").st_ino
                       != os.stat("/proc/self/ns/mnt").st_ino)
        except OSError:
            same_net = own_mnt = False
        if not (pid_alive(pid) and same_net and own_mnt):
            raise RuntimeError(f"the mount namespace of {netns} is gone (its holder, pid {pid}, "
                               "exited): take the lab down and up again")
        return pid

    def enter(self, netns: str, *, wd: str | None = None) -> list[str]:
        """argv prefix running a command in `netns`, and in its mount namespace if it has
        one (with the working directory `wd`, else /); else as `ip netns exec` does."""
        pid = self.mount_ns_pid(netns)
        if pid is None:
            return ["ip", "netns", "exec", netns]
        return ["nsenter", f"--net={NETNS_DIR / netns}", f"--mount=/proc/{pid}/ns/mnt",
                *([f"--wd={wd}"] if wd else []), "--"]

    # processes -------------------------------------------------------------

    def pidfile(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def spawn(self, name: str, argv: Sequence[str], *, netns: str | None = None,
              env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a tracked process, optionally inside one of our namespaces (network, and
        mount if it has one)."""
        full = list(argv)
        if netns is not None:
            full = [*self.enter(netns), *full]
        log = log or self.state_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pidfile(name).write_text(f"{proc.pid}\n")
        return proc

    def pid(self, name: str) -> int | None:
        """The pid of a tracked process if it is still running."""
        try:
            pid = int(self.pidfile(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def kill(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        pf = self.pidfile(name)
        try:
            pid = int(pf.read_text())
        except (FileNotFoundError, ValueError):
            return
        _kill_pid(pid, sig, timeout)
        pf.unlink(missing_ok=True)

    # teardown --------------------------------------------------------------

    def start_reaper(self) -> None:
        """A child that cleans up if this process dies without doing so itself."""
        r, w = os.pipe()
        code = ("import os,sys;from netns_lab.netns import Sandbox;"
                "os.read(0,1);Sandbox(sys.argv[1]).cleanup()")
        self._reaper = subprocess.Popen(
            [_python(), "-c", code, self.prefix], stdin=r, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=())
        os.close(r)
        self._reaper_w = w  # never written: its close at our death wakes the reaper

    def cleanup(self) -> None:
        pids = []
        for pf in sorted(self.state_dir.glob("*.pid")):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pids.append(int(pf.read_text()))
        kill_pids(pids, signal.SIGTERM, 5)
        for ns in self.namespaces():
            for pid in netns_pids(ns):
                _kill_pid(pid, signal.SIGKILL, 5)
            run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self._reaper is not None:
            os.close(self._reaper_w)
            self._reaper.wait(timeout=30)
            self._reaper = None


def _kill_pid(pid: int, sig: int, timeout: float) -> None:
    kill_pids([pid], sig, timeout)


def kill_pids(pids: Sequence[int], sig: int, timeout: float) -> None:
    """Signal all at once, wait for all, SIGKILL the ones still alive at the deadline."""
    live = [p for p in pids if pid_alive(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        for pid in live:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap our own children so they stop being zombies
        live = [p for p in live if pid_alive(p)]
        if not live or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def _python() -> str:
    import sys
    return sys.executable


_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,23}|pfl-[a-z][a-z0-9]{0,19}")
# Test sandboxes (`pft<pid>x<hex>`) and labs started by tests (`pfl-t<pid>x<tag>`):
# both carry the PID of the test process that owns them.
_TEST_PREFIX = re.compile(r"^((?:pft|pfl-t)(\d+)x[0-9a-z]+)-")


def owned_lab_name(tag: str = "") -> str:
    """A lab name owned by this process: swept by the next test run if this one dies."""
    return f"t{os.getpid()}x{tag or secrets.token_hex(2)}"


def sweep_stale_test_sandboxes() -> list[str]:
    """Remove test sandboxes and test labs whose owning process is gone (crash, kill -9)."""
    owners: dict[str, int] = {}
    for ns in list_netns():
        m = _TEST_PREFIX.match(ns)
        if m:
            owners[m.group(1)] = int(m.group(2))
    if STATE_ROOT.exists():
        for d in STATE_ROOT.iterdir():
            m = _TEST_PREFIX.match(d.name + "-")
            if m:
                owners[m.group(1)] = int(m.group(2))
    swept = [p for p, pid in owners.items() if not pid_alive(pid)]
    for prefix in swept:
        Sandbox(prefix).cleanup()
    return swept


def iter_lines(path: Path) -> Iterator[str]:
    with contextlib.suppress(FileNotFoundError), open(path, errors="replace") as f:
        yield from f
