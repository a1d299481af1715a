"""Choosing the external interface and public IP, as flannel does (compat §2.2 step 7).

Order: the `--iface` list (names or IPs; the first that fits wins), else the
`--iface-regex` list (each regex against every interface's IPs first, then
names), else `--iface-can-reach` (the interface the kernel routes that address
through), else the default-route interface. If any of the first three was
given and none fits, that is an error, never a silent fall-back to the default.

With IPv6 enabled the interface's IPv6 address comes along: the first usable one
(`usable_ipv6`: global, i.e. not link-local, loopback or multicast; never
deprecated, temporary or DAD-failed; permanent before dynamic), unless
`--public-ipv6` says otherwise or `--iface` named an IPv6 address. An interface
with none, and no `--public-ipv6`, is an error naming it. IPv6-only (IPv4
disabled) picks by IPv6 alone: the IPv6 default route, IPv6 `--iface`
addresses, and PublicIP 0.0.0.0 as flannel writes it.

`choose_interface` is pure, over `LinkInfo` records; `discover` reads them
with `ip -j` and the IPv6 address flags (IFA_FLAGS) from a netlink dump
(blocking: call it from a worker thread).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any

from netlink.base import iter_attrs
from netlink.uapi import (
    AF_INET6,
    IFA_ADDRESS,
    IFA_FLAGS,
    IFA_LOCAL,
    IFADDRMSG,
    RTM_GETADDR,
    RTM_NEWADDR,
)

_LINK_LOCAL = IPv4Network("169.254.0.0/16")
_LOOPBACK = IPv4Network("127.0.0.0/8")
UNSPECIFIED4 = IPv4Address(0)
# <linux/if_addr.h>; IFA_F_TEMPORARY is IFA_F_SECONDARY's value for IPv6
IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_PERMANENT = 0x01, 0x08, 0x20, 0x80


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
    addresses6: tuple[Addr6, ...] = ()  # kernel order
    is_default_route6: bool = False


@dataclass(frozen=True)
class Addr6:
    """One IPv6 address of an interface, with its IFA_FLAGS."""

    address: IPv6Address
    flags: int = IFA_F_PERMANENT

    @property
    def usable(self) -> bool:
        a = self.address
        return not (a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified
                    or self.flags & (IFA_F_TEMPORARY | IFA_F_DEPRECATED | IFA_F_DADFAILED))


@dataclass(frozen=True)
class Choice:
    name: str
    index: int
    address: IPv4Address  # the tunnel's local address (on the interface)
    mtu: int
    public_ip: IPv4Address  # what peers send to: --public-ip, else `address`
    how: str  # which rule picked it, for the log
    address6: IPv6Address | None = None  # IPv6 enabled: the interface's IPv6 address
    public_ipv6: IPv6Address | None = None  # IPv6 enabled: --public-ipv6, else `address6`


def usable_addresses(link: LinkInfo) -> list[IPv4Address]:
    """flannel's compareAddrs order: global before link-local, permanent before dynamic."""
    usable = [a for a in link.addresses if a not in _LOOPBACK]
    return sorted(usable, key=lambda a: (a in _LINK_LOCAL, a in link.dynamic))


def usable_ipv6(link: LinkInfo) -> list[IPv6Address]:
    """Global IPv6 addresses, never deprecated, temporary or DAD-failed; permanent first."""
    usable = [a for a in link.addresses6 if a.usable]
    return [a.address for a in sorted(usable, key=lambda a: not a.flags & IFA_F_PERMANENT)]


def _by_name(links: Sequence[LinkInfo], name: str) -> LinkInfo | None:
    return next((lk for lk in links if lk.name == name), None)


def _owner(links: Sequence[LinkInfo], addr: IPv4Address | IPv6Address) -> LinkInfo | None:
    if isinstance(addr, IPv6Address):
        return next((lk for lk in links if addr in (a.address for a in lk.addresses6)), None)
    return next((lk for lk in links if addr in lk.addresses), None)


def _with_address(link: LinkInfo, tried: list[str], what: str,
                  ipv4: bool = True) -> IPv4Address | None:
    if not ipv4:  # IPv6-only: any IPv4 address is unused; flannel writes PublicIP 0.0.0.0
        return UNSPECIFIED4
    addrs = usable_addresses(link)
    if not addrs:
        tried.append(f"{what}: interface {link.name} has no usable IPv4 address")
        return None
    return addrs[0]


