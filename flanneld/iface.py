"""Choosing the external interface and public IP, as flannel does (compat §2.2 step 7).

Order: the `--iface` list (names or IPs; the first that fits wins), else the
`--iface-regex` list (each regex against every interface's IPs first, then
names), else `--iface-can-reach` (the interface the kernel routes that address
through), else the default-route interface. If any of the first three was
given and none fits, that is an error, never a silent fall-back to the default.

`choose_interface` is pure, over `LinkInfo` records; `list_links` reads them
from the kernel (pyroute2, synchronous: call it from a worker thread).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

_LINK_LOCAL = IPv4Network("169.254.0.0/16")
_LOOPBACK = IPv4Network("127.0.0.0/8")


class IfaceError(RuntimeError):
    """No interface fits the flags; the message lists what was tried and why it failed."""


@dataclass(frozen=True)
class LinkInfo:
    """One interface as the chooser sees it. `addresses` are in kernel order."""

    name: str
    index: int
    addresses: tuple[IPv4Address, ...]
    mtu: int
    is_default_route: bool = False
    dynamic: frozenset[IPv4Address] = frozenset()  # addresses from DHCP (no "permanent" flag)


@dataclass(frozen=True)
class Choice:
    name: str
    index: int
    address: IPv4Address  # the tunnel's local address (on the interface)
    mtu: int
    public_ip: IPv4Address  # what peers send to: --public-ip, else `address`
    how: str  # which rule picked it, for the log


def usable_addresses(link: LinkInfo) -> list[IPv4Address]:
    """flannel's compareAddrs order: global before link-local, permanent before dynamic."""
    usable = [a for a in link.addresses if a not in _LOOPBACK]
    return sorted(usable, key=lambda a: (a in _LINK_LOCAL, a in link.dynamic))


def _by_name(links: Sequence[LinkInfo], name: str) -> LinkInfo | None:
    return next((lk for lk in links if lk.name == name), None)


def _owner(links: Sequence[LinkInfo], addr: IPv4Address) -> LinkInfo | None:
    return next((lk for lk in links if addr in lk.addresses), None)


def _with_address(link: LinkInfo, tried: list[str], what: str) -> IPv4Address | None:
    addrs = usable_addresses(link)
    if not addrs:
        tried.append(f"{what}: interface {link.name} has no usable IPv4 address")
        return None
    return addrs[0]


def choose_interface(links: Sequence[LinkInfo], *, iface: Sequence[str] = (),
                     iface_regex: Sequence[str] = (),
                     can_reach: tuple[IPv4Address, int | None] | None = None,
                     public_ip: IPv4Address | None = None) -> Choice:
    """The external interface per flannel's rules. `can_reach` is (address, oif or None)."""
    tried: list[str] = []

    def done(link: LinkInfo, address: IPv4Address, how: str) -> Choice:
        return Choice(link.name, link.index, address, link.mtu, public_ip or address, how)

    for want in iface:
        link, addr = _match_iface(links, want, tried)
        if link is not None and addr is not None:
            return done(link, addr, f"--iface {want}")
    for rx in iface_regex:
        found = _match_regex(links, rx)
        if found is None:
            tried.append(f"--iface-regex {rx}: matches no interface name or IPv4 address")
            continue
        link, addr = found
        addr = addr or _with_address(link, tried, f"--iface-regex {rx}")
        if addr is not None:
            return done(link, addr, f"--iface-regex {rx}")
    if can_reach is not None:
        target, oif = can_reach
        link = next((lk for lk in links if lk.index == oif), None) if oif else None
        if link is None:
            tried.append(f"--iface-can-reach {target}: no route to it")
        else:
            addr = _with_address(link, tried, f"--iface-can-reach {target}")
            if addr is not None:
                return done(link, addr, f"--iface-can-reach {target}")
    names = ", ".join(lk.name for lk in links) or "none"
    if iface or iface_regex or can_reach is not None:
        raise IfaceError("no interface fits the interface flags: " + "; ".join(tried)
                         + f" (interfaces here: {names})")
    if public_ip is not None:
        # flannel: --public-ip alone means the interface that owns it. We also accept
        # a public IP owned by nobody (NAT), and then use the default route below.
        link = _owner(links, public_ip)
        if link is not None:
            return done(link, public_ip, f"owner of --public-ip {public_ip}")
    link = next((lk for lk in links if lk.is_default_route), None)
    if link is None:
        raise IfaceError("no default route to pick the interface from: pass --iface "
                         f"NAME, --iface-regex or --iface-can-reach (interfaces here: {names})")
    addr = _with_address(link, tried, "default route")
    if addr is None:
        raise IfaceError("; ".join(tried) + ": pass --iface with an interface that has one")
    return done(link, addr, "default route")


