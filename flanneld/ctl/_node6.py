"""This node's IPv6 side, as the kernel has it and as the leases say it should be.

A dual-stack (or IPv6-only) node has, beside its IPv4 state, one more set of
entries per peer: vxlan's on `flannel-v6.<VNI>` (a permanent neighbour, an FDB
entry to the peer's PublicIPv6 and an onlink route), host-gw's in the main table
(`<peer v6 subnet> via <peer PublicIPv6> dev <ext>`). The desired entries come
from the backends' own pure code (`backends.vxlan6.desired6`,
`backends.plane6.desired6`) and every peer is judged with `backends.peerstate`,
as the IPv4 side is. `read_kernel6` is the I/O; `judge6` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from backends import peerstate, vxlan6
from backends import plane6 as hostgw6
from backends.desired import Desired, PeerEntries
from backends.routes6 import dump_routes6
from backends.state import LinkState, Tables
from backends.vxlan_link import link_state
from core.lease import Lease
from netlink import messages as m
from netlink.rtnl import RtNetlink


def device6_name(vni: int) -> str:
    return f"flannel-v6.{vni}"


@dataclass
class View6:
    """What a dual-stack node holds for IPv6 (read), and each peer's verdict (judged)."""

    network: IPv6Network | None = None  # the config's IPv6Network
    subnet: IPv6Network | None = None  # subnet.env's FLANNEL_IPV6_SUBNET, as a network
    public_ipv6: IPv6Address | None = None  # our lease's PublicIPv6
    device_name: str = ""  # vxlan: flannel-v6.<VNI>; host-gw has no device
    device: LinkState | None = None
    addresses: tuple[str, ...] = ()  # the device's IPv6 addresses, "addr/len"
    accept_ra: str | None = None
    kernel: Tables = field(default_factory=Tables)
    connected: tuple[hostgw6.Connected6, ...] = ()  # host-gw: on-link IPv6 prefixes
    entries: dict[str, PeerEntries] = field(default_factory=dict)  # lease key -> desired
    checks: dict[str, peerstate.PeerCheck] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def programmed(self) -> int:
        return sum(1 for k in self.entries
                   if k in self.checks and self.checks[k].state == peerstate.PROGRAMMED)

    @property
    def expected(self) -> int:
        """Peers that should have IPv6 entries here (skipped and unreachable ones do not)."""
        return len(self.entries)


# --- reading the kernel (I/O) ----------------------------------------------------------------


def read_kernel6(nl: RtNetlink, v6: View6, backend: str, ext_index: int) -> None:
    """Fill `v6` with the IPv6 device (vxlan) and the IPv6 entries in flanneld's scope."""
    if v6.network is None:
        return
    if backend == "vxlan":
        row = nl.get(m.RTM_GETLINK, m.link_get_body(v6.device_name), m.parse_link,
                     m.RTM_NEWLINK)
        v6.device = None if row is None else link_state(row)
        if v6.device is None:
            return
        dev = v6.device.index
        v6.addresses = tuple(f"{IPv6Address(a.address).compressed}/{a.prefixlen}"
                             for a in nl.dump(m.RTM_GETADDR, m.addr_dump_body(dev, m.AF_INET6),
                                              m.parse_addr_entry, m.RTM_NEWADDR)
                             if a.ifindex == dev and a.family == m.AF_INET6)
        v6.accept_ra = _sysctl(f"net/ipv6/conf/{v6.device_name}/accept_ra")
        v6.kernel = _dump_vxlan6(nl, dev, v6.network)
    elif backend == "host-gw":
        v6.kernel, v6.connected = _dump_routes6(nl, v6.network, ext_index)


def _sysctl(path: str) -> str | None:
    try:
        return Path("/proc/sys", path).read_text().strip()
    except OSError:
        return None


def _dump_vxlan6(nl: RtNetlink, dev: int, network6: IPv6Network) -> Tables:
    """flannel-v6.N's permanent neighbours, `self` FDB entries to IPv6 remotes and the
    onlink routes through it into the IPv6Network: the scope Vxlan6Plane reconciles."""
    t = Tables()
    for r in nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET6, dev), m.parse_neigh,
                     m.RTM_NEWNEIGH):
        if r.ifindex == dev and r.family == m.AF_INET6 and r.state & m.NUD_PERMANENT \
                and r.dst and r.mac:
            t.neighs[r.dst] = r.mac
    for r in nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
                     m.RTM_NEWNEIGH):
        if (r.ifindex == dev and r.state & m.NUD_PERMANENT and r.flags & m.NTF_SELF
                and r.mac and r.dst and ":" in r.dst):
            t.fdb[r.mac] = (*t.fdb.get(r.mac, ()), r.dst)
    t.routes = dump_routes6(nl, network6, (dev,), onlink_oif=dev)[0].routes
    return t


def _dump_routes6(nl: RtNetlink, network6: IPv6Network, ext_index: int
                  ) -> tuple[Tables, tuple[hostgw6.Connected6, ...]]:
    """host-gw's IPv6 routes (the scope Route6Plane reconciles) and the on-link prefixes."""
    return dump_routes6(nl, network6, (ext_index,))


# --- judging (pure) --------------------------------------------------------------------------


def desired_entries6(own: Lease, peers: list[Lease], v6: View6, backend: str, vni: int,
                     ext_index: int, ext_name: str) -> Desired:
    """Per peer, the IPv6 entries the backend programs (or why it does not); pure."""
    assert v6.network is not None
    if backend == "vxlan":
        dev = v6.device.index if v6.device else 0
        return vxlan6.desired6(own, peers, v6.network, vni, dev)
    if backend == "host-gw":
        return hostgw6.desired6(own, peers, v6.network, ext_index, ext_name, v6.connected)
    return Desired(Tables(), {})


def judge6(own: Lease, peers: list[Lease], v6: View6, backend: str, vni: int, ext_index: int,
           ext_name: str) -> None:
    """Fill `v6.entries`, `.checks` and `.strays` from the leases against `v6.kernel`; pure."""
    if v6.network is None or own.ipv6_subnet is None:
        return
    desired = desired_entries6(own, peers, v6, backend, vni, ext_index, ext_name)
    v6.entries = dict(desired.peers)
    v6.checks = peerstate.check_peers(desired, v6.kernel)
    v6.strays = peerstate.strays(desired, v6.kernel)
