"""The IPv6 main table as both IPv6 planes (and flannelctl) see it: one dump, one encoder.

Our routes are the ones inside the IPv6Network, through a gateway, out of one of the
interfaces a plane owns (host-gw: the external one; vxlan: flannel-v6.<VNI>, and the
external one for DirectRouting). Routes without a gateway are the connected prefixes
that on-link decisions need. Text forms are `backends.state.fmt6`'s, the same as the
desired state's, so a dump and a desired table compare as plain strings.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import IPv6Network

from backends.desired6 import Connected6
from backends.state import RTPROT_BOOT, RouteSpec, Tables, fmt6
from netlink import messages as m
from netlink.rtnl import RtNetlink

_ZERO16 = bytes(16)


def in_network6(network6: IPv6Network, dst: bytes, dst_len: int) -> bool:
    """`IPv6Network((dst, dst_len)).subnet_of(network6)`, on ints: it runs per route."""
    return (dst_len >= network6.prefixlen and int.from_bytes(dst, "big")
            & int(network6.netmask) == int(network6.network_address))


def dump_routes6(nl: RtNetlink, network6: IPv6Network, oifs: Collection[int],
                 onlink_oif: int = 0) -> tuple[Tables, tuple[Connected6, ...]]:
    """Our IPv6 routes (those out of `onlink_oif` marked onlink) and the connected prefixes."""
    tables, connected = Tables(), []

    def take(e: m.RouteEntry) -> None:
        if e.table != m.RT_TABLE_MAIN or e.rtype != m.RTN_UNICAST:
            return
        dst = e.dst or _ZERO16
        if not e.gateway:
            if e.oif:
                connected.append(Connected6(IPv6Network((dst, e.dst_len)), e.oif))
            return
        if e.oif in oifs and in_network6(network6, dst, e.dst_len):
            cidr = f"{fmt6(dst)}/{e.dst_len}"
            spec = RouteSpec(fmt6(e.gateway), e.oif, onlink=e.oif == onlink_oif)
            tables.routes[cidr] = (*tables.routes.get(cidr, ()), spec)

    def restart() -> None:
        tables.routes.clear()
        connected.clear()

    nl.dump_into(m.RTM_GETROUTE, m.route_dump_body(m.RT_TABLE_MAIN, m.AF_INET6),
                 m.parse_route_entry, m.RTM_NEWROUTE, take, restart)
    return tables, tuple(connected)


def route6_body(cidr: str, spec: RouteSpec, delete: bool) -> bytes:
    """A replace (proto boot, as flannel writes) or a delete of the route `cidr` `spec`."""
    dst, _, plen = cidr.partition("/")  # our own canonical text: no need to parse it
    return m.route6_body(dst, int(plen), spec.gateway, spec.oif,
                         onlink=spec.onlink, proto=spec.proto if delete else RTPROT_BOOT,
                         delete=delete)
