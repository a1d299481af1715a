"""A WireGuard device to configure: wireguard-go through its UAPI socket, or kernel
WireGuard through generic netlink. Both speak UAPI text to the backend (`get`, `set`).

Choosing (`--wireguard-userspace`): `auto` uses a kernel device where the kernel
can make one and wireguard-go where it cannot (CONFIG_WIREGUARD unset); `never` is
kernel only; a path is always that wireguard-go binary.

wireguard-go facts that shape this (tried here):
- it exits when its socket file or its tun link is removed, and a second copy on the
  same name fails ("device busy"), so a running one is adopted through its socket,
  never deleted and re-made (flannel deletes a link that "already exists");
- in daemon mode it keeps its caller's session and dies of SIGPIPE when its output is
  a pipe to a dead parent, so it runs in the foreground (`-f`) in a session of its
  own, its output going to a log file: a killed flanneld leaves it running;
- the socket lives under /var/run/wireguard of the caller's mount namespace.
"""

from __future__ import annotations

import errno as errnos
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from backends.wg_base import DeviceInfo, WgDevice, WgDeviceError
from backends.wg_uapi import UapiError, check_reply
from netlink import messages as m
from netlink.rtnl import NetlinkError, RtNetlink

log = logging.getLogger("pyflannel.backends.wireguard")
SOCKET_DIR = Path("/var/run/wireguard")
START_TIMEOUT = 10.0
__all__ = ["DeviceInfo", "WgDevice", "WgDeviceError", "open_device"]


def socket_path(name: str) -> Path:
    return SOCKET_DIR / f"{name}.sock"


