"""This node as the kernel has it (netlink dumps, as the backends take them) and as it should be.

`inspect_node` reads subnet.env, the device, the external interface and the
backend's tables, computes the desired state from the leases in etcd with the
backends' own pure code (`backends.desired`), and judges every peer with
`backends.peerstate`. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from backends import peerstate
from backends.desired import Desired, MainRoute, PeerContext, desired_state
from backends.engine import dump_routes
from backends.state import LinkState, RouteScope, Tables
from backends.vxlan import dump_neighbours, link_state
from core.subnetenv import SubnetEnv, SubnetEnvError, read_subnet_env
from flanneld.ctl._common import Cluster, LeaseRow, own_row
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


def _link(nl: RtNetlink, name: str | None = None, index: int = 0) -> LinkState | None:
    row = nl.get(m.RTM_GETLINK, m.link_get_body(name, index), m.parse_link, m.RTM_NEWLINK)
    return None if row is None else link_state(row)


def _owner_of(nl: RtNetlink, ip: IPv4Address) -> int:
    for index, cidr in nl.dump(m.RTM_GETADDR, m.addr_dump_body(0), m.parse_addr, m.RTM_NEWADDR):
        if cidr and cidr.split("/")[0] == str(ip):
            return index
    return 0


def inspect_node(subnet_file: Path, cluster: Cluster, netns: str | None = None) -> NodeView:
    view = NodeView()
    try:
        view.subnet_env = read_subnet_env(subnet_file)
    except (SubnetEnvError, OSError) as exc:
        view.subnet_env_error = str(exc)
    subnet = view.subnet_env.subnet.network if view.subnet_env else None
    view.own = own_row(cluster, subnet)
    config = cluster.config
    view.backend = config.backend_type if config is not None else ""
    own_lease = view.own.lease if view.own else None
    if own_lease is not None:
        view.public_ip = own_lease.attrs.public_ip
    nl = RtNetlink(netns)
    try:
        _read_kernel(nl, view, config)
    except OSError as exc:
        view.errors.append(f"reading the kernel: {exc}")
    finally:
        nl.close()
    if config is None or own_lease is None or not view.ext_index:
        return view
    ctx = PeerContext(network=config.network, own_key=own_lease.key,
                      own_public_ip=str(own_lease.attrs.public_ip), ext_index=view.ext_index,
                      ext_name=view.ext_name, main_routes=view.main,
                      vni=getattr(config.backend, "vni", 0),
                      dev_index=view.device.index if view.device else 0,
                      direct_routing=bool(getattr(config.backend, "direct_routing", False)))
    peers = [r.lease for r in cluster.leases if r.lease is not None]
    view.desired = desired_state(own_lease, peers, ctx, config.backend_type)
    view.checks = peerstate.check_peers(view.desired, view.kernel)
    view.strays = peerstate.strays(view.desired, view.kernel)
    return view


def _read_kernel(nl: RtNetlink, view: NodeView, config: Any) -> None:
    if config is None:
        return
    if config.backend_type == "vxlan":
        view.device = _link(nl, f"flannel.{config.backend.vni}")
        if view.device is not None and view.device.link:
            view.ext_index = view.device.link
            if view.device.local:
                view.public_ip = view.public_ip or IPv4Address(view.device.local)
    if not view.ext_index and view.public_ip is not None:
        view.ext_index = _owner_of(nl, view.public_ip)
    if view.ext_index:
        ext = _link(nl, index=view.ext_index)
        if ext is not None:
            view.ext_name, view.ext_mtu = ext.name, ext.mtu
    network: IPv4Network = config.network
    dev = view.device.index if view.device else 0
    view.kernel, view.main = dump_routes(nl, RouteScope(network, dev, view.ext_index))
    if dev:
        dump_neighbours(nl, dev, view.kernel)


def link_mtu(name: str, netns: str | None = None) -> int | None:
    nl = RtNetlink(netns)
    try:
        link = _link(nl, name)
        return link.mtu if link else None
    finally:
        nl.close()