def choose_interface(links: Sequence[LinkInfo], *, iface: Sequence[str] = (),
                     iface_regex: Sequence[str] = (),
                     can_reach: tuple[IPv4Address, int | None] | None = None,
                     public_ip: IPv4Address | None = None,
                     public_ipv6: IPv6Address | None = None,
                     ipv4: bool = True, ipv6: bool = False) -> Choice:
    """The external interface per flannel's rules. `can_reach` is (address, oif or None).
    `ipv4`/`ipv6`: the families the network config enables."""
    tried: list[str] = []
    pinned6: dict[str, IPv6Address] = {}  # an --iface IPv6 address names the address too

    def done(link: LinkInfo, address: IPv4Address, how: str) -> Choice:
        choice = Choice(link.name, link.index, address, link.mtu, public_ip or address, how)
        if not ipv6:
            return choice
        found = usable_ipv6(link)
        addr6 = pinned6.get(link.name) or (found[0] if found else None)
        if addr6 is None and public_ipv6 is None:
            having = ", ".join(str(a.address) for a in link.addresses6) or "none"
            raise IfaceError(
                f"interface {link.name} (chosen by {how}) has no usable IPv6 address and "
                f"EnableIPv6 is true: a global address that is not deprecated or temporary "
                f"is needed (it has: {having}); add one, choose another interface with "
                "--iface, or give --public-ipv6")
        return dataclasses.replace(choice, address6=addr6, public_ipv6=public_ipv6 or addr6)

    for want in iface:
        link, addr = _match_iface(links, want, tried, ipv4, pinned6)
        if link is not None and addr is not None:
            return done(link, addr, f"--iface {want}")
    for rx in iface_regex:
        found = _match_regex(links, rx)
        if found is None:
            tried.append(f"--iface-regex {rx}: matches no interface name or IPv4 address")
            continue
        link, hit = found
        addr = hit if isinstance(hit, IPv4Address) else None
        if isinstance(hit, IPv6Address):
            pinned6[link.name] = hit
        addr = addr or _with_address(link, tried, f"--iface-regex {rx}", ipv4)
        if addr is not None:
            return done(link, addr, f"--iface-regex {rx}")
    if can_reach is not None:
        target, oif = can_reach
        link = next((lk for lk in links if lk.index == oif), None) if oif else None
        if link is None:
            tried.append(f"--iface-can-reach {target}: no route to it")
        else:
            addr = _with_address(link, tried, f"--iface-can-reach {target}", ipv4)
            if addr is not None:
                return done(link, addr, f"--iface-can-reach {target}")
    names = ", ".join(lk.name for lk in links) or "none"
    if iface or iface_regex or can_reach is not None:
        raise IfaceError("no interface fits the interface flags: " + "; ".join(tried)
                         + f" (interfaces here: {names})")
    if public_ip is not None and ipv4:
        # flannel: --public-ip alone means the interface that owns it. We also accept
        # a public IP owned by nobody (NAT), and then use the default route below.
        link = _owner(links, public_ip)
        if link is not None:
            return done(link, public_ip, f"owner of --public-ip {public_ip}")
    if public_ipv6 is not None and not ipv4:
        link = _owner(links, public_ipv6)
        if link is not None:
            pinned6[link.name] = public_ipv6
            return done(link, UNSPECIFIED4, f"owner of --public-ipv6 {public_ipv6}")
    family = "IPv4" if ipv4 else "IPv6"
    link = next((lk for lk in links if (lk.is_default_route if ipv4 else lk.is_default_route6)),
                None)
    if link is None:
        raise IfaceError(f"no {'' if ipv4 else 'IPv6 '}default route to pick the interface "
                         "from: pass --iface "
                         f"NAME, --iface-regex or --iface-can-reach (interfaces here: {names})")
    addr = _with_address(link, tried, f"{family} default route", ipv4)
    if addr is None:
        raise IfaceError("; ".join(tried) + ": pass --iface with an interface that has one")
    return done(link, addr, "default route")


def _match_iface(links: Sequence[LinkInfo], want: str, tried: list[str], ipv4: bool,
                 pinned6: dict[str, IPv6Address]) -> tuple[LinkInfo | None, IPv4Address | None]:
    try:
        addr = ip_address(want)
    except ValueError:
        link = _by_name(links, want)
        if link is None:
            tried.append(f"--iface {want}: no such interface")
            return None, None
        return link, _with_address(link, tried, f"--iface {want}", ipv4)
    owner = _owner(links, addr)
    if owner is None:
        tried.append(f"--iface {want}: no interface has this address")
        return None, None
    if isinstance(addr, IPv6Address):  # the interface's IPv4 address, and this IPv6 one
        pinned6[owner.name] = addr
        return owner, _with_address(owner, tried, f"--iface {want}", ipv4)
    return owner, addr


def _match_regex(links: Sequence[LinkInfo],
                 rx: str) -> tuple[LinkInfo, IPv4Address | IPv6Address | None] | None:
    pattern = re.compile(rx)
    for link in links:  # IPs of every interface first, as flannel does
        cands: list[IPv4Address | IPv6Address] = [*usable_addresses(link), *usable_ipv6(link)]
        for addr in cands:
            if pattern.search(str(addr)):
                return link, addr
    for link in links:
        if pattern.search(link.name):
            return link, None
    return None


