"""The sections of a topology, each parsed and validated on its own (pure).

`netns_lab.topology.parse` calls one parser per section (network, segments,
routers, hosts, etcd) with a `Collector` that gathers every problem, then checks
the whole. Every problem names the field, the bad value and what to do.
"""

from __future__ import annotations

import difflib
import ipaddress
import shlex
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from netns_lab.model import (
    DEFAULT_NETWORK,
    DEFAULT_SEGMENT6,
    DEFAULT_SEGMENT_BASE,
    HOST_KEYS,
    MANAGED_FLAGS,
    MAX_DEFAULT_SEGMENT_PREFIX,
    MAX_PODS,
    NAME_RE,
    EtcdMemberSpec,
    Host,
    Router,
    Segment,
    World,
    ci_get,
)

MAX_SEGMENT6_PREFIX = 120  # the lab plans addresses ::1 .. ::9999 (hex digits that read decimal)


class Collector:
    """Every problem found, so that a file's problems are reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")


def unknown_keys(c: Collector, where: str, data: dict[str, Any],
                 allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            c.add(f"{where}.{key}" if where else str(key), f"unknown key; {hint}")


def _name_ok(c: Collector, where: str, name: Any) -> bool:
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        return True
    c.add(where, f"name {name!r} is not valid; use 1-12 lowercase letters and digits, "
                 "starting with a letter (no '-': it separates host and pod names)")
    return False


def as_mapping(c: Collector, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.add(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value


def _entries(c: Collector, section: str, raw: dict[str, Any],
             allowed: tuple[str, ...]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(name, field path, spec mapping) of each well-named entry of a section."""
    for name, spec in raw.items():
        where = f"{section}.{name}"
        if not _name_ok(c, where, name):
            continue
        spec = as_mapping(c, where, spec)
        unknown_keys(c, where, spec, allowed)
        yield name, where, spec


def parse_network(c: Collector, value: Any) -> dict[str, Any]:
    net = as_mapping(c, "network", value)
    if not net:
        c.add("network", "empty; give the flannel network config, e.g. "
                         "{Network: 10.244.0.0/16, Backend: {Type: vxlan}}")
        return dict(DEFAULT_NETWORK)
    v4, v4_ok = _family_flag(c, net, "EnableIPv4", True)
    v6, v6_ok = _family_flag(c, net, "EnableIPv6", False)
    if not v4 and not v6:
        c.add("network.EnableIPv4", "EnableIPv4 and EnableIPv6 are both false; enable at "
                                    "least one family (EnableIPv4 defaults to true)")
    cidr = ci_get(net, "Network")
    if (v4 and v4_ok) or cidr is not None:
        try:
            ipaddress.IPv4Network(str(cidr), strict=False)
            if cidr is None:
                raise ValueError
        except ValueError:
            hint = " (or EnableIPv4: false for an IPv6-only network)" if cidr is None and v6 else ""
            c.add("network.Network", f"{cidr!r} is not an IPv4 CIDR; use e.g. 10.244.0.0/16{hint}")
    cidr6 = ci_get(net, "IPv6Network")
    if v6 or cidr6 is not None:
        try:
            ipaddress.IPv6Network(str(cidr6), strict=False)
            if cidr6 is None:
                raise ValueError
        except ValueError:
            c.add("network.IPv6Network", f"{cidr6!r} is not an IPv6 CIDR; with EnableIPv6: "
                                         "true give one, e.g. fc00:10::/48")
        if not v6 and v6_ok:
            c.add("network.IPv6Network", "set but EnableIPv6 is not true, so flannel ignores "
                                         "it; add EnableIPv6: true (or remove IPv6Network)")
    backend = ci_get(net, "Backend")
    if backend is None:
        c.add("network.Backend", "missing; flannel would silently fall back to udp. "
                                 "Set e.g. Backend: {Type: vxlan}")
    elif not isinstance(backend, dict) or not isinstance(ci_get(backend, "Type"), str):
        c.add("network.Backend", f"{backend!r}: expected a mapping with a Type "
                                 "(vxlan, host-gw, ...)")
    return net


