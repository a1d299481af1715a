"""vxlan over IPv6: flannel's `flannel-v6.<VNI>` device and its per-peer entries, reconciled.

A dual-stack vxlan node has a second device (flannel's v6 layout, compat §2):
`flannel-v6.<VNI>` with its own MAC, local = our PublicIPv6, dev = the external
interface, flannel's port and learning, `accept_ra` 0, and our IPv6 subnet's network
address as a /128. Per peer with an IPv6 subnet and BackendV6Data:

    ip -6 neigh replace <peer v6 subnet address> lladdr <V6 VtepMAC> dev flannel-v6.N nud permanent
    bridge fdb replace <V6 VtepMAC> dev flannel-v6.N dst <peer PublicIPv6> self permanent
    ip -6 route replace <peer v6 subnet> via <peer v6 subnet address> dev flannel-v6.N onlink

DirectRouting: a peer whose PublicIPv6 is on a directly connected prefix of the
external interface gets only `<peer v6 subnet> via <peer PublicIPv6>` (flannel's
v6 direct route, no device given), and no neighbour or FDB entry.

The desired state is pure (`desired6`); `Vxlan6Plane` dumps, diffs with `state.diff`
and applies, as the IPv4 engine does. An entry removed or altered by hand is put back
on the next full run and counted (kinds neigh6, fdb6, route6); a lost device is
re-created with its persisted MAC.

The MTU: an IPv6 outer header is 20 bytes longer than an IPv4 one, so VXLAN over IPv6
costs 70 bytes, not 50. flannel uses 50 for both (a full-size v6 pod packet with DF
then cannot cross). The v6 device gets external MTU - 70, and FLANNEL_MTU is the
smaller of the two devices' MTUs, so one pod MTU fits every path.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping
from functools import partial
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from backends import vtep_mac
from backends.base import ExternalInterface, ReconcileResult
from backends.desired import Desired
from backends.desired6 import Connected6, PeerContext6, desired6_state, vxlan6_outcome
from backends.macstore import MacStore
from backends.memo import Changes, DesiredMemo
from backends.routes6 import dump_routes6, route6_body
from backends.state import (
    LinkState,
    Plan,
    Tables,
    VxlanDeviceSpec,
    apply_plan,
    diff,
    incompatibility,
    route_matches,
    share_entries,
)
from backends.vxlan_link import link_state, no_accept_ra, random_mac
from core.config import VxlanConfig
from core.lease import Lease, LeaseError, check_vxlan_attrs, vxlan_backend_data
from netlink import messages as m
from netlink.rtnl import NetlinkError, RtNetlink, call_in_netns

log = logging.getLogger("pyflannel.backends.vxlan")
VXLAN6_OVERHEAD = 70  # outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14
_GONE = (errno.ENOENT, errno.ESRCH)
_REPLACE = m.NLM_F_CREATE | m.NLM_F_REPLACE


def vxlan6_mtu(ext_mtu: int, config_mtu: int | None) -> int:
    return (config_mtu or ext_mtu) - VXLAN6_OVERHEAD


def desired6(own: Lease, peers: Iterable[Lease], network6: IPv6Network, vni: int,
             dev_index: int, *, direct_routing: bool = False, ext_index: int = 0,
             connected: Iterable[Connected6] = ()) -> Desired:
    """Each usable IPv6 vxlan peer's neighbour, FDB entry and onlink route (DirectRouting
    and on a connected prefix of the external interface: one direct route instead)."""
    return desired6_state(own, peers, PeerContext6(
        network6, own.ipv6_subnet, own.attrs.public_ipv6, ext_index,
        connected=tuple(connected), vni=vni, dev_index=dev_index,
        direct_routing=direct_routing), "vxlan")


def _encode(dev: int, kind: str, op: Any) -> tuple[int, int, bytes]:
    if kind == "neigh6":
        return m.RTM_NEWNEIGH, _REPLACE, m.neigh6_body(dev, op[0], op[1])
    if kind == "fdb6":
        return m.RTM_NEWNEIGH, _REPLACE, m.fdb6_body(dev, op[0], op[1])
    if kind == "neigh6-":
        return m.RTM_DELNEIGH, 0, m.neigh6_body(dev, op, None)
    if kind == "fdb6-":
        return m.RTM_DELNEIGH, 0, m.fdb6_body(dev, op[0], op[1])
    body = route6_body(op[0], op[1], kind == "route6-")
    return (m.RTM_DELROUTE, 0, body) if kind == "route6-" else (m.RTM_NEWROUTE, _REPLACE, body)


class Vxlan6Plane:
    """flannel-v6.<VNI> and the IPv6 peers' entries on it."""

    def __init__(self, nl: RtNetlink, netns: str | None, vx: VxlanConfig,
                 network6: IPv6Network, ext: ExternalInterface, state_dir: Path,
                 identity: str) -> None:
        if ext.public_ipv6 is None:
            raise ValueError(f"vxlan: IPv6 is enabled but {ext.name} has no public IPv6 "
                             "address: give it one, or pass --public-ipv6")
        self.nl, self.netns, self.network6, self.vni = nl, netns, network6, vx.vni
        self.name = f"flannel-v6.{vx.vni}"
        self.mtu = vxlan6_mtu(ext.mtu, vx.mtu)
        self.spec = VxlanDeviceSpec(self.name, vx.vni, ext.public_ipv6.compressed, ext.index,
                                    vx.port, vx.learning, vx.gbp, self.mtu)
        self.macs = MacStore(Path(state_dir) / f"vtep-mac.{self.name}", identity)
        self.dev_index = 0
        self.ext_index, self.direct_routing = ext.index, vx.direct_routing
        self._connected: tuple[Connected6, ...] = ()  # the IPv6 prefixes on each interface
        self.mac: str | None = None  # the MAC in our lease's BackendV6Data
        self._applied: Tables | None = None
        self._memo: DesiredMemo[PeerContext6] = DesiredMemo(vxlan6_outcome)
        self.skipped: dict[str, str] = {}
        self.skipped_sorted: list[tuple[str, str]] = []
        self._notes_rev = 0
        self._missing: set[str] = set()  # desired routes the kernel does not hold
        self.public_ipv6 = ext.public_ipv6
        self.mac_changed = False  # set when we gave our MAC up; the backend re-publishes
        self.can_publish = False  # whether a new MAC would reach etcd (else never yield)
        self._own_rev_floor = 0
        self._clash_logged: str | None = None  # lease key -> why it has no IPv6 entries

    def forget(self) -> None:
        """After a failure: the next run starts from a dump."""
        self._applied = None
        self._memo.forget()

    def backend_v6_data(self) -> dict[str, Any]:
        link = self.ensure_device(ReconcileResult())
        self.mac = link.mac
        return vxlan_backend_data(self.vni, link.mac)

    # --- the device -----------------------------------------------------------------------

    def _get(self) -> LinkState | None:
        row = self.nl.get(m.RTM_GETLINK, m.link_get_body(self.name), m.parse_link,
                          m.RTM_NEWLINK)
        return None if row is None else link_state(row)

    def ensure_device(self, result: ReconcileResult) -> LinkState:
        link = self._get()
        if link is not None and (why := incompatibility(self.spec, link)):
            log.warning("replacing %s: it is not compatible (%s)", self.name, why)
            self.nl.check(m.RTM_DELLINK, 0, m.link_get_body(index=link.index),
                          f"delete incompatible {self.name}")
            self.mac = self.mac or link.mac
            link = None
        if link is None:
            mac = self.mac or self.macs.load() or random_mac()
            self.nl.check(m.RTM_NEWLINK, m.NLM_F_CREATE | m.NLM_F_EXCL, m.vxlan_create_body(
                self.name, vni=self.vni, local=self.spec.local, link=self.spec.link,
                port=self.spec.port, learning=self.spec.learning, gbp=self.spec.gbp,
                mtu=self.mtu, mac=mac), f"create {self.name}")
            log.info("created %s (VNI %d, local %s, MAC %s, MTU %d)", self.name, self.vni,
                     self.spec.local, mac, self.mtu)
            result.count("repaired" if self.dev_index else "added", "device")
            link = self._get()
            if link is None:
                raise NetlinkError(19, f"{self.name} vanished right after it was created")
            self._applied = None  # a new device holds none of our entries
        if self.mac and link.mac != self.mac:
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, mac=self.mac),
                          f"restore {self.name} MAC")
            result.count("repaired", "device")
        if link.mtu != self.mtu:
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, mtu=self.mtu),
                          f"set {self.name} MTU {self.mtu}")
            result.count("repaired" if self.dev_index else "added", "mtu")
        # before up: no addresses made from router adverts
        call_in_netns(self.netns, partial(no_accept_ra, self.name))
        if not link.up:
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(link.index, up=True),
                          f"set {self.name} up")
        self.macs.keep(self.mac or link.mac)
        self.dev_index = link.index
        return link

    def _ensure_address(self, own: Lease, result: ReconcileResult) -> None:
        assert own.ipv6_subnet is not None
        want = own.ipv6_subnet.network_address.packed
        have = [a for a in self.nl.dump(m.RTM_GETADDR, m.addr_dump_body(self.dev_index,
                                                                        m.AF_INET6),
                                        m.parse_addr_entry, m.RTM_NEWADDR)
                if a.ifindex == self.dev_index and a.family == m.AF_INET6]
        for a in have:
            if a.address != want and IPv6Address(a.address) in self.network6:
                self.nl.check(*m.msg_del_addr(self.dev_index, m.AF_INET6, a.address,
                                              a.prefixlen), f"remove an old address of {self.name}")
                result.count("removed", "address")
        if not any(a.address == want and a.prefixlen == 128 for a in have):
            kind, _, body = m.msg_new_addr(self.dev_index, m.AF_INET6, want, 128, nodad=True)
            self.nl.check(kind, m.NLM_F_CREATE | m.NLM_F_REPLACE, body,
                          f"add {IPv6Address(want)}/128 to {self.name}")
            result.count("added", "address")

    # --- peers ----------------------------------------------------------------------------

    def dump(self) -> Tables:
        dev, t = self.dev_index, Tables()

        def neigh(r: m.NeighRow) -> None:
            if r.ifindex == dev and r.family == m.AF_INET6 and r.state & m.NUD_PERMANENT \
                    and r.dst and r.mac:
                t.neighs[r.dst] = r.mac

        def fdb(r: m.NeighRow) -> None:
            if (r.ifindex == dev and r.state & m.NUD_PERMANENT and r.flags & m.NTF_SELF
                    and r.mac and r.dst and ":" in r.dst):
                t.fdb[r.mac] = (*t.fdb.get(r.mac, ()), r.dst)

        # row by row (dump_into): a resync never holds every dumped row at once
        self.nl.dump_into(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET6, dev), m.parse_neigh,
                          m.RTM_NEWNEIGH, neigh, t.neighs.clear)
        self.nl.dump_into(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
                          m.RTM_NEWNEIGH, fdb, t.fdb.clear)
        routes, self._connected = dump_routes6(self.nl, self.network6, (dev, self.ext_index),
                                               onlink_oif=dev)
        t.routes = routes.routes
        return t

    def reconcile(self, own: Lease, changes: Changes, peers: Mapping[str, Lease],
                  result: ReconcileResult, *, full: bool) -> int:
        """Bring the device and the peers' entries in line; the peers programmed.
        `changes`: since the last call (see DesiredMemo.apply); `peers`: all of them."""
        if full or self._applied is None:
            self.ensure_device(result)  # a new device forgets what we applied
            self._ensure_address(own, result)
            base, previous, full = self.dump(), self._applied, True
        else:
            base = previous = self._applied
        ctx = PeerContext6(self.network6, own.ipv6_subnet, own.attrs.public_ipv6,
                           self.ext_index, connected=self._connected, vni=self.vni,
                           dev_index=self.dev_index, direct_routing=self.direct_routing)
        want, keys, _ = self._memo.apply(own, changes, peers, ctx, full=full)
        # A peer with our MAC is in the desired FDB table: an O(1) look before the O(N) one.
        if self.mac is not None and self.mac in want.tables.fdb \
                and self._yield_mac(own, list(peers.values())):
            return self.reconcile(own, {}, peers, result, full=True)  # the device has a new MAC
        plan = diff(want.tables, base, keys)
        first = [("route6-", op) for op in plan.route_del] + \
            [("neigh6-", op) for op in plan.neigh_del] + [("fdb6-", op) for op in plan.fdb_del] \
            + [("neigh6", op) for op in plan.neigh_set] + [("fdb6", op) for op in plan.fdb_set]
        second = [("route6", op) for op in plan.route_set]
        done = Plan()
        for batch in (first, second):
            reqs = [_encode(self.dev_index, kind, op) for kind, op in batch]
            for (kind, op), res in zip(batch, self.nl.apply(reqs) if reqs else [], strict=True):
                if res[0] and not (kind.endswith("-") and res[0] in _GONE):
                    result.errors.append(f"{kind.rstrip('-')} {op}: {os.strerror(res[0])}"
                                         + (f" ({res[1]})" if res[1] else ""))
                    continue
                _record(done, kind, op)
                bucket = "removed" if kind.endswith("-") else (
                    "repaired" if _had(previous, kind, op) else "added")
                result.count(bucket, kind.rstrip("-"))
        applied = self._applied = apply_plan(base, done, inplace=True)
        if want.notes_rev != self._notes_rev:  # only then: an event costs O(its leases)
            self._notes_rev = want.notes_rev
            for key, why in want.skipped.items():
                if self.skipped.get(key) != why:
                    log.warning("vxlan IPv6: peer %s: %s", key, why)
            self.skipped = dict(want.skipped)
            self.skipped_sorted = sorted(self.skipped.items())
        routes = want.tables.routes
        if keys is None:
            share_entries(applied, want.tables)
            self._missing = {c for c in routes if c not in applied.routes}
        else:
            for c in keys.routes:
                if c in routes and c not in applied.routes:
                    self._missing.add(c)
                else:
                    self._missing.discard(c)
        return len(routes) - len(self._missing)


    def _yield_mac(self, own: Lease, peers: list[Lease]) -> bool:
        """A live peer publishes our IPv6 VtepMAC: the newer of the two draws a new one
        (backends.vtep_mac, as for flannel.<VNI>). True if ours changed."""
        assert self.mac is not None and self.public_ipv6 is not None
        clashing = vtep_mac.holders(self.mac, self.vni, own.key, self.public_ipv6, peers,
                                    v6=True)
        own_rev = max(own.mod_revision, self._own_rev_floor)
        winner = vtep_mac.must_yield(own_rev, self.public_ipv6, clashing, v6=True) \
            if clashing else None
        names = ", ".join(f"{p.key} (PublicIPv6 {p.attrs.public_ipv6})" for p in clashing)
        if winner is None or not self.can_publish:
            if clashing and self._clash_logged != names:
                self._clash_logged = names
                log.warning("our IPv6 VtepMAC %s is also published by %s; %s", self.mac, names,
                            "they are newer and change theirs" if winner is None else
                            "not changing it: nobody would publish the new one")
            return False
        taken = [m for p in peers if (m := _v6_mac(p)) is not None]
        new = None
        while new is None:
            new = vtep_mac.fresh_mac(random_mac(), taken)
        log.warning("VtepMAC CONFLICT: our IPv6 VtepMAC %s is also published by %s, an older "
                    "lease; ours changes to %s and %s is re-programmed", self.mac, names, new,
                    self.name)
        self.mac, self.mac_changed, self._clash_logged = new, True, None
        self._own_rev_floor = max([own_rev, *(p.mod_revision for p in peers)]) + 1
        self.macs.write(new)
        self._applied = None  # the MAC change flushes the device's neighbours
        return True


def _v6_mac(p: Lease) -> str | None:
    try:
        return check_vxlan_attrs(p.attrs, v6=True)[1]
    except LeaseError:
        return None


def _record(plan: Plan, kind: str, op: Any) -> None:
    getattr(plan, {"route6-": "route_del", "neigh6-": "neigh_del", "fdb6-": "fdb_del",
                   "neigh6": "neigh_set", "fdb6": "fdb_set", "route6": "route_set"}[kind]
            ).append(op)


def _had(previous: Tables | None, kind: str, op: Any) -> bool:
    if previous is None:
        return False
    if kind == "neigh6":
        return previous.neighs.get(op[0]) == op[1]
    if kind == "fdb6":
        return previous.fdb.get(op[0]) == (op[1],)
    return any(route_matches(op[1], h) for h in previous.routes.get(op[0], ()))