# -- I/O: the kernel's view through `ip -j`; IPv6 address flags through netlink --

def links_from_ip_json(addrs: list[dict[str, Any]],
                       default_routes: list[dict[str, Any]]) -> list[LinkInfo]:
    """LinkInfo records from `ip -j addr show` and `ip -j -4 route show default`."""
    default = default_route_index(default_routes, {a["ifname"]: a["ifindex"] for a in addrs})
    links = []
    for a in addrs:
        v4 = [i for i in a.get("addr_info", []) if i.get("family") == "inet"]
        links.append(LinkInfo(
            name=a["ifname"], index=a["ifindex"], mtu=int(a.get("mtu", 1500)),
            addresses=tuple(IPv4Address(i["local"]) for i in v4),
            is_default_route=a["ifindex"] == default,
            dynamic=frozenset(IPv4Address(i["local"]) for i in v4 if i.get("dynamic"))))
    return sorted(links, key=lambda lk: lk.index)


def default_route_index(default_routes: list[dict[str, Any]],
                        index_of: dict[str, int]) -> int | None:
    """The interface of the best (lowest metric) default route in `ip -j route` output."""
    best: tuple[int, int] | None = None
    for route in default_routes:
        dev = route.get("dev") or next((h.get("dev") for h in route.get("nexthops", [])), None)
        if dev in index_of:
            cand = (int(route.get("metric", 0)), index_of[dev])
            best = cand if best is None or cand[0] < best[0] else best
    return best[1] if best else None


def parse_addr6(buf: Any, off: int, end: int) -> tuple[int, Addr6] | None:
    """(ifindex, Addr6) of an RTM_NEWADDR, with the 32-bit IFA_FLAGS when present
    (the header's 8-bit flags lack IFA_F_PERMANENT's neighbours above 0x80); None: not IPv6."""
    family, _, flags8, _, index = IFADDRMSG.unpack_from(buf, off)
    if family != AF_INET6:
        return None
    addr = b""
    flags = flags8
    for kind, a, b in iter_attrs(buf, off + IFADDRMSG.size, end):
        if kind in (IFA_LOCAL, IFA_ADDRESS) and b - a == 16 and (kind == IFA_LOCAL or not addr):
            addr = bytes(buf[a:b])
        elif kind == IFA_FLAGS and b - a >= 4:
            flags = int.from_bytes(buf[a:a + 4], "little")
    return (index, Addr6(IPv6Address(addr), flags)) if addr else None


def read_ipv6_addresses(netns: str | None = None) -> dict[int, tuple[Addr6, ...]]:
    """Every interface's IPv6 addresses with their flags, from one netlink dump."""
    from netlink.addr import addr_dump_body
    from netlink.rtnl import RtNetlink

    nl = RtNetlink(netns)
    try:
        rows = nl.dump(RTM_GETADDR, addr_dump_body(0, AF_INET6), parse_addr6, RTM_NEWADDR)
    finally:
        nl.close()
    found: dict[int, list[Addr6]] = {}
    for row in rows:
        if row is not None:
            found.setdefault(row[0], []).append(row[1])
    return {index: tuple(addrs) for index, addrs in found.items()}


def _ip_json(*args: str) -> Any:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else []


def discover(*, iface: Sequence[str] = (), iface_regex: Sequence[str] = (),
             can_reach: IPv4Address | None = None,
             public_ip: IPv4Address | None = None, public_ipv6: IPv6Address | None = None,
             ipv4: bool = True, ipv6: bool = False) -> Choice:
    """Read this namespace's interfaces and choose (blocking: runs `ip`, and with IPv6
    enabled a netlink address dump for the IPv6 address flags)."""
    links = links_from_ip_json(_ip_json("addr", "show"),
                               _ip_json("-4", "route", "show", "table", "main", "default"))
    if ipv6:
        six = read_ipv6_addresses()
        default6 = default_route_index(
            _ip_json("-6", "route", "show", "table", "main", "default"),
            {lk.name: lk.index for lk in links})
        links = [dataclasses.replace(lk, addresses6=six.get(lk.index, ()),
                                     is_default_route6=lk.index == default6) for lk in links]
    reach = None
    if can_reach is not None:
        try:
            got = _ip_json("-4", "route", "get", str(can_reach))
        except OSError:
            got = []
        index_of = {lk.name: lk.index for lk in links}
        reach = (can_reach, next((index_of.get(r.get("dev")) for r in got), None))
    return choose_interface(links, iface=iface, iface_regex=iface_regex, can_reach=reach,
                            public_ip=public_ip, public_ipv6=public_ipv6, ipv4=ipv4, ipv6=ipv6)
