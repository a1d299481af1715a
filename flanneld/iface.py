"""Choosing the external interface and public IP, as flannel does (compat §2.2 step 7).

Order: the `--iface` list (names or IPs; the first that fits wins), else the
`--iface-regex` list (each regex against every interface's IPs first, then
names), else `--iface-can-reach` (the interface the kernel routes that address
through), else the default-route interface. If any of the first three was
given and none fits, that is an error, never a silent fall-back to the default.

`choose_interface` is pure, over `LinkInfo` records; `discover` reads them
with `ip -j` (blocking: call it from a worker thread).
"""

from __future__ import annotations

import json
import re
import subprocess
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


# -- I/O: the kernel's view through `ip -j` (no netlink library to load for a one-off read) --

def links_from_ip_json(addrs: list[dict[str, Any]],
                       default_routes: list[dict[str, Any]]) -> list[LinkInfo]:
    """LinkInfo records from `ip -j addr show` and `ip -j -4 route show default`."""
    index_of = {a["ifname"]: a["ifindex"] for a in addrs}
    best: tuple[int, int] | None = None  # (metric, ifindex) of the best default route
    for route in default_routes:
        dev = route.get("dev") or next((h.get("dev") for h in route.get("nexthops", [])), None)
        if dev in index_of:
            cand = (int(route.get("metric", 0)), index_of[dev])
            best = cand if best is None or cand[0] < best[0] else best
    links = []
    for a in addrs:
        v4 = [i for i in a.get("addr_info", []) if i.get("family") == "inet"]
        links.append(LinkInfo(
            name=a["ifname"], index=a["ifindex"], mtu=int(a.get("mtu", 1500)),
            addresses=tuple(IPv4Address(i["local"]) for i in v4),
            is_default_route=best is not None and a["ifindex"] == best[1],
            dynamic=frozenset(IPv4Address(i["local"]) for i in v4 if i.get("dynamic"))))
    return sorted(links, key=lambda lk: lk.index)


def _ip_json(*args: str) -> Any:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else []


def discover(*, iface: Sequence[str] = (), iface_regex: Sequence[str] = (),
             can_reach: IPv4Address | None = None,
             public_ip: IPv4Address | None = None) -> Choice:
    """Read this namespace's interfaces and choose (blocking: runs `ip`)."""
    links = links_from_ip_json(_ip_json("addr", "show"),
                               _ip_json("-4", "route", "show", "table", "main", "default"))
    reach = None
    if can_reach is not None:
        try:
            got = _ip_json("-4", "route", "get", str(can_reach))
        except OSError:
            got = []
        index_of = {lk.name: lk.index for lk in links}
        reach = (can_reach, next((index_of.get(r.get("dev")) for r in got), None))
    return choose_interface(links, iface=iface, iface_regex=iface_regex, can_reach=reach,
                            public_ip=public_ip)
