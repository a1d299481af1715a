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

The file is bound to this node (backends.vtep_mac): a copy made on another
node (a cloned image) is not reused. And when a live peer lease carries our
VtepMAC all the same, the newer of the two nodes draws a new MAC, re-programs
its device and hands the new lease value to `on_lease_attrs` (the daemon
publishes it); the older one keeps its MAC, so the cluster converges.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from backends import vtep_mac
from backends.base import ExternalInterface, ReconcileResult
from backends.desired import (
    Outcome,
    PeerContext,
    PeerEntries,
    packed,
    unpacked,
    vxlan_outcome,
)
from backends.engine import Engine
from backends.macstore import MacStore
from backends.state import (
    LinkState,
    Tables,
    VxlanDeviceSpec,
    address_changes,
    incompatibility,
    vxlan_mtu,
)
from backends.vxlan6 import Vxlan6Plane
from backends.vxlan_link import link_state, no_accept_ra, random_mac
from core.config import VxlanConfig
from core.lease import Lease, LeaseAttrs, vxlan_backend_data
from netlink import messages as m
from netlink.rtnl import NetlinkError, RtNetlink, call_in_netns

if TYPE_CHECKING:
    from core.config import NetworkConfig

log = logging.getLogger("pyflannel.backends.vxlan")
MACHINE_ID = Path("/etc/machine-id")


def this_node(public_ip: str) -> str:
    """This node's identity for the persisted MAC (backends.vtep_mac.node_identity)."""
    try:
        machine_id: str | None = MACHINE_ID.read_text()
    except OSError:
        machine_id = None
    return vtep_mac.node_identity(machine_id, public_ip, socket.gethostname())


