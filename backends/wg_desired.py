"""From leases to WireGuard devices and peers, and the diff against a device. Pure.

`device_specs`: which devices a config has (flannel's names, ports and MTU - 80).
`desired_peers`: per device, one peer per usable lease (its key, endpoint and allowed
IPs), and why every other lease is skipped. `plan_peers`: what one UAPI `set` must
change to turn a device's actual peers into the desired ones.

Endpoint roaming: WireGuard moves a peer's endpoint to wherever its authenticated
packets come from (a peer behind NAT, a node that changed address). The lease's
endpoint is what we set, but a peer whose endpoint differs while it handshook within
the last 180 s is live where it is: that is not drift, and resetting it would fight
WireGuard. A peer that is not live gets the lease's endpoint back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from core.config import WireguardConfig
from core.lease import Lease, LeaseError, check_wireguard_attrs, is_peer

OVERHEAD = 80  # outer IPv6 40 + UDP 8 + type 4 + index 4 + counter 8 + tag 16
LIVE_SECONDS = 180.0  # WireGuard's REJECT_AFTER_TIME
DEVICE = "flannel-wg"
DEVICE_V6 = "flannel-wg-v6"
_PRIVATE4 = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"),
             IPv4Network("192.168.0.0/16"))
_ULA = IPv6Network("fc00::/7")


@dataclass(frozen=True)
class WgDeviceSpec:
    name: str
    families: tuple[int, ...]  # the pod address families it carries: (4,), (6,), (4, 6)
    listen_port: int
    mtu: int
    mode: str = "separate"


@dataclass(frozen=True)
class WgPeer:
    """A peer as we set it."""

    public_key: str  # base64
    endpoint: str  # "1.2.3.4:51820" or "[fd00::1]:51821"
    allowed_ips: tuple[str, ...]  # CIDRs, sorted
    psk: bytes | None = None
    keepalive: int = 0


@dataclass(frozen=True)
class ActualPeer:
    """A peer as a device reports it (UAPI `get`)."""

    public_key: str
    endpoint: str  # "" none
    allowed_ips: tuple[str, ...]
    psk: bytes | None
    keepalive: int
    last_handshake: float  # unix time; 0 never
    rx_bytes: int
    tx_bytes: int


# Per lease object (by id): the lease and its peer, or why it has none. A watch event
# among a thousand leases then decides one lease, not a thousand.
PeerCache = dict[int, "tuple[Lease, WgPeer | str]"]


@dataclass
class DesiredPeers:
    peers: dict[str, WgPeer] = field(default_factory=dict)  # by public key
    skipped: dict[str, str] = field(default_factory=dict)  # lease key -> why
    cache: PeerCache = field(default_factory=dict)  # to pass to the next call


@dataclass(frozen=True)
class PeerPlan:
    upsert: tuple[WgPeer, ...] = ()
    remove: tuple[str, ...] = ()  # public keys


def device_mtu(wg: WireguardConfig, ext_mtu: int) -> int:
    return (wg.mtu or ext_mtu) - OVERHEAD


def device_specs(wg: WireguardConfig, enable_ipv4: bool, enable_ipv6: bool,
                 ext_mtu: int) -> list[WgDeviceSpec]:
    """flannel's devices: `separate` has flannel-wg for IPv4 and flannel-wg-v6 for IPv6;
    the other modes one flannel-wg for every family, on ListenPort."""
    mtu = device_mtu(wg, ext_mtu)
    if wg.mode != "separate":
        fams = tuple(f for f, on in ((4, enable_ipv4), (6, enable_ipv6)) if on)
        return [WgDeviceSpec(DEVICE, fams, wg.listen_port, mtu, wg.mode)]
    specs = []
    if enable_ipv4:
        specs.append(WgDeviceSpec(DEVICE, (4,), wg.listen_port, mtu))
    if enable_ipv6:
        specs.append(WgDeviceSpec(DEVICE_V6, (6,), wg.listen_port_v6, mtu))
    return specs


def endpoint(ip: IPv4Address | IPv6Address, port: int) -> str:
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def canonical_endpoint(text: str) -> str:
    """An endpoint as `endpoint` spells it ("" stays ""); unparsable text unchanged."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text
    try:
        return endpoint(ip_address(host.strip("[]")), int(port))
    except ValueError:
        return text


def auto_family(lease: Lease, own: Lease) -> int:
    """flannel's `selectMode` for Mode auto: the family of the peer's endpoint."""
    peer4, peer6 = lease.attrs.public_ip, lease.attrs.public_ipv6
    if peer6 is None or lease.ipv6_subnet is None:
        return 4
    if own.ipv4_subnet is not None and lease.ipv4_subnet is not None and \
            not any(peer4 in n for n in _PRIVATE4):
        return 4
    own6 = own.attrs.public_ipv6
    if own6 is not None and peer6 not in _ULA and own6 not in _ULA:
        return 6
    return 4 if lease.ipv4_subnet is not None else 6


