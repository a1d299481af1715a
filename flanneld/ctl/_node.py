"""This node as the kernel has it (netlink dumps, as the backends take them) and as it should be.

`inspect_node` reads subnet.env, the device, the external interface and the
backend's tables, computes the desired state from the leases in etcd with the
backends' own pure code (`backends.desired`), and judges every peer with
`backends.peerstate`; for the wireguard backend, its devices' peers instead
(`_nodewg`, `wgpeers`). Nothing is written. With IPv6 enabled it does the same for
the IPv6 side (`_node6`: flannel-v6.<VNI> or host-gw's IPv6 routes); an IPv6-only
node (EnableIPv4 false) has only that side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from backends import peerstate
from backends.desired import Desired, MainRoute, PeerContext, desired_state
from backends.engine import dump_routes
from backends.state import LinkState, RouteScope, Tables
from backends.vxlan import dump_neighbours, link_state
from core.subnetenv import SubnetEnv, SubnetEnvError, read_subnet_env
from flanneld.ctl import _nodewg
from flanneld.ctl._common import Cluster, LeaseRow, own_row
from flanneld.ctl._node6 import View6, device6_name, judge6, read_kernel6
from netlink import messages as m
from netlink.rtnl import RtNetlink


@dataclass
class NodeView:
    subnet_env: SubnetEnv | None = None
    subnet_env_error: str = ""
    own: LeaseRow | None = None
    backend: str = ""
    device: LinkState | None = None
    ext_name: str = ""
    ext_index: int = 0
    ext_mtu: int = 0
    public_ip: IPv4Address | None = None
    kernel: Tables = field(default_factory=Tables)
    main: tuple[MainRoute, ...] = ()
    desired: Desired | None = None
    checks: dict[str, peerstate.PeerCheck] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    v6: View6 | None = None  # None: the network config does not enable IPv6
    wg: Any = None  # the wireguard backend: _nodewg.WgView (its peers are `checks` too)
    config_ipv4: bool | None = None  # the config's EnableIPv4; None: no config

    @property
    def ipv4(self) -> bool:
        """Does this network run IPv4 (False: IPv6-only, EnableIPv4 false)?"""
        env = self.subnet_env
        if self.config_ipv4 is not None:
            return self.config_ipv4
        return env is None or env.ipv4_subnet is not None


def _link(nl: RtNetlink, name: str | None = None, index: int = 0) -> LinkState | None:
    row = nl.get(m.RTM_GETLINK, m.link_get_body(name, index), m.parse_link, m.RTM_NEWLINK)
    return None if row is None else link_state(row)


def _owner_of(nl: RtNetlink, ip: IPv4Address | IPv6Address) -> int:
    family = m.AF_INET6 if ip.version == 6 else m.AF_INET
    for a in nl.dump(m.RTM_GETADDR, m.addr_dump_body(0, family), m.parse_addr_entry,
                     m.RTM_NEWADDR):
        if a.family == family and a.address == ip.packed:
            return int(a.ifindex)
    return 0


def inspect_node(subnet_file: Path, cluster: Cluster, netns: str | None = None) -> NodeView:
    view = NodeView()
    try:
        view.subnet_env = read_subnet_env(subnet_file)
    except (SubnetEnvError, OSError) as exc:
        view.subnet_env_error = str(exc)
    env = view.subnet_env
    subnet = env.ipv4_subnet.network if env and env.ipv4_subnet else None
    subnet6 = env.ipv6_subnet.network if env and env.ipv6_subnet else None
    view.own = own_row(cluster, subnet, subnet6=subnet6)
    config = cluster.config
    view.backend = config.backend_type if config is not None else ""
    own_lease = view.own.lease if view.own else None
    if config is not None:
        view.config_ipv4 = config.ipv4_network is not None
        if config.enable_ipv6:
            view.v6 = View6(network=config.ipv6_network, subnet=subnet6,
                            device_name=device6_name(getattr(config.backend, "vni", 0))
                            if view.backend == "vxlan" else "")
    if own_lease is not None:
        if own_lease.ipv4_subnet is not None:
            view.public_ip = own_lease.attrs.public_ip
        if view.v6 is not None:
            view.v6.public_ipv6 = own_lease.attrs.public_ipv6
    nl = RtNetlink(netns)
    try:
        _read_kernel(nl, view, config)
        if view.v6 is not None:
            read_kernel6(nl, view.v6, view.backend, view.ext_index)
    except OSError as exc:
        view.errors.append(f"reading the kernel: {exc}")
    finally:
        nl.close()
    if config is not None and view.backend == "wireguard":
        _inspect_wg(view, config, own_lease,
                    [r.lease for r in cluster.leases if r.lease is not None], netns)
        return view  # (its peers are WireGuard peers, not routes to judge)
    if config is None or own_lease is None or not view.ext_index:
        return view
    peers = [r.lease for r in cluster.leases if r.lease is not None]
    vni = getattr(config.backend, "vni", 0)
    if config.ipv4_network is not None and own_lease.ipv4_subnet is not None:
        ctx = PeerContext(network=config.ipv4_network, own_key=own_lease.key,
                          own_public_ip=str(own_lease.attrs.public_ip),
                          ext_index=view.ext_index, ext_name=view.ext_name,
                          main_routes=view.main, vni=vni,
                          dev_index=view.device.index if view.device else 0,
                          direct_routing=bool(getattr(config.backend, "direct_routing", False)))
        with4 = [p for p in peers if p.ipv4_subnet is not None]  # IPv6-only: none for v4
        view.desired = desired_state(own_lease, with4, ctx, config.backend_type)
        view.checks = peerstate.check_peers(view.desired, view.kernel)
        view.strays = peerstate.strays(view.desired, view.kernel)
    if view.v6 is not None:
        judge6(own_lease, peers, view.v6, view.backend, vni, view.ext_index, view.ext_name)
    return view


def _inspect_wg(view: NodeView, config: Any, own: Any, peers: list[Any],
                netns: str | None) -> None:
    """The wireguard backend's devices and peers (flanneld/ctl/_nodewg.py) into `view`."""
    from backends.wg_desired import DEVICE_V6, device_specs

    names = [s.name for s in device_specs(config.backend, config.enable_ipv4,
                                          config.enable_ipv6, view.ext_mtu or 1500)]
    nl = RtNetlink(netns)
    try:
        links = {n: lk for n in names if (lk := _link(nl, n)) is not None}
    finally:
        nl.close()
    view.wg = _nodewg.inspect(config, own, peers, links, view.ext_mtu)
    view.strays = view.wg.strays()
    # by lease key, per family: separate mode's flannel-wg-v6 judges the IPv6 side
    for dev in view.wg.devices:
        target = view.v6.checks if dev.name == DEVICE_V6 and view.v6 is not None else \
            view.checks
        target.update({k: v.check() for k, v in dev.verdicts.items()})
    view.errors += view.wg.errors