def _family_flag(c: Collector, net: dict[str, Any], key: str,
                 default: bool) -> tuple[bool, bool]:
    """(the flag, whether it was valid); an invalid one counts as its default."""
    flag = ci_get(net, key)
    if flag is None:
        return default, True
    if not isinstance(flag, bool):
        c.add(f"network.{key}", f"{flag!r}: use true or false")
        return default, False
    return flag, True


def parse_segments(c: Collector, value: Any, v4: bool = True, v6: bool = False) -> list[Segment]:
    """The segments. With none declared: `lan`, with the families the network runs (`v4`,
    `v6`). A declared segment without `subnet` gets one, unless it has a `subnet6` (an
    IPv6-only segment)."""
    if value is None:
        return [Segment("lan", DEFAULT_SEGMENT_BASE if v4 or not v6 else None,
                        subnet6=DEFAULT_SEGMENT6 if v6 else None)]
    raw = as_mapping(c, "segments", value)
    if not raw:
        c.add("segments", "no segments; declare at least one, e.g. lan: {subnet: 192.168.100.0/24}")
    out: list[Segment] = []
    keys = ("subnet", "subnet6", "mtu")
    for i, (name, where, spec) in enumerate(_entries(c, "segments", raw, keys)):
        subnet: IPv4Network | None = _auto_segment_subnet(i)
        if "subnet" in spec:
            try:
                subnet = IPv4Network(str(spec["subnet"]))
                if subnet.prefixlen > 29:
                    c.add(f"{where}.subnet", f"{subnet} is too small; use /29 or larger")
            except ValueError as exc:
                c.add(f"{where}.subnet", f"{spec['subnet']!r} is not an IPv4 network ({exc}); "
                                         f"{_subnet_hint(spec['subnet'])}")
        elif "subnet6" in spec:
            subnet = None  # an IPv6-only segment
        subnet6 = _subnet6(c, f"{where}.subnet6", spec["subnet6"]) if "subnet6" in spec else None
        mtu = spec.get("mtu", 1500)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 1280 <= mtu <= 9000:
            c.add(f"{where}.mtu", f"{mtu!r} is not an MTU; use an integer 1280..9000")
            mtu = 1500
        out.append(Segment(name, subnet, mtu, subnet6))
    return out


def _subnet6(c: Collector, where: str, value: Any) -> IPv6Network | None:
    try:
        net = IPv6Network(str(value))
    except ValueError as exc:
        try:
            hint = f"did you mean {IPv6Network(str(value), strict=False)}?"
        except ValueError:
            hint = "use e.g. fd10:1::/64"
        c.add(where, f"{value!r} is not an IPv6 network ({exc}); {hint}")
        return None
    if net.prefixlen > MAX_SEGMENT6_PREFIX:
        c.add(where, f"{net} is too small; use /{MAX_SEGMENT6_PREFIX} or larger (a /64 is usual)")
        return None
    if net.is_link_local or net.is_multicast or net.is_loopback or net.prefixlen == 0:
        c.add(where, f"{net} is not a prefix hosts can be numbered from (flanneld wants a "
                     "global address); use a unique local one, e.g. fd10:1::/64")
        return None
    return net


def _subnet_hint(value: Any) -> str:
    try:
        return f"did you mean {IPv4Network(str(value), strict=False)}?"
    except ValueError:
        return "use e.g. 192.168.10.0/24"


def sized_default_segment(c: Collector, segment: Segment, members: int) -> Segment:
    """The default segment (no `segments:` declared) grown to hold `members` addresses:
    192.168.100.0/24 while they fit (254), then /23, up to /22 (1022); beyond that a
    problem saying to declare segments."""
    if segment.subnet is None:
        return segment  # IPv6-only: ::1 .. ::9999 is room enough
    net = segment.subnet
    while net.num_addresses - 2 < members and net.prefixlen > MAX_DEFAULT_SEGMENT_PREFIX:
        net = net.supernet()
    if net.num_addresses - 2 < members:
        c.add("hosts", f"{members} addresses are needed on the default segment "
                       f"{segment.name}, more than {net} holds ({net.num_addresses - 2}); "
                       "declare segments: a larger subnet (e.g. lan: {subnet: 10.100.0.0/16}) "
                       "or several segments joined by routers")
        return segment
    return Segment(segment.name, net, segment.mtu, segment.subnet6)


