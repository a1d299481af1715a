"""The vxlan backend: flannel's `flannel.<VNI>` device and per-peer neighbour/FDB/route.

Kernel state is exactly flannel's (flannel-compat.md §3, vector D). What differs
is how it gets there: one reconciler for start, events, periodic resync and
repair, so a deleted route, neighbour, FDB entry, MTU change or the whole
device is put back with every peer on the next full run.

The device is adopted when compatible (VNI, local, link, port, learning, gbp),
keeping its MAC, and replaced (logged) otherwise; it is never flushed. Its MAC
is persisted in `<state_dir>/vtep-mac.flannel.<VNI>` so that a device lost
with a reboot comes back with the MAC the peers already know.

MAC precedence: a MAC we already published (lease_attrs returned it) is
restored if someone changes the device's; before that, an existing device's
MAC wins over the persisted file, because that is the MAC in our lease in
etcd (peers point at it); the file is then rewritten to match.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from backends.base import ExternalInterface, ReconcileResult
from backends.desired import Outcome, PeerContext, vxlan_outcome
from backends.engine import Engine
from backends.state import (
    LinkState,
    Tables,
    VxlanDeviceSpec,
    address_changes,
    incompatibility,
    vxlan_mtu,
)
from core.config import VxlanConfig
from core.lease import Lease, LeaseAttrs, vxlan_backend_data
from netlink import messages as m
from netlink.rtnl import NetlinkError, RtNetlink, call_in_netns

if TYPE_CHECKING:
    from core.config import NetworkConfig

log = logging.getLogger("pyflannel.backends.vxlan")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


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
        local=socket.inet_ntoa(local) if local and len(local) == 4 else None,
        link=u(m.VX_LINK, "=I"), port=u(m.VX_PORT, ">H"),
        learning=None if learning is None else bool(learning), gbp=m.VX_GBP in info)


def dump_neighbours(nl: RtNetlink, dev: int, tables: Tables) -> list[tuple[str, None]]:
    """Fill `tables` with the device's permanent neighbours and `self` FDB entries; return
    the FDB entries to delete outright (with port/VNI overrides we never write)."""
    for r in nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET, dev), m.parse_neigh,
                     m.RTM_NEWNEIGH):
        if (r.ifindex == dev and r.family == m.AF_INET and r.state & m.NUD_PERMANENT
                and r.dst and r.mac):
            tables.neighs[r.dst] = r.mac
    odd: dict[str, None] = {}
    for r in nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
                     m.RTM_NEWNEIGH):
        if (r.ifindex != dev or r.family != m.AF_BRIDGE or not r.state & m.NUD_PERMANENT
                or not r.flags & m.NTF_SELF or not r.mac):
            continue  # learned entries (Learning on) are the kernel's, not ours
        if r.extra or r.dst is None:
            odd[r.mac] = None  # port/VNI overrides we never write: rewrite the whole entry
        else:
            tables.fdb[r.mac] = (*tables.fdb.get(r.mac, ()), r.dst)
    for mac in odd:
        tables.fdb.pop(mac, None)
    return [(mac, None) for mac in odd]


class VxlanBackend(Engine):
    backend_type = "vxlan"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, state_dir: Path,
                 netns: str | None = None) -> None:
        vx = config.backend
        if not isinstance(vx, VxlanConfig):
            raise ValueError(f"vxlan backend: config.backend is {type(vx).__name__}, "
                             "not VxlanConfig")
        super().__init__(config.network, ext, netns)
        self.config = vx
        self.name = f"flannel.{vx.vni}"
        self.mtu = vxlan_mtu(ext.mtu, vx.mtu)
        self.spec = VxlanDeviceSpec(self.name, vx.vni, str(ext.public), ext.index, vx.port,
                                    vx.learning, vx.gbp, self.mtu)
        self.mac_file = Path(state_dir) / f"vtep-mac.{self.name}"
        self._published_mac: str | None = None
        self._device_done = False  # a full run finished the device once: later fixes are repairs

    # --- the Backend API ------------------------------------------------------------------

    def lease_attrs(self) -> LeaseAttrs:
        with self._lock:
            link = self._ensure_device(ReconcileResult())
            self._published_mac = link.mac
            return LeaseAttrs(public_ip=self.ext.public, backend_type="vxlan",
                              backend_data=vxlan_backend_data(self.config.vni, link.mac))

    @property
    def mac(self) -> str | None:
        return self._published_mac

    # --- engine hooks ---------------------------------------------------------------------

    def _outcome(self, lease: Lease, ctx: PeerContext) -> Outcome:
        return vxlan_outcome(lease, ctx)

    def _context(self, own: Lease) -> PeerContext:
        base = super()._context(own)
        return dataclasses.replace(base, vni=self.config.vni, dev_index=self.dev_index,
                                   direct_routing=self.config.direct_routing)

    def _prepare(self, own: Lease, result: ReconcileResult) -> bool:
        try:
            link = self._ensure_device(result)
            self._ensure_addresses(own, link, result)
            if not link.up:
                self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, up=True),
                              f"set {self.name} up")
                if not result.added.get("device") and not result.repaired.get("device"):
                    self._count(result, "device")
            call_in_netns(self.netns, self._no_accept_ra)
        except (NetlinkError, OSError) as exc:
            result.errors.append(f"device {self.name}: {exc}")
            return False
        self._device_done = True
        return True

    def _dump_neighbours(self, tables: Tables) -> list[tuple[str, None]]:
        return dump_neighbours(self.nl, self.dev_index, tables)

    # --- the device ---------------------------------------------------------------------

    def _count(self, result: ReconcileResult, kind: str) -> None:
        result.count("repaired" if self._device_done else "added", kind)

    def _get_link(self) -> LinkState | None:
        row = self.nl.get(m.RTM_GETLINK, m.link_get_body(self.name), m.parse_link, m.RTM_NEWLINK)
        return None if row is None else link_state(row)

    def _ensure_device(self, result: ReconcileResult) -> LinkState:
        link = self._get_link()
        keep_mac = self._published_mac
        if link is not None:
            why = incompatibility(self.spec, link)
            if why:
                log.warning("replacing %s: it is not compatible (%s)", self.name, why)
                keep_mac = keep_mac or link.mac
                self.nl.check(m.RTM_DELLINK, 0, m.link_get_body(index=link.index),
                              f"delete incompatible {self.name}")
                link = None
        if link is None:
            mac = keep_mac or self._persisted_mac() or random_mac()
            self.nl.check(m.RTM_NEWLINK, m.NLM_F_CREATE | m.NLM_F_EXCL, m.vxlan_create_body(
                self.name, vni=self.spec.vni, local=self.spec.local, link=self.spec.link,
                port=self.spec.port, learning=self.spec.learning, gbp=self.spec.gbp,
                mtu=self.spec.mtu, mac=mac), f"create {self.name}")
            log.info("created %s (VNI %d, local %s, dev %s, MAC %s)", self.name, self.spec.vni,
                     self.spec.local, self.ext.name, mac)
            self._count(result, "device")
            link = self._get_link()
            if link is None:
                raise NetlinkError(19, f"{self.name} vanished right after it was created")
        if self._published_mac and link.mac != self._published_mac:
            log.warning("%s MAC changed to %s; restoring %s (the one in our lease)", self.name,
                        link.mac, self._published_mac)
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, mac=self._published_mac),
                          f"restore {self.name} MAC")
            result.count("repaired", "device")  # always: this MAC is in our lease
        if link.mtu != self.spec.mtu:
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, mtu=self.spec.mtu),
                          f"set {self.name} MTU {self.spec.mtu}")
            self._count(result, "mtu")
        mac = self._published_mac or link.mac
        if self._persisted_mac() != mac:
            self._persist_mac(mac)
        if self.dev_index and self.dev_index != link.index:
            self._reindex(self.dev_index, link.index)
        self.dev_index = link.index
        return link

    def _reindex(self, old: int, new: int) -> None:
        """The device was recreated: our cached routes pointed at its old index."""
        if self._applied is not None:
            self._applied.routes = {
                cidr: tuple(r._replace(oif=new) if r.oif == old else r for r in routes)
                for cidr, routes in self._applied.routes.items()}
        self._last_good = {
            key: e._replace(route=(e.route[0], e.route[1]._replace(oif=new)))
            if e.route[1].oif == old else e for key, e in self._last_good.items()}

    def _ensure_addresses(self, own: Lease, link: LinkState, result: ReconcileResult) -> None:
        rows = self.nl.dump(m.RTM_GETADDR, m.addr_dump_body(link.index), m.parse_addr,
                            m.RTM_NEWADDR)
        have = [cidr for index, cidr in rows if index == link.index and cidr]
        want = f"{own.subnet.network_address}/32"
        add, delete = address_changes(want, have, self.network)
        for cidr in delete:
            ip, plen = cidr.split("/")
            self.nl.check(m.RTM_DELADDR, 0, m.addr_body(link.index, ip, int(plen)),
                          f"remove {cidr} from {self.name}")
            result.count("removed", "address")
        for cidr in add:
            self.nl.check(m.RTM_NEWADDR, m.NLM_F_CREATE | m.NLM_F_REPLACE,
                          m.addr_body(link.index, cidr.split("/")[0], 32),
                          f"add {cidr} to {self.name}")
            if self._device_done and own.key == self._own_key:
                result.count("repaired", "address")
            else:
                result.count("added", "address")

    def _no_accept_ra(self) -> None:
        path = Path(f"/proc/sys/net/ipv6/conf/{self.name}/accept_ra")
        if path.exists() and path.read_text().strip() != "0":
            path.write_text("0")

    # --- the persisted MAC --------------------------------------------------------------

    def _persisted_mac(self) -> str | None:
        try:
            text = self.mac_file.read_text().strip().lower()
        except FileNotFoundError:
            return None
        if not _MAC.fullmatch(text) or int(text[:2], 16) & 1:
            log.warning("ignoring %s: %r is not a unicast MAC", self.mac_file, text)
            return None
        return text

    def _persist_mac(self, mac: str) -> None:
        self.mac_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.mac_file.with_name(self.mac_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(mac + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.mac_file)