def _peer(lease: Lease, own: Lease, wg: WireguardConfig, spec: WgDeviceSpec) -> WgPeer:
    """The peer for `lease` on `spec`'s device, or LeaseError saying why not."""
    a = lease.attrs
    nets: list[IPv4Network | IPv6Network] = []
    if 4 in spec.families and lease.ipv4_subnet is not None:
        nets.append(lease.ipv4_subnet)
    if 6 in spec.families and lease.ipv6_subnet is not None:
        nets.append(lease.ipv6_subnet)
    if not nets:
        which = "IPv6" if spec.families == (6,) else "IPv4"
        raise LeaseError(f"it has no {which} subnet for {spec.name}")
    if spec.mode == "separate":
        fam = spec.families[0]
    elif spec.mode == "auto":
        fam = auto_family(lease, own)
    else:
        fam = 6 if spec.mode == "ipv6" else 4
    v6_data = fam == 6 and spec.mode == "separate"
    key, port = check_wireguard_attrs(a, v6=v6_data or (fam == 6 and a.backend_data is None))
    # A single-device peer listens on its ListenPort, which its BackendData names;
    # flannel takes BackendV6Data's (ListenPortV6) there and misses unless both agree.
    host = a.public_ipv6 if fam == 6 else a.public_ip
    if host is None:
        raise LeaseError("PublicIPv6 is null: no IPv6 endpoint to reach it at")
    return WgPeer(key, endpoint(host, port or spec.listen_port),
                  tuple(sorted(str(n) for n in nets)), wg.psk, wg.keepalive)


def _decide(lease: Lease, own: Lease, wg: WireguardConfig, spec: WgDeviceSpec
            ) -> WgPeer | str:
    if lease.attrs.backend_type != "wireguard":
        kind = lease.attrs.backend_type or "udp (no BackendType)"
        return f"BackendType {kind!r} is not 'wireguard'; only wireguard peers are used"
    try:
        return _peer(lease, own, wg, spec)
    except LeaseError as exc:
        return str(exc)


def _shared(key: str, other: str) -> str:
    return f"its PublicKey is also lease {other}'s; WireGuard allows one peer per key"


def desired_peers(own: Lease, peers: Iterable[Lease], wg: WireguardConfig,
                  spec: WgDeviceSpec, own_public_key: str,
                  cache: PeerCache | None = None) -> DesiredPeers:
    """One device's peers. Skipped, each with its reason: leases of other backends,
    a malformed key, our own key (a copied key file), and a key another lease
    already holds (WireGuard keys a peer by its key; the lease whose key sorts first
    keeps it). `cache`: the previous call's `out.cache`, valid for the same own lease,
    config and device."""
    out = DesiredPeers()
    old = cache or {}
    holder: dict[str, str] = {}
    for lease in peers:
        key = lease.key
        if key == own.key or not is_peer(lease.peer_key, own.peer_key):
            continue
        hit = old.get(id(lease))
        got = hit[1] if hit is not None and hit[0] is lease else _decide(lease, own, wg, spec)
        out.cache[id(lease)] = (lease, got)
        if isinstance(got, str):
            out.skipped[key] = got
            continue
        pub = got.public_key
        if pub == own_public_key:
            out.skipped[key] = (f"its PublicKey {pub} is ours: two nodes share a key file "
                                "(copied /run/flannel/wgkey?); remove the copy on one node "
                                "and restart its flanneld")
            continue
        other = holder.get(pub)
        if other is not None:
            if other < key:
                out.skipped[key] = _shared(key, other)
                continue
            out.skipped[other] = _shared(other, key)  # this one sorts first: it keeps the key
        holder[pub] = key
        out.peers[pub] = got
    return out


def is_live(peer: ActualPeer, now: float) -> bool:
    return bool(peer.last_handshake) and now - peer.last_handshake <= LIVE_SECONDS


def needs_set(want: WgPeer, have: ActualPeer | None, now: float) -> bool:
    if have is None:
        return True
    if set(have.allowed_ips) != set(want.allowed_ips) or have.psk != want.psk \
            or have.keepalive != want.keepalive:
        return True
    return canonical_endpoint(have.endpoint) != want.endpoint and not is_live(have, now)


def plan_peers(want: Mapping[str, WgPeer], actual: Mapping[str, ActualPeer],
               now: float) -> PeerPlan:
    """The upserts (new or altered peers) and removals (peers no lease wants)."""
    upsert = tuple(p for k, p in sorted(want.items()) if needs_set(p, actual.get(k), now))
    remove = tuple(sorted(k for k in actual if k not in want))
    return PeerPlan(upsert, remove)