def _read_kernel(nl: RtNetlink, view: NodeView, config: Any) -> None:
    if config is None:
        return
    if config.backend_type == "vxlan":
        view.device = _link(nl, f"flannel.{config.backend.vni}")
        if view.device is not None and view.device.link:
            view.ext_index = view.device.link
            if view.device.local and ":" not in view.device.local:
                view.public_ip = view.public_ip or IPv4Address(view.device.local)
        if not view.ext_index and view.v6 is not None:  # IPv6-only: the v6 device's link
            dev6 = _link(nl, view.v6.device_name)
            view.ext_index = (dev6.link or 0) if dev6 is not None else 0
    if not view.ext_index and view.public_ip is not None:
        view.ext_index = _owner_of(nl, view.public_ip)
    if not view.ext_index and view.v6 is not None and view.v6.public_ipv6 is not None:
        view.ext_index = _owner_of(nl, view.v6.public_ipv6)
    if view.ext_index:
        ext = _link(nl, index=view.ext_index)
        if ext is not None:
            view.ext_name, view.ext_mtu = ext.name, ext.mtu
    if config.ipv4_network is None:
        return  # IPv6-only: no IPv4 routes to read
    dev = view.device.index if view.device else 0
    view.kernel, view.main = dump_routes(nl, RouteScope(config.ipv4_network, dev,
                                                        view.ext_index))
    if dev:
        dump_neighbours(nl, dev, view.kernel)


def link_mtu(name: str, netns: str | None = None) -> int | None:
    nl = RtNetlink(netns)
    try:
        link = _link(nl, name)
        return link.mtu if link else None
    finally:
        nl.close()
