"""The vxlan devices' link-level helpers, shared by flannel.<VNI> and flannel-v6.<VNI>."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from backends.state import LinkState
from netlink import messages as m


def random_mac() -> str:
    """A random locally administered unicast MAC, as flannel's pkg/mac does."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return b.hex(":")


def link_state(row: m.LinkRow) -> LinkState:
    info = row.info

    def u(attr: int, fmt: str) -> int | None:
        raw = info.get(attr)
        return struct.unpack(fmt, raw)[0] if raw is not None and len(raw) >= struct.calcsize(
            fmt) else None

    local = info.get(m.VX_LOCAL)
    learning = u(m.VX_LEARNING, "=B")
    return LinkState(
        index=row.ifindex, name=row.name, kind=row.kind, mtu=row.mtu, mac=row.mac,
        up=bool(row.flags & m.IFF_UP), vni=u(m.VX_ID, "=I"),
        local=_local(local, info.get(m.VX_LOCAL6)),
        link=u(m.VX_LINK, "=I"), port=u(m.VX_PORT, ">H"),
        learning=None if learning is None else bool(learning), gbp=m.VX_GBP in info)


def _local(v4: bytes | None, v6: bytes | None) -> str | None:
    if v4 and len(v4) == 4:
        return socket.inet_ntoa(v4)
    if v6 and len(v6) == 16:
        return socket.inet_ntop(socket.AF_INET6, v6)
    return None


def no_accept_ra(name: str) -> None:
    """`accept_ra` 0 on a device, as flannel sets it (no addresses made from adverts)."""
    path = Path(f"/proc/sys/net/ipv6/conf/{name}/accept_ra")
    if path.exists() and path.read_text().strip() != "0":
        path.write_text("0")
