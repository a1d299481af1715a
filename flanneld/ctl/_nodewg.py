"""This node's WireGuard side as it is (key file, devices, their UAPI state) and as it should be.

Read: the key file (flanneld's path: /run/flannel/wgkey, or $WIREGUARD_KEY_FILE) for
its mode and public key; per device of the config (`backends.wg_desired.device_specs`:
flannel-wg, and flannel-wg-v6 in separate mode with IPv6) its link (up, MTU, kind: a
wireguard-go device is a `tun` link, a kernel one `wireguard`) and its UAPI `get`
reply from /var/run/wireguard/<dev>.sock. Then every lease is judged against the
backend's own desired peers (`wg_desired.desired_peers`) by `wgpeers.judge_device`.
Nothing is written, and no device is ever opened for writing.

Kernel WireGuard is configured over generic netlink, which flannelctl does not read:
such a device is reported as "kernel WireGuard: not readable here" and its peers are
not judged.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.peerstate import PeerCheck
from backends.state import LinkState
from core.lease import Lease
from flanneld.ctl import wgpeers
from flanneld.ctl.wgpeers import WgVerdict

KERNEL_UNREADABLE = "kernel WireGuard: not readable here (flannelctl reads wireguard-go's socket)"


@dataclass
class WgDeviceView:
    name: str
    listen_port: int  # what the config wants
    mtu: int  # what the config wants: interface MTU - 80
    link: LinkState | None = None
    socket: str = ""
    state: Any = None  # backends.wg_uapi.DeviceState, once read
    error: str = ""
    since: float | None = None  # when its socket appeared (wireguard-go started)
    verdicts: dict[str, WgVerdict] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """userspace (wireguard-go), kernel, or "" (no link)."""
        if self.link is None:
            return ""
        return "kernel" if self.link.kind == "wireguard" else "userspace"

    def as_dict(self) -> dict[str, Any]:
        st = self.state
        return {"name": self.name, "kind": self.kind or None, "socket": self.socket or None,
                "up": self.link.up if self.link else None,
                "mtu": self.link.mtu if self.link else None, "want_mtu": self.mtu,
                "listen_port": st.listen_port if st is not None else None,
                "want_listen_port": self.listen_port, "error": self.error or None,
                "peers": [v.as_dict() for v in self.verdicts.values()],
                "strays": self.strays}


@dataclass
class WgView:
    key_file: Path
    key_mode: int | None = None  # None: not there
    key_error: str = ""
    key_public: str = ""  # the key file's public key
    lease_public: str = ""  # what our lease publishes
    device_publics: dict[str, str] = field(default_factory=dict)  # device -> its public key
    devices: list[WgDeviceView] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, WgVerdict]:
        """Every lease's verdict, keyed by lease key (by device too with two devices)."""
        two = len(self.devices) > 1
        return {(f"{d.name}:{k}" if two else k): v for d in self.devices
                for k, v in d.verdicts.items()}

    def checks(self) -> dict[str, PeerCheck]:
        return {k: v.check() for k, v in self.verdicts().items()}

    def strays(self) -> list[str]:
        return [s for d in self.devices for s in d.strays]

    def as_dict(self) -> dict[str, Any]:
        return {"key_file": str(self.key_file),
                "key_mode": f"{self.key_mode:04o}" if self.key_mode is not None else None,
                "key_error": self.key_error or None, "public_key": self.lease_public or None,
                "devices": [d.as_dict() for d in self.devices], "errors": self.errors}


def decode_key(text: str) -> bytes:
    """A base64 WireGuard key (32 bytes); ValueError otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, a WireGuard key has 32")
    return raw


def public_of(private: bytes) -> str:
    from core.wgkey import encode_key, public_key

    return str(encode_key(public_key(private)))


def _as_bytes(key: Any) -> bytes:
    """A key as parse_get gives it (bytes, or hex/base64 text) as 32 bytes."""
    if isinstance(key, bytes | bytearray):
        return bytes(key)
    text = str(key)
    return bytes.fromhex(text) if len(text) == 64 else decode_key(text)


def read_key_file(view: WgView) -> None:
    try:
        st = view.key_file.stat()
        view.key_mode = stat.S_IMODE(st.st_mode)
        view.key_public = public_of(decode_key(view.key_file.read_text()))
    except FileNotFoundError:
        view.key_error = "does not exist"
    except (OSError, ValueError) as exc:
        view.key_error = str(getattr(exc, "strerror", None) or exc)


def read_device(dev: WgDeviceView, link: LinkState | None, sock_root: Path) -> None:
    """Link and UAPI state of one device into `dev` (errors as text)."""
    dev.link = link
    path = wgpeers.socket_path(dev.name, sock_root)
    if link is None:
        dev.error = f"{dev.name} does not exist"
        return
    if dev.kind == "kernel" and not path.exists():
        dev.error = KERNEL_UNREADABLE
        return
    from backends.wg_uapi import parse_get

    dev.socket = str(path)
    try:
        dev.since = path.stat().st_mtime
        dev.state = parse_get(wgpeers.read_uapi(path))
    except (OSError, ValueError) as exc:
        dev.error = f"{path}: {getattr(exc, 'strerror', None) or exc}"


def inspect(config: Any, own: Lease | None, leases: list[Lease], links: dict[str, LinkState],
            ext_mtu: int, *, sock_root: Path = wgpeers.SOCKET_DIR,
            env: dict[str, str] | None = None, now: float | None = None) -> WgView:
    """The WireGuard view: `links` are the devices' links by name (absent: none)."""
    from backends.wg_desired import desired_peers, device_specs
    from core.wgkey import key_file_path

    now = time.time() if now is None else now
    view = WgView(key_file=Path(key_file_path(dict(os.environ) if env is None else env)))
    read_key_file(view)
    if own is not None:
        view.lease_public = wgpeers.lease_public_key(own.attrs) or wgpeers.lease_public_key(
            own.attrs, v6=True) or ""
    wg = config.backend
    specs = device_specs(wg, config.enable_ipv4, config.enable_ipv6, ext_mtu or 1500)
    by_pub = {k: ls.key for ls in leases for k in (wgpeers.lease_public_key(ls.attrs),
                                                   wgpeers.lease_public_key(ls.attrs, v6=True))
              if k}
    for spec in specs:
        dev = WgDeviceView(spec.name, spec.listen_port, spec.mtu)
        view.devices.append(dev)
        read_device(dev, links.get(spec.name), sock_root)
        if dev.state is not None and dev.state.private_key:
            try:
                view.device_publics[dev.name] = public_of(_as_bytes(dev.state.private_key))
            except ValueError as exc:
                view.errors.append(f"{dev.name}: private key: {exc}")
        if dev.state is None or own is None or not view.lease_public:
            continue
        want = desired_peers(own, leases, wg, spec, view.lease_public)
        known = None if dev.since is None else now - dev.since
        dev.verdicts, dev.strays = wgpeers.judge_device(
            dev.name, dict(want.peers), by_pub, {str(k): str(v) for k, v in
                                                 dict(want.skipped).items()},
            dict(dev.state.peers), now=now, known_for=known)
    return view