class UapiSocket:
    """One connection to a UAPI socket, kept open (wireguard-go serves many requests on
    it) and made again once if the server dropped it."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path, self.timeout = path, timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        return sock

    def request(self, text: str) -> str:
        for attempt in (0, 1):
            if self._sock is None:
                self._sock = self._connect()
            sent = False
            try:
                self._sock.sendall(text.encode())
                sent = True
                buf = b""
                while not buf.endswith(b"\n\n"):
                    chunk = self._sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionResetError(errnos.ECONNRESET, "closed by the device")
                    buf += chunk
                return buf.decode("utf-8", "replace")
            except OSError:
                self.close()
                # a set that reached the device may still be applied: never send it twice
                if attempt or (sent and not text.startswith("get=")):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class UserspaceDevice:
    def __init__(self, info: DeviceInfo, path: Path) -> None:
        self.info, self.uapi = info, UapiSocket(path)

    def get(self) -> str:
        try:
            return self.uapi.request("get=1\n\n")
        except OSError as exc:
            raise WgDeviceError(exc.errno or errnos.EIO,
                                f"{self.info.name}: its socket {self.uapi.path} does not "
                                f"answer ({exc}); wireguard-go exited?") from None

    def set(self, request: str) -> None:
        try:
            check_reply(self.uapi.request(request))
        except OSError as exc:
            raise WgDeviceError(exc.errno or errnos.EIO,
                                f"{self.info.name}: set failed ({exc})") from None
        except UapiError as exc:
            raise WgDeviceError(exc.errno, f"{self.info.name}: {exc}") from None

    def close(self) -> None:
        self.uapi.close()


def _ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def find_wireguard_go(name: str) -> int:
    """The pid of the wireguard-go serving `name` in our network and mount namespaces."""
    mine = (_ns_inode("self", "net"), _ns_inode("self", "mnt"))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"wireguard-go") or name.encode() not in argv[1:]:
                continue
            if (_ns_inode(entry.name, "net"), _ns_inode(entry.name, "mnt")) == mine:
                return int(entry.name)
        except OSError:
            continue
    return 0


def _answers(path: Path) -> bool:
    probe = UapiSocket(path, timeout=2.0)
    try:
        probe.request("get=1\n\n")
        return True
    except OSError:
        return False
    finally:
        probe.close()


def wireguard_go_binary(userspace: str) -> str:
    if userspace.startswith("/"):
        if not os.access(userspace, os.X_OK):
            raise WgDeviceError(errnos.ENOENT, f"--wireguard-userspace={userspace}: not an "
                                "executable file")
        return userspace
    found = shutil.which("wireguard-go")
    if found is None:
        raise WgDeviceError(errnos.ENOENT, "this kernel has no WireGuard and wireguard-go is "
                            "not installed: `apt-get install wireguard-go`, or pass "
                            "--wireguard-userspace=/path/to/wireguard-go")
    return found


def start_wireguard_go(name: str, binary: str, log_file: Path, netns: str | None) -> int:
    """Start wireguard-go detached; its pid once its socket answers."""
    path = socket_path(name)
    if path.exists() and not _answers(path):
        path.unlink()  # a dead copy's socket: a new one could not listen on it
    cmd = [binary, "-f", name]
    if netns is not None:
        target = netns if netns.startswith("/") else f"/run/netns/{netns}"
        cmd = ["nsenter", f"--net={target}", "--", *cmd]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True,
                                env={**os.environ, "LOG_LEVEL": "error"})
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and _answers(path):
            log.info("started wireguard-go for %s (pid %d, log %s)", name, proc.pid, log_file)
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
    raise WgDeviceError(errnos.EIO, f"wireguard-go did not bring up {name}: "
                        + ("; ".join(tail) or f"exit status {proc.returncode}"))


def _link(nl: RtNetlink, name: str) -> m.LinkRow | None:
    return nl.get(m.RTM_GETLINK, m.link_get_body(name), m.parse_link, m.RTM_NEWLINK)


def _try_kernel_link(nl: RtNetlink, name: str, mtu: int) -> bool:
    """Create a kernel WireGuard link; False when the kernel cannot."""
    body = (m.ifinfo() + m.strz(m.IFLA_IFNAME, name) + m.rta_u32(m.IFLA_MTU, mtu)
            + m.nested(m.IFLA_LINKINFO, m.strz(m.IFLA_INFO_KIND, "wireguard")))
    try:
        nl.check(m.RTM_NEWLINK, m.NLM_F_CREATE | m.NLM_F_EXCL, body, f"create {name}")
    except NetlinkError as exc:
        if exc.errno in (errnos.EOPNOTSUPP, errnos.ENODEV, errnos.EINVAL):
            return False
        raise
    return True


def open_device(name: str, *, netns: str | None, mtu: int, userspace: str = "auto",
                log_dir: Path = Path("/run/flannel")) -> WgDevice:
    """The device `name`, adopted if it runs, else made: kernel or wireguard-go."""
    with RtNetlink(netns) as nl:
        link = _link(nl, name)
        if link is not None and link.kind == "wireguard":
            if userspace.startswith("/"):
                raise WgDeviceError(errnos.EEXIST, f"{name} is a kernel WireGuard link, but "
                                    f"--wireguard-userspace={userspace}: remove the link, or "
                                    "use --wireguard-userspace=auto")
            return _kernel(name, netns, adopted=True)
        path = socket_path(name)
        if link is not None and path.exists() and _answers(path):
            pid = find_wireguard_go(name)
            return UserspaceDevice(DeviceInfo(name, "userspace", pid, adopted=True), path)
        if link is not None:  # a tun nobody serves carries nothing: make it again
            log.warning("%s (%s) has no live wireguard-go behind it: re-creating it", name,
                        link.kind or "unknown kind")
            nl.delete_link(name)
        if not userspace.startswith("/") and _try_kernel_link(nl, name, mtu):
            return _kernel(name, netns, adopted=False)
    if userspace == "never":
        raise WgDeviceError(errnos.EOPNOTSUPP, "this kernel has no WireGuard (CONFIG_WIREGUARD)"
                            " and --wireguard-userspace=never: load the wireguard module, or "
                            "allow wireguard-go with --wireguard-userspace=auto")
    binary = wireguard_go_binary(userspace)
    pid = start_wireguard_go(name, binary, log_dir / f"{name}.wireguard-go.log", netns)
    return UserspaceDevice(DeviceInfo(name, "userspace", pid), path)


def _kernel(name: str, netns: str | None, *, adopted: bool) -> WgDevice:
    from backends.wg_kernel import KernelDevice  # pyroute2: loaded only on this path

    return KernelDevice(DeviceInfo(name, "kernel", adopted=adopted), netns)
