"""Shared plain data for flannelctl's IPv6 unit tests: a dual-stack node, its peers, its kernel."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from backends.state import LinkState, RouteSpec, Tables
from core.config import NetworkConfig, parse_network_config
from core.lease import Lease, LeaseAttrs, vxlan_backend_data
from core.subnetenv import SubnetEnv
from flanneld.ctl._common import Cluster, LeaseRow
from flanneld.ctl._node import NodeView
from flanneld.ctl._node6 import View6, judge6

NET6 = IPv6Network("fc00:9::/48")
OWN4, OWN6 = IPv4Network("10.9.34.0/24"), IPv6Network("fc00:9:0:5::/64")
PEER4, PEER6 = IPv4Network("10.9.52.0/24"), IPv6Network("fc00:9:0:7::/64")
ONLY6 = IPv6Network("fc00:9:0:9::/64")
MAC4, MAC6, PEER_MAC6 = "0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:06"
DEV6, EXT = 11, 2


def config(backend: str = "vxlan", **extra: Any) -> NetworkConfig:
    doc = {"Network": "10.9.0.0/16", "EnableIPv6": True, "IPv6Network": str(NET6),
           "Backend": {"Type": backend}, **extra}
    return parse_network_config(json.dumps(doc))


def lease(v4: IPv4Network | None, v6: IPv6Network | None, ip: str, ip6: str | None,
          backend: str = "vxlan", mac: str = "0e:00:00:00:00:05", mac6: str | None = None,
          lease_id: int = 7) -> Lease:
    vx = backend == "vxlan"
    attrs = LeaseAttrs(IPv4Address(ip), backend,
                       vxlan_backend_data(1, mac) if vx and v4 else None,
                       IPv6Address(ip6) if ip6 else None,
                       vxlan_backend_data(1, mac6) if vx and mac6 else None)
    return Lease(v4, attrs, ipv6_subnet=v6, lease_id=lease_id)


def own_lease(backend: str = "vxlan") -> Lease:
    return lease(OWN4, OWN6, "192.168.100.1", "fd7c::1", backend, mac=MAC4,
                 mac6=MAC6 if backend == "vxlan" else None)


def peer_lease(backend: str = "vxlan") -> Lease:
    return lease(PEER4, PEER6, "192.168.100.2", "fd7c::2", backend,
                 mac6=PEER_MAC6 if backend == "vxlan" else None)


def only6_lease() -> Lease:
    return lease(None, ONLY6, "0.0.0.0", "fd7c::3", mac6="0e:00:00:00:00:09")


def cluster(leases: list[Lease], backend: str = "vxlan") -> Cluster:
    rows = [LeaseRow(x.key, x, lease_id=x.lease_id, ttl=30) for x in leases]
    return Cluster("/p/network", config(backend), leases=rows)


def device6(**kw: Any) -> LinkState:
    base: dict[str, Any] = {"index": DEV6, "name": "flannel-v6.1", "kind": "vxlan",
                            "mtu": 1430, "mac": MAC6, "up": True, "vni": 1,
                            "local": "fd7c::1", "link": EXT}
    return LinkState(**{**base, **kw})


def vxlan6_kernel(peer6: IPv6Network = PEER6, mac: str = PEER_MAC6,
                  remote: str = "fd7c::2") -> Tables:
    gw = peer6.network_address.compressed
    return Tables(neighs={gw: mac}, fdb={mac: (remote,)},
                  routes={str(peer6): (RouteSpec(gw, DEV6, onlink=True),)})


def node(peers: list[Lease], backend: str = "vxlan", kernel: Tables | None = None,
         **v6: Any) -> tuple[Cluster, NodeView]:
    """A dual-stack node (own lease first) with its IPv6 side judged against `kernel`."""
    own = own_lease(backend)
    cl = cluster([own, *peers], backend)
    view = NodeView(subnet_env=SubnetEnv.for_lease(IPv4Network("10.9.0.0/16"), OWN4, 1430,
                                                   False, NET6, OWN6),
                    own=cl.leases[0], backend=backend, ext_name="eth0", ext_index=EXT,
                    ext_mtu=1500, public_ip=own.attrs.public_ip, config_ipv4=True)
    fields: dict[str, Any] = {"network": NET6, "subnet": OWN6, "public_ipv6": IPv6Address(
        "fd7c::1"), "kernel": kernel if kernel is not None else Tables()}
    if backend == "vxlan":
        fields.update(device_name="flannel-v6.1", device=device6(),
                      addresses=("fc00:9:0:5::/128", "fe80::1/64"), accept_ra="0")
    view.v6 = View6(**{**fields, **v6})
    judge6(own, [x.lease for x in cl.leases if x.lease], view.v6, backend, 1, EXT, "eth0")
    return cl, view