def _auto_segment_subnet(index: int) -> IPv4Network:
    return IPv4Network((int(DEFAULT_SEGMENT_BASE.network_address) + 256 * index, 24))


def parse_routers(c: Collector, value: Any, segs: list[str]) -> list[Router]:
    out: list[Router] = []
    for name, spec in as_mapping(c, "routers", value).items():
        where = f"routers.{name}"
        if not _name_ok(c, where, name):
            continue
        legs = spec
        if isinstance(spec, dict):
            unknown_keys(c, where, spec, ("segments",))
            legs = spec.get("segments")
        if not isinstance(legs, list) or len(legs) < 2:
            c.add(f"{where}.segments", f"{legs!r}: a router needs a list of at least two "
                                       "segments, e.g. segments: [net1, net2]")
            continue
        bad = [s for s in legs if s not in segs]
        if bad:
            c.add(f"{where}.segments", f"{bad} not declared under segments (declared: "
                                       f"{', '.join(segs)})")
            continue
        if len(set(legs)) != len(legs):
            c.add(f"{where}.segments", f"{legs}: a segment is listed twice")
            continue
        out.append(Router(name, tuple(legs)))
    return out


def _pods(c: Collector, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_PODS:
            c.add(where, f"{value}: use 0..{MAX_PODS} pods")
            return ()
        return tuple(f"p{i}" for i in range(1, value + 1))
    if isinstance(value, list):
        names = [p for i, p in enumerate(value) if _name_ok(c, f"{where}[{i}]", p)]
        if len(set(names)) != len(names):
            c.add(where, f"{value}: a pod name is listed twice")
        return tuple(names)
    c.add(where, f"{value!r}: expected a number of pods or a list of pod names")
    return ()


def _flags(c: Collector, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        c.add(where, f"{value!r}: expected a list of flanneld flags, e.g. [--ip-masq]")
        return ()
    for arg in value:
        flag = "--" + arg.lstrip("-").split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            c.add(where, f"{arg!r} is set by the lab for every host; remove it "
                         f"(the lab manages {', '.join(MANAGED_FLAGS)})")
        elif flag == "--ip-masq":
            c.add(where, f"{arg!r}: say `ip_masq: true` or `ip_masq: false` instead "
                         "(on by default, as in kube-flannel)")
    return tuple(value)


def _ip(c: Collector, where: str, value: Any) -> IPv4Address | None:
    if value is None:
        return None
    try:
        return IPv4Address(str(value))
    except ValueError:
        hint = "; pin an IPv6 address with ip6:" if ":" in str(value) else ""
        c.add(where, f"{value!r} is not an IPv4 address{hint}")
        return None


def _ip6(c: Collector, where: str, value: Any) -> IPv6Address | None:
    if value is None:
        return None
    try:
        return IPv6Address(str(value))
    except ValueError:
        hint = "; pin an IPv4 address with ip:" if "." in str(value) else ""
        c.add(where, f"{value!r} is not an IPv6 address{hint}")
        return None


def _segment_ref(c: Collector, where: str, value: Any, segs: list[str]) -> str:
    if value is None:
        if len(segs) == 1:
            return segs[0]
        c.add(where, f"missing; with several segments say which one ({', '.join(segs)})")
        return ""
    if value not in segs:
        c.add(where, f"{value!r} is not a segment (declared: {', '.join(segs)}); use one of "
                     "them or declare it under segments:")
        return ""
    return str(value)


def parse_hosts(c: Collector, value: Any, defaults: dict[str, Any],
                segs: list[str]) -> list[Host]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            c.add("hosts", f"{value}: give at least one host")
            return []
        value = {f"h{i}": None for i in range(1, value + 1)}
    raw = as_mapping(c, "hosts", value)
    if not raw:
        c.add("hosts", "no hosts; give a number (hosts: 3) or a mapping of host names")
    out: list[Host] = []
    for name, where, spec in _entries(c, "hosts", raw, HOST_KEYS):
        merged = {"pods": 2, "ip_masq": True, **defaults, **spec}
        if not isinstance(merged["ip_masq"], bool):
            c.add(f"{where}.ip_masq", f"{merged['ip_masq']!r}: use true or false")
        out.append(Host(
            name=name,
            segment=_segment_ref(c, f"{where}.segment", merged.get("segment"), segs),
            pods=_pods(c, f"{where}.pods", merged["pods"]),
            flanneld_args=_flags(c, f"{where}.flanneld_args", merged.get("flanneld_args", [])),
            ip=_ip(c, f"{where}.ip", spec.get("ip")), ip_masq=merged["ip_masq"] is not False,
            ip6=_ip6(c, f"{where}.ip6", spec.get("ip6"))))
    return out


def etcd_security(c: Collector, value: Any) -> tuple[bool, bool]:
    """etcd.tls (https with client certificates) and etcd.auth (users and passwords)."""
    spec = value if isinstance(value, dict) else {}
    out = []
    for key in ("tls", "auth"):
        flag = spec.get(key, False)
        if not isinstance(flag, bool):
            c.add(f"etcd.{key}", f"{flag!r}: use true or false")
            flag = False
        out.append(flag)
    return out[0], out[1]


def parse_etcd(c: Collector, value: Any, segs: list[str]) -> list[EtcdMemberSpec]:
    spec = as_mapping(c, "etcd", value)
    unknown_keys(c, "etcd", spec, ("members", "segment", "tls", "auth"))
    default_seg = spec.get("segment", segs[0] if segs else None)
    if default_seg is not None and default_seg not in segs:
        c.add("etcd.segment", f"{default_seg!r} is not a segment (declared: {', '.join(segs)})")
        default_seg = segs[0] if segs else None
    members: Any = spec.get("members", 1)
    if isinstance(members, int) and not isinstance(members, bool):
        if members not in (1, 3, 5):
            c.add("etcd.members", f"{members}: use 1, 3 or 5 members (an odd number keeps "
                                  "a quorum)")
            return []
        members = ["etcd"] if members == 1 else [f"etcd{i}" for i in range(1, members + 1)]
    if isinstance(members, list):
        members = {m: None for m in members}
    if not isinstance(members, dict) or not members:
        c.add("etcd.members", f"{members!r}: expected 1, 3 or 5, a list of names, or a "
                              "mapping name: {segment: ..., ip: ...}")
        return []
    out: list[EtcdMemberSpec] = []
    for name, where, mspec in _entries(c, "etcd.members", members, ("segment", "ip", "ip6")):
        seg = _segment_ref(c, f"{where}.segment", mspec.get("segment", default_seg), segs)
        out.append(EtcdMemberSpec(name, seg, _ip(c, f"{where}.ip", mspec.get("ip")),
                                  _ip6(c, f"{where}.ip6", mspec.get("ip6"))))
    return out


def parse_world(c: Collector, value: Any, segs: list[str]) -> World | None:
    """`world: true` (on the first segment), `world: SEGMENT` or `world: {segment, ip,
    ip6}`; absent or false: no world."""
    if value is None or value is False:
        return None
    if value is True or isinstance(value, str):
        value = {} if value is True else {"segment": value}
    if not isinstance(value, dict):
        c.add("world", f"{value!r}: use true, a segment name, or a mapping "
                       "{segment: ..., ip: ..., ip6: ...}")
        return None
    unknown_keys(c, "world", value, ("segment", "ip", "ip6"))
    seg = _segment_ref(c, "world.segment", value.get("segment", segs[0] if segs else None), segs)
    return World(seg, _ip(c, "world.ip", value.get("ip")), _ip6(c, "world.ip6", value.get("ip6")))
