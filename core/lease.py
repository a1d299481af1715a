r"""Subnet leases as flannel stores them in etcd: pure encode/decode, no I/O.

Key:   `<prefix>/subnets/10.5.52.0-24` (dual stack: `10.5.52.0-24&fd00:10:5:52::-64`,
       IPv6-only: `&fd00:10:5:52::-64`, see below)
Value: `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",
         "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
       (dual stack: `"PublicIPv6":"fd72::3"` and `"BackendV6Data":{"VNI":1,"VtepMAC":...}`
       after BackendData)

IPv6-only keys. flannel has none: its key regex
`(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$` needs the IPv4 part. Ours is the
dual-stack form with the IPv4 part left out, `&<v6 net>-<len>`. It contains no `.`,
so flannel's regex (whose first element is digits, a literal dot, digits) can match
nowhere in `<prefix>/subnets/&...`: flannel's parser rejects it (flannel's own test
suite pins `"&2001::-56"` as invalid) and its listing skips it; it is never read
as some IPv4 subnet.

What we write is byte-identical to flannel (Go struct order, compact JSON,
`"PublicIPv6":null`, lowercase MAC). What we read is lenient the way Go's
encoding/json is: any key order, keys matched case-insensitively, missing
optional fields. Anything malformed raises `LeaseError` naming what is wrong;
callers skip that one lease and never touch the others.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from core.clip import shown

DEFAULT_PREFIX = "/coreos.com/network"

_KEY_RE = re.compile(r"(?:(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2}))?(?:&([0-9a-f:]+)-(\d{1,3}))?",
                     re.ASCII)
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# 32 bytes in base64: 43 characters, the last of which carries 4 bits, then "="
_WG_KEY_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=", re.ASCII)
# What names a node's lease among its peers: the IPv4 subnet, or for an IPv6-only lease
# the IPv6 one. The two types never compare equal, so one map can hold both kinds.
PeerKey = IPv4Network | IPv6Network


class LeaseError(ValueError):
    """A lease key or value that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    """The JSON value of a lease (flannel's `LeaseAttrs`).

    Slotted (no __dict__): a daemon holds one per peer, thousands of them."""

    public_ip: IPv4Address
    backend_type: str = ""
    backend_data: Any = None
    public_ipv6: IPv6Address | None = None
    backend_v6_data: Any = None

    @property
    def vtep_mac(self) -> str | None:
        """The peer's VXLAN device MAC, if its backend data carries one as a string."""
        mac = _field(self.backend_data, "VtepMAC")
        return mac if isinstance(mac, str) else None

    @property
    def vni(self) -> int | None:
        vni = _field(self.backend_data, "VNI")
        return vni if isinstance(vni, int) and not isinstance(vni, bool) else None


@dataclass(frozen=True, slots=True)
class Lease:
    """A subnet held by one node.

    `lease_id` is the etcd lease the key is attached to; 0 means none, i.e. a
    reservation that never expires. `expiration` is a unix time or None.
    `mod_revision` is the etcd revision of the key's last write, used to renew
    only while the key is still ours.

    `ipv4_subnet` is None for an IPv6-only lease; `subnet` is the IPv4 subnet of
    a lease that has one and raises LeaseError on an IPv6-only lease (code that
    may meet one reads `ipv4_subnet`).

    Slotted (no __dict__, ~100 bytes less each): a daemon holds one per peer.
    """

    ipv4_subnet: IPv4Network | None
    attrs: LeaseAttrs
    ipv6_subnet: IPv6Network | None = None
    lease_id: int = 0
    expiration: float | None = None
    mod_revision: int = field(default=0, compare=False)
    # `key`, once made (decode_lease sets it from the key it parsed). Not an init field,
    # so dataclasses.replace() never carries a stale one over.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ipv4_subnet is None and self.ipv6_subnet is None:
            raise LeaseError("a lease needs an IPv4 or an IPv6 subnet (or both)")

    @property
    def subnet(self) -> IPv4Network:
        """The IPv4 subnet; LeaseError for an IPv6-only lease (see `ipv4_subnet`)."""
        if self.ipv4_subnet is None:
            raise LeaseError(f"lease {self.key} is IPv6-only: it has no IPv4 subnet")
        return self.ipv4_subnet

    @property
    def peer_key(self) -> PeerKey:
        """The lease's name among peers: its IPv4 subnet, else (IPv6-only) its IPv6 one."""
        if self.ipv4_subnet is not None:
            return self.ipv4_subnet
        assert self.ipv6_subnet is not None  # __post_init__
        return self.ipv6_subnet

    @property
    def families(self) -> tuple[bool, bool]:
        """(has an IPv4 subnet, has an IPv6 subnet)."""
        return self.ipv4_subnet is not None, self.ipv6_subnet is not None

    @property
    def is_reservation(self) -> bool:
        return self.lease_id == 0

    @property
    def key(self) -> str:
        # Kept: formatting an IPv6 address costs ~10 us, and every full reconcile asks
        # every lease.
        key = self._key
        if key is None:
            key = subnet_key(self.ipv4_subnet, self.ipv6_subnet)
            object.__setattr__(self, "_key", key)
        return key

    def with_attrs(self, attrs: LeaseAttrs) -> Lease:
        return replace(self, attrs=attrs)


