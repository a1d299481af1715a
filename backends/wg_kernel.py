"""Kernel WireGuard over generic netlink, through pyroute2, speaking UAPI text outward.

A cold path (device set-up, resyncs, peer changes), so pyroute2's WireGuard family
serves it instead of a codec of our own: `get` renders the kernel's device dump as a
UAPI `get` reply; `set` reads a UAPI `set` request and sends it as genetlink calls,
one per peer (pyroute2 takes one peer a call). Kernels without CONFIG_WIREGUARD, as
on the machine this was written on, never reach this module.
"""

from __future__ import annotations

import base64
import errno as errnos
from collections.abc import Iterator
from typing import Any

from backends.wg_base import DeviceInfo, WgDeviceError
from netlink.netns import call_in_netns


def _b64(hexed: str) -> str:
    return base64.b64encode(bytes.fromhex(hexed)).decode("ascii")


def _hex(value: Any) -> str:
    raw = value if isinstance(value, bytes) and len(value) == 32 else base64.b64decode(value)
    return raw.hex()


def set_calls(request: str) -> Iterator[dict[str, Any]]:
    """The pyroute2 `WireGuard.set` keyword sets a UAPI `set=1` request stands for."""
    device: dict[str, Any] = {}
    peer: dict[str, Any] | None = None
    peers: list[dict[str, Any]] = []
    for line in request.split("\n"):
        k, _, v = line.partition("=")
        if not line or k == "set":
            continue
        if k == "public_key":
            peer = {"public_key": _b64(v)}
            peers.append(peer)
        elif peer is None:
            if k == "private_key":
                device["private_key"] = _b64(v)
            elif k == "listen_port":
                device["listen_port"] = int(v)
            elif k == "fwmark":
                device["fwmark"] = int(v)
        elif k == "remove":
            peer["remove"] = v == "true"
        elif k == "update_only":
            peer["update_only"] = v == "true"
        elif k == "replace_allowed_ips":
            peer["replace_allowed_ips"] = v == "true"
        elif k == "allowed_ip":
            peer.setdefault("allowed_ips", []).append(v)
        elif k == "endpoint":
            host, _, port = v.rpartition(":")
            peer["endpoint_addr"], peer["endpoint_port"] = host.strip("[]"), int(port)
        elif k == "preshared_key":
            peer["preshared_key"] = _b64(v)
        elif k == "persistent_keepalive_interval":
            peer["persistent_keepalive"] = int(v)
    if device or not peers:
        yield device
    for p in peers:
        yield {"peer": p}


def render_dump(msgs: list[Any]) -> str:
    """pyroute2's device dump (one or more messages: large peer lists are split) as a
    UAPI `get` reply."""
    lines: list[str] = []
    last = ""
    for i, msg in enumerate(msgs):
        if i == 0:
            priv = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
            if priv:
                lines.append(f"private_key={_hex(priv)}")
            lines.append(f"listen_port={msg.get_attr('WGDEVICE_A_LISTEN_PORT') or 0}")
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
            key = _hex(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            if key == last:  # the kernel goes on with a peer whose allowed IPs did not fit
                # in the last message, as its key and the rest of them (wg(8) coalesces)
                lines += [f"allowed_ip={a['addr']}"
                          for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or () if a.get("addr")]
                continue
            last = key
            lines.append(f"public_key={key}")
            psk = peer.get_attr("WGPEER_A_PRESHARED_KEY")
            if psk:
                lines.append(f"preshared_key={_hex(psk)}")
            ep = peer.get_attr("WGPEER_A_ENDPOINT")
            if ep and ep.get("addr"):
                addr = ep["addr"]
                lines.append(f"endpoint={f'[{addr}]' if ':' in addr else addr}:{ep['port']}")
            hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            lines.append(f"last_handshake_time_sec={hs.get('tv_sec', 0)}")
            lines.append(f"last_handshake_time_nsec={hs.get('tv_nsec', 0)}")
            lines.append(f"rx_bytes={peer.get_attr('WGPEER_A_RX_BYTES') or 0}")
            lines.append(f"tx_bytes={peer.get_attr('WGPEER_A_TX_BYTES') or 0}")
            ka = peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0
            lines.append(f"persistent_keepalive_interval={ka}")
            for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                if a.get("addr"):
                    lines.append(f"allowed_ip={a['addr']}")
    return "\n".join([*lines, "errno=0"]) + "\n\n"


class KernelDevice:
    def __init__(self, info: DeviceInfo, netns: str | None) -> None:
        from pyroute2 import WireGuard

        self.info, self.netns = info, netns
        self._wg = call_in_netns(netns, WireGuard)

    def get(self) -> str:
        try:
            return render_dump(list(self._wg.info(self.info.name)))
        except Exception as exc:  # pyroute2's NetlinkError and decode errors alike
            raise WgDeviceError(getattr(exc, "code", errnos.EIO),
                                f"{self.info.name}: kernel WireGuard get: {exc}") from None

    def set(self, request: str) -> None:
        for kwargs in set_calls(request):
            try:
                self._wg.set(self.info.name, **kwargs)
            except Exception as exc:
                raise WgDeviceError(getattr(exc, "code", errnos.EIO),
                                    f"{self.info.name}: kernel WireGuard set: {exc}") from None

    def close(self) -> None:
        self._wg.close()