def _match_iface(links: Sequence[LinkInfo], want: str,
                 tried: list[str]) -> tuple[LinkInfo | None, IPv4Address | None]:
    try:
        addr = IPv4Address(want)
    except ValueError:
        link = _by_name(links, want)
        if link is None:
            tried.append(f"--iface {want}: no such interface")
            return None, None
        return link, _with_address(link, tried, f"--iface {want}")
    owner = _owner(links, addr)
    if owner is None:
        tried.append(f"--iface {want}: no interface has this address")
    return owner, addr


def _match_regex(links: Sequence[LinkInfo],
                 rx: str) -> tuple[LinkInfo, IPv4Address | None] | None:
    pattern = re.compile(rx)
    for link in links:  # IPs of every interface first, as flannel does
        for addr in usable_addresses(link):
            if pattern.search(str(addr)):
                return link, addr
    for link in links:
        if pattern.search(link.name):
            return link, None
    return None


# -- I/O: reading the kernel's view (synchronous pyroute2; run it in a thread) ---------------

def list_links(ipr: Any) -> list[LinkInfo]:
    """Every interface with its IPv4 addresses and whether it holds the best default route."""
    addrs: dict[int, list[IPv4Address]] = {}
    dynamic: dict[int, set[IPv4Address]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET):
        addr = IPv4Address(msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL"))
        addrs.setdefault(msg["index"], []).append(addr)
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if not flags & 0x80:  # IFA_F_PERMANENT
            dynamic.setdefault(msg["index"], set()).add(addr)
    default_oif: int | None = None
    best_metric: int | None = None
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        if route["dst_len"] != 0:
            continue
        oif = route.get_attr("RTA_OIF")
        if oif is None:  # multipath: take the first hop, as flannel does
            hops = route.get_attr("RTA_MULTIPATH") or []
            oif = hops[0]["oif"] if hops else None
        metric = route.get_attr("RTA_PRIORITY") or 0
        if oif is not None and (best_metric is None or metric < best_metric):
            default_oif, best_metric = oif, metric
    links = []
    for msg in ipr.get_links():
        index = msg["index"]
        links.append(LinkInfo(name=msg.get_attr("IFLA_IFNAME"), index=index,
                              addresses=tuple(addrs.get(index, ())),
                              mtu=msg.get_attr("IFLA_MTU"),
                              is_default_route=index == default_oif,
                              dynamic=frozenset(dynamic.get(index, ()))))
    return sorted(links, key=lambda lk: lk.index)


def route_oif(ipr: Any, target: IPv4Address) -> int | None:
    """The interface index the kernel would send `target` out of, or None if unreachable."""
    try:
        routes = ipr.route("get", dst=str(target))
    except Exception:  # pyroute2's NetlinkError: ENETUNREACH and friends
        return None
    for r in routes:
        oif = r.get_attr("RTA_OIF")
        if oif is not None:
            return int(oif)
    return None


def discover(*, iface: Sequence[str] = (), iface_regex: Sequence[str] = (),
             can_reach: IPv4Address | None = None,
             public_ip: IPv4Address | None = None) -> Choice:
    """Read this namespace's interfaces and choose (blocking: netlink I/O)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = list_links(ipr)
        reach = (can_reach, route_oif(ipr, can_reach)) if can_reach is not None else None
    return choose_interface(links, iface=iface, iface_regex=iface_regex, can_reach=reach,
                            public_ip=public_ip)