def dump_neighbours(nl: RtNetlink, dev: int, tables: Tables, like: Tables | None = None
                    ) -> list[tuple[str, None]]:
    """Fill `tables` with the device's permanent neighbours and `self` FDB entries; return
    the FDB entries to delete outright (with port/VNI overrides we never write). Values
    equal to those of `like` (the last desired state) are its objects (see dump_routes)."""
    known = like if like is not None else Tables()

    def neigh(r: m.NeighRow) -> None:
        if (r.ifindex == dev and r.family == m.AF_INET and r.state & m.NUD_PERMANENT
                and r.dst and r.mac):
            want = known.neighs.get(r.dst)
            tables.neighs[r.dst] = want if want == r.mac else r.mac

    nl.dump_into(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET, dev), m.parse_neigh,
                 m.RTM_NEWNEIGH, neigh, tables.neighs.clear)
    odd: dict[str, None] = {}

    def fdb(r: m.NeighRow) -> None:
        if (r.ifindex != dev or r.family != m.AF_BRIDGE or not r.state & m.NUD_PERMANENT
                or not r.flags & m.NTF_SELF or not r.mac):
            return  # learned entries (Learning on) are the kernel's, not ours
        if r.extra or r.dst is None:
            odd[r.mac] = None  # port/VNI overrides we never write: rewrite the whole entry
        else:
            have = tables.fdb.get(r.mac, ())
            want = known.fdb.get(r.mac)
            tables.fdb[r.mac] = want if not have and want is not None and want == (r.dst,) \
                else (*have, r.dst)

    def restart() -> None:
        tables.fdb.clear()
        odd.clear()

    nl.dump_into(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
                 m.RTM_NEWNEIGH, fdb, restart)
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
        super().__init__(config.ipv4_network if config.enable_ipv4 else None, ext, netns)
        self.config = vx
        self.name = f"flannel.{vx.vni}"
        self.mtu = vxlan_mtu(ext.mtu, vx.mtu)
        self.spec = VxlanDeviceSpec(self.name, vx.vni, str(ext.public), ext.index, vx.port,
                                    vx.learning, vx.gbp, self.mtu)
        # IPv6-only: PublicIP is 0.0.0.0 on every node, so it cannot tell nodes apart
        self.identity = this_node(str(ext.public if self.ipv4 or ext.public_ipv6 is None
                                      else ext.public_ipv6))
        self.macs = MacStore(Path(state_dir) / f"vtep-mac.{self.name}", self.identity)
        self._published_mac: str | None = None
        self.mac_conflicts = 0  # times we gave our VtepMAC up to a peer
        self._own_rev_floor = 0  # our lease is at least this new once we re-published it
        self._clash_logged: str | None = None
        self._device_done = False  # a full run finished the device once: later fixes are repairs
        self.v6: Vxlan6Plane | None = None  # dual stack: flannel-v6.<VNI>
        if config.enable_ipv6 and config.ipv6_network is not None:
            self.v6 = Vxlan6Plane(self.nl, netns, vx, config.ipv6_network, ext, state_dir,
                                  self.identity)
            # FLANNEL_MTU: one pod MTU for both paths
            self.mtu = min(self.mtu, self.v6.mtu) if self.ipv4 else self.v6.mtu
        elif not self.ipv4:
            raise ValueError("vxlan: neither IPv4 nor IPv6 is enabled")
        self._v6_data: dict[str, object] | None = None

    # --- the Backend API ------------------------------------------------------------------

    def lease_attrs(self) -> LeaseAttrs:
        with self._lock:
            if self.ipv4:  # IPv6-only: no flannel.<VNI> and no BackendData, as in flannel
                self._published_mac = self._ensure_device(ReconcileResult()).mac
            if self.v6 is not None:
                self._v6_data = self.v6.backend_v6_data()
            return self._attrs(self._published_mac)

    def _attrs(self, mac: str | None) -> LeaseAttrs:
        v6 = self.v6 is not None and self._v6_data is not None
        return LeaseAttrs(public_ip=self.ext.public, backend_type="vxlan",
                          backend_data=vxlan_backend_data(self.config.vni, mac)
                          if mac is not None else None,
                          public_ipv6=self.ext.public_ipv6 if v6 else None,
                          backend_v6_data=self._v6_data if v6 else None)

    @property
    def mac(self) -> str | None:
        return self._published_mac

    # --- engine hooks ---------------------------------------------------------------------

    def _reconcile(self, own: Lease, changes: dict[str, Lease | None], *,
                   full: bool) -> ReconcileResult:
        result = self._reconcile4(own, changes, full=full)
        if self.v6 is not None and own.ipv6_subnet is not None:
            self.v6.can_publish = self.on_lease_attrs is not None
            try:
                programmed = self.v6.reconcile(own, changes, self._peers.leases, result,
                                               full=result.full)
            except (NetlinkError, OSError) as exc:
                self.v6.forget()
                log.warning("vxlan IPv6 reconcile failed: %s", exc)
                result.errors.append(f"device {self.v6.name}: {exc}")
            else:
                if self.v6.mac_changed and self.on_lease_attrs is not None:
                    self.v6.mac_changed = False
                    self.mac_conflicts += 1
                    self._v6_data = vxlan_backend_data(self.config.vni, self.v6.mac or "")
                    self.on_lease_attrs(self._attrs(self._published_mac))
                if not self.ipv4:  # the IPv6 plane is the whole data plane
                    result.programmed_peers = programmed
                    result.skipped = self.v6.skipped_sorted
        return result

    def _reconcile4(self, own: Lease, changes: dict[str, Lease | None], *,
                    full: bool) -> ReconcileResult:
        result = super()._reconcile(own, changes, full=full)
        # A peer with our MAC is in the desired FDB table: an O(1) look before the O(N) one,
        # which keeps a lease event's cost flat in the number of peers.
        d, mac = self._desired, self._published_mac
        if d is None or mac is None or mac.lower() not in d.tables.fdb:
            self._clash_logged = None
            return result
        if not self._check_mac_clash(own, list(self._peers.leases.values())):
            return result
        again = super()._reconcile(own, {}, full=True)  # the device has a new MAC
        for bucket in ("added", "removed", "repaired"):
            for kind, n in getattr(result, bucket).items():
                again.count(bucket, kind, n)
        return again

    def _forget(self) -> None:
        super()._forget()
        if self.v6 is not None:
            self.v6.forget()

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
            call_in_netns(self.netns, partial(no_accept_ra, self.name))
        except (NetlinkError, OSError) as exc:
            result.errors.append(f"device {self.name}: {exc}")
            return False
        self._device_done = True
        return True

    def _dump_neighbours(self, tables: Tables, like: Tables | None = None
                         ) -> list[tuple[str, None]]:
        return dump_neighbours(self.nl, self.dev_index, tables, like)

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
            mac = keep_mac or self.macs.load() or random_mac()
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
        self.macs.keep(self._published_mac or link.mac)
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
        # The outcomes' entries are the leases' last good ones: a lease gone bad keeps them.
        self._memo.outcomes = {key: _reindexed(out, old, new)
                               for key, out in self._memo.outcomes.items()}

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

    # --- a peer holds our VtepMAC -------------------------------------------------------

    def _check_mac_clash(self, own: Lease, peers: list[Lease]) -> bool:
        """True if we gave our VtepMAC up (the device has a new one; reconcile in full)."""
        mac = self._published_mac
        if mac is None:
            return False
        clashing = vtep_mac.holders(mac, self.config.vni, own.key, self.ext.public, peers)
        if not clashing:
            self._clash_logged = None
            return False
        own_rev = max(own.mod_revision, self._own_rev_floor)
        winner = vtep_mac.must_yield(own_rev, self.ext.public, clashing)
        names = ", ".join(f"{p.key} (PublicIP {p.attrs.public_ip})" for p in clashing)
        if winner is None or self.on_lease_attrs is None:
            if self._clash_logged != names:
                self._clash_logged = names
                log.warning("our VtepMAC %s is also published by %s; %s", mac, names,
                            "they are newer and change theirs" if winner is None else
                            "not changing it: nobody would publish the new one")
            return False
        new = None
        while new is None:
            new = vtep_mac.fresh_mac(random_mac(), (p.attrs.vtep_mac or "" for p in peers))
        log.warning("VtepMAC CONFLICT: our VtepMAC %s is also published by %s (a node cloned "
                    "with its state directory?); that lease is older, so ours changes to %s: "
                    "re-programming %s and re-publishing our lease %s", mac, names, new,
                    self.name, own.key)
        self._published_mac = new
        self.mac_conflicts += 1
        self._own_rev_floor = max([own_rev, *(p.mod_revision for p in peers)]) + 1
        self._clash_logged = None
        if self.dev_index:
            try:
                self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(self.dev_index, mac=new),
                              f"set {self.name} MAC {new}")
            except (NetlinkError, OSError) as exc:  # the full run's _ensure_device retries
                log.warning("setting %s MAC %s: %s", self.name, new, exc)
        self.macs.write(new)
        # The MAC change flushes the device's neighbours: what we applied is gone.
        self._applied = self._desired = None
        self.on_lease_attrs(self._attrs(new))
        return True


def _reindexed(kept: Outcome | PeerEntries, old: int, new: int) -> Outcome | PeerEntries:
    out = unpacked(kept)
    e = out.entries
    if e is None or e.route[1].oif != old:
        return kept
    return packed(out._replace(entries=e._replace(route=(e.route[0],
                                                          e.route[1]._replace(oif=new)))))