def peer_order(key: PeerKey) -> tuple[int, int, int]:
    """A total order over peer keys of both families (IPv4 first), for sorted output."""
    return key.version, int(key.network_address), key.prefixlen


def is_peer(subnet: PeerKey | None, own: PeerKey | None) -> bool:
    """Our own subnet is never a peer: the watch, the daemon and the backends all ask here."""
    return subnet != own


def subnet_key(subnet: IPv4Network | None, ipv6_subnet: IPv6Network | None = None) -> str:
    """flannel's key name; IPv6-only (`subnet` None): `&<v6 net>-<len>`."""
    if subnet is None and ipv6_subnet is None:
        raise LeaseError("a lease key needs an IPv4 or an IPv6 subnet")
    key = f"{subnet.network_address}-{subnet.prefixlen}" if subnet is not None else ""
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address.compressed}-{ipv6_subnet.prefixlen}"
    return key


def subnets_prefix(prefix: str = DEFAULT_PREFIX) -> str:
    """The watched key prefix, cleaned like Go's path.Join (no trailing slash)."""
    return join_key(prefix, "subnets")


def join_key(*parts: str) -> str:
    joined = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return "/" + joined


def parse_subnet_key(key: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    """`10.5.52.0-24`, `10.5.52.0-24&fd00::-64` or `&fd00::-64` (or the last path
    element of a full key) to its subnets; the IPv4 one is None for IPv6-only."""
    return _parse_subnet_key(key)[:2]


def _parse_subnet_key(key: str) -> tuple[IPv4Network | None, IPv6Network | None, str]:
    name = key.rsplit("/", 1)[-1]
    m = _KEY_RE.fullmatch(name)
    if not m or not (m.group(1) or m.group(3)):
        raise LeaseError(f"lease key {shown(key)}: not of the form <a.b.c.d>-<len>"
                         "[&<ipv6>-<len>] or &<ipv6>-<len>")
    v4 = None
    if m.group(1):
        try:
            v4 = IPv4Network(f"{m.group(1)}/{m.group(2)}")
        except ValueError as exc:
            raise LeaseError(f"lease key {shown(key)}: {exc}") from None
    v6 = None
    if m.group(3):
        try:
            v6 = IPv6Network(f"{m.group(3)}/{m.group(4)}")
        except ValueError as exc:
            raise LeaseError(f"lease key {shown(key)}: IPv6 part: {exc}") from None
    if subnet_key(v4, v6) != name:  # we address keys by this form, as flannel writes them
        raise LeaseError(f"lease key {shown(key)}: not in canonical form "
                         f"(flannel would write {subnet_key(v4, v6)!r})")
    return v4, v6, name


def encode_attrs(attrs: LeaseAttrs) -> bytes:
    """The value exactly as flannel's Go `json.Marshal(LeaseAttrs)` writes it."""
    doc: dict[str, Any] = {
        "PublicIP": str(attrs.public_ip),
        "PublicIPv6": str(attrs.public_ipv6) if attrs.public_ipv6 is not None else None,
    }
    if attrs.backend_type:
        doc["BackendType"] = attrs.backend_type
    if attrs.backend_data is not None:
        doc["BackendData"] = attrs.backend_data
    if attrs.backend_v6_data is not None:
        doc["BackendV6Data"] = attrs.backend_v6_data
    return json.dumps(doc, separators=(",", ":")).encode()


def vxlan_backend_data(vni: int, mac: str) -> dict[str, Any]:
    """flannel's vxlan BackendData, in its key order."""
    return {"VNI": vni, "VtepMAC": mac.lower()}


def wireguard_backend_data(public_key: str, port: int) -> dict[str, Any]:
    """flannel's wireguard BackendData (and BackendV6Data), in its key order."""
    return {"PublicKey": public_key, "Port": port}


def check_wireguard_attrs(attrs: LeaseAttrs, v6: bool = False) -> tuple[str, int | None]:
    """The (PublicKey, Port) of a wireguard lease (`v6`: of its BackendV6Data); Port is
    None when absent or 0 (flannel before 0.26.6). LeaseError if the key is unusable."""
    data = attrs.backend_v6_data if v6 else attrs.backend_data
    what = "wireguard lease" + (" BackendV6Data" if v6 else "")
    key = _field(data, "PublicKey")
    if not isinstance(key, str) or not _WG_KEY_RE.fullmatch(key):
        raise LeaseError(f"{what}: PublicKey {shown(key)} is not a base64 WireGuard key")
    port = _field(data, "Port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 <= port <= 65535):
        raise LeaseError(f"{what}: Port {shown(port)} is not a UDP port")
    return key, port or None


def decode_attrs(value: bytes | str) -> LeaseAttrs:
    """Parse a lease value leniently; raise LeaseError for anything unusable."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise LeaseError(f"lease value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LeaseError(f"lease value: expected a JSON object, got {type(doc).__name__}")
    fields = {k.lower(): v for k, v in doc.items()}  # Go matches keys case-insensitively

    raw_ip = fields.get("publicip")
    if not isinstance(raw_ip, str):
        raise LeaseError("lease value: PublicIP must be an IPv4 address string, "
                         f"got {shown(raw_ip)}")
    try:
        public_ip = IPv4Address(raw_ip)
    except AddressValueError:
        raise LeaseError(
            f"lease value: PublicIP {shown(raw_ip)} is not an IPv4 address") from None

    raw_ip6 = fields.get("publicipv6")
    public_ipv6 = None
    if raw_ip6 is not None:
        if not isinstance(raw_ip6, str):
            raise LeaseError("lease value: PublicIPv6 must be a string or null, "
                             f"got {shown(raw_ip6)}")
        try:
            public_ipv6 = IPv6Address(raw_ip6)
        except AddressValueError:
            raise LeaseError(
                f"lease value: PublicIPv6 {shown(raw_ip6)} is not an IPv6 address") from None

    backend_type = fields.get("backendtype") or ""
    if not isinstance(backend_type, str):
        raise LeaseError(
            f"lease value: BackendType must be a string, got {shown(backend_type)}")
    found = {}
    for name in ("BackendData", "BackendV6Data"):
        data = fields.get(name.lower())
        if data is not None and not isinstance(data, dict):
            raise LeaseError(f"lease value: {name} must be an object, got {shown(data)}")
        # One copy of "VNI", "VtepMAC", "PublicKey"... for all leases, not one per lease
        found[name] = {sys.intern(k): v for k, v in data.items()} if data else data
    return LeaseAttrs(public_ip=public_ip, backend_type=sys.intern(backend_type),
                      backend_data=found["BackendData"], public_ipv6=public_ipv6,
                      backend_v6_data=found["BackendV6Data"])


def decode_lease(key: str, value: bytes | str, *, lease_id: int = 0,
                 expiration: float | None = None, mod_revision: int = 0) -> Lease:
    v4, v6, name = _parse_subnet_key(key)
    lease = Lease(ipv4_subnet=v4, attrs=decode_attrs(value), ipv6_subnet=v6,
                  lease_id=lease_id, expiration=expiration, mod_revision=mod_revision)
    object.__setattr__(lease, "_key", name)  # it is canonical: the key it would make
    return lease


def check_vxlan_attrs(attrs: LeaseAttrs, v6: bool = False) -> tuple[int, str]:
    """The (VNI, VtepMAC) of a vxlan lease (`v6`: of its BackendV6Data), or LeaseError if
    it cannot be programmed."""
    data = attrs.backend_v6_data if v6 else attrs.backend_data
    what = "vxlan lease" + (" BackendV6Data" if v6 else "")
    mac = _field(data, "VtepMAC")
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac.lower()):
        raise LeaseError(f"{what}: VtepMAC {shown(mac)} is not a MAC address")
    if int(mac[:2], 16) & 1:
        raise LeaseError(f"{what}: VtepMAC {mac} is multicast, not a unicast MAC")
    if mac.lower() == "00:00:00:00:00:00":
        raise LeaseError(f"{what}: VtepMAC is all zeros")
    vni = _field(data, "VNI")
    if not isinstance(vni, int) or isinstance(vni, bool) or not 0 <= vni < 1 << 24:
        raise LeaseError(f"{what}: VNI {vni!r} is not 0..16777215")
    lower = mac.lower()
    return vni, mac if lower == mac else lower  # the lease's own string: one per peer


def _field(data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        return None
    lowered = name.lower()
    found = None
    for k, v in data.items():  # Go's decoder: every case-insensitive match sets it, the last wins
        if isinstance(k, str) and k.lower() == lowered:
            found = v
    return found


def check_peer_lease(lease: Lease, network: IPv4Network | None, *,
                     own_subnet: IPv4Network | None = None,
                     own_public_ips: Collection[IPv4Address | IPv6Address] = (),
                     ipv6_network: IPv6Network | None = None,
                     own_ipv6_subnet: IPv6Network | None = None) -> None:
    """Raise LeaseError if a peer's lease must not be programmed; pure.

    A lease that would make us route to ourselves, to nowhere, or hijack
    traffic for subnets outside the overlay is rejected: subnet outside the
    Network, overlapping our own subnet, a PublicIP that is ours, loopback,
    multicast, unspecified or broadcast, and (vxlan) a VtepMAC that is not a
    unicast MAC or a VNI out of range.

    Only the families we run are judged: `network` None means IPv6-only (the
    lease's IPv4 part and PublicIP are not used), `ipv6_network` None means
    IPv4-only (its IPv6 part, PublicIPv6 and BackendV6Data are ignored, so a
    dual-stack peer is programmed for IPv4 whatever its IPv6 half holds). A lease
    with no part in a family we run is rejected.
    """
    where = f"lease {lease.key}"
    v4, v6 = lease.ipv4_subnet, lease.ipv6_subnet
    use4 = network is not None and v4 is not None
    use6 = ipv6_network is not None and v6 is not None
    if not use4 and not use6:
        have = "IPv6-only" if v4 is None else "IPv4-only" if v6 is None else "dual-stack"
        want = "IPv4" if network is not None else "IPv6"
        raise LeaseError(f"{where}: a {have} lease has no {want} subnet, and this network "
                         f"runs {want}{' only' if network is None or ipv6_network is None else ''}")
    if use4:
        assert v4 is not None and network is not None
        if not _inside(v4, network):
            raise LeaseError(f"{where}: subnet {v4} is outside Network {network}")
        if own_subnet is not None and _overlap(v4, own_subnet):
            raise LeaseError(f"{where}: subnet {v4} overlaps our own subnet {own_subnet}")
    if use6:
        assert v6 is not None and ipv6_network is not None
        if not _inside(v6, ipv6_network):
            raise LeaseError(f"{where}: IPv6 subnet {v6} is outside "
                             f"IPv6Network {ipv6_network}")
        if own_ipv6_subnet is not None and _overlap(v6, own_ipv6_subnet):
            raise LeaseError(f"{where}: IPv6 subnet {v6} overlaps our own "
                             f"{own_ipv6_subnet}")
    attrs = lease.attrs
    if use4:
        _check_public(where, "PublicIP", attrs.public_ip, own_public_ips)
    if use6 and attrs.public_ipv6 is None and not use4:
        raise LeaseError(f"{where}: PublicIPv6 is null, so its IPv6 subnet {v6} cannot "
                         "be reached")
    if use6 and attrs.public_ipv6 is not None:
        _check_public(where, "PublicIPv6", attrs.public_ipv6, own_public_ips)
    if attrs.backend_type == "vxlan":
        try:
            if use4:
                check_vxlan_attrs(attrs)
        except LeaseError as exc:
            raise LeaseError(f"{where}: {exc}") from None
        try:
            if use6 and attrs.backend_v6_data is not None:
                check_vxlan_attrs(replace(attrs, backend_data=attrs.backend_v6_data))
        except LeaseError as exc:
            raise LeaseError(f"{where}: BackendV6Data: {exc}") from None


def _inside(sub: IPv4Network | IPv6Network, net: IPv4Network | IPv6Network) -> bool:
    """sub.subnet_of(net) without what that leaves behind: ipaddress caches hostmask and
    broadcast_address in the network's __dict__, two more addresses on every peer's."""
    return (sub.prefixlen >= net.prefixlen
            and int(sub.network_address) & int(net.netmask) == int(net.network_address))


def _overlap(a: IPv4Network | IPv6Network, b: IPv4Network | IPv6Network) -> bool:
    """a.overlaps(b) for networks of one family, the same way (see _inside)."""
    short = a if a.prefixlen <= b.prefixlen else b
    mask = int(short.netmask)
    return int(a.network_address) & mask == int(b.network_address) & mask


def _check_public(where: str, name: str, ip: IPv4Address | IPv6Address,
                  own_public_ips: Collection[IPv4Address | IPv6Address]) -> None:
    problem = _bad_peer_address(ip)
    if problem is None and ip in own_public_ips:
        problem = "our own address (a stale lease of ours, or a duplicate node)"
    if problem:
        raise LeaseError(f"{where}: {name} {ip} is {problem}; a peer must advertise a "
                         "unicast address of its own")


def _bad_peer_address(ip: IPv4Address | IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, IPv4Address) and ip == IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return None
