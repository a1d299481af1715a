"""flannel's network config (etcd key `<prefix>/config`): JSON to a `NetworkConfig`, pure.

Parsed with Go's encoding/json semantics, as flannel does: keys are matched
case-insensitively, unknown keys are ignored, `null` leaves a field at its
default, and a value of the wrong JSON type is an error. Defaults and checks are
flannel's `CheckNetworkConfig` (SubnetLen, SubnetMin = the second subnet,
SubnetMax = the last one, alignment, minimum sizes).

Deliberate differences from flannel (docs/configuration.md):
- no `Backend` means vxlan, not udp (flannel's udp default is a trap, flannel#1221);
- only the vxlan, host-gw and wireguard backends exist; any other type is a clear
  error;
- SubnetMin above SubnetMax is rejected here instead of failing later as
  "out of subnets";
- IPv6-only (`EnableIPv4: false`, then `Network` may be absent) works: flannel's
  etcd mode accepts it and then loops or takes other nodes' leases; here the
  IPv4 fields are simply absent (`ipv4_network` None). Neither family enabled
  is an error.
Every error names the field, the value and the rule.

`NetworkConfig.network` is the IPv4 Network of a config that has one; on an
IPv6-only config it raises ConfigError (code that may meet one reads
`ipv4_network`, which is None there).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    NetmaskValueError,
)
from typing import Any, TypeVar

from core.clip import clipped

T = TypeVar("T")

SUPPORTED_BACKENDS = ("vxlan", "host-gw", "wireguard")
WIREGUARD_MODES = ("separate", "auto", "ipv4", "ipv6")
MAX_VNI = (1 << 24) - 1


class ConfigError(ValueError):
    """The network config cannot be used; the message names field, value and rule."""


@dataclass(frozen=True)
class VxlanConfig:
    vni: int = 1
    port: int = 0  # 0: the kernel's default, 8472
    mtu: int | None = None  # None: the external interface's MTU minus the overhead
    direct_routing: bool = False
    gbp: bool = False
    learning: bool = False


@dataclass(frozen=True)
class HostGwConfig:
    pass


@dataclass(frozen=True)
class WireguardConfig:
    listen_port: int = 51820  # flannel-wg
    listen_port_v6: int = 51821  # flannel-wg-v6 (separate mode)
    psk: bytes | None = None  # 32 bytes
    keepalive: int = 0  # PersistentKeepaliveInterval, seconds; 0 off
    mode: str = "separate"
    mtu: int | None = None  # the interface MTU to subtract 80 from; None: the external's


BackendConfig = VxlanConfig | HostGwConfig | WireguardConfig


@dataclass(frozen=True)
class NetworkConfig:
    ipv4_network: IPv4Network | None  # None: IPv6-only (EnableIPv4 false)
    subnet_len: int  # 0, and the addresses 0.0.0.0, when IPv6-only (flannel's values)
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend_type: str  # "vxlan" | "host-gw" | "wireguard"
    backend: BackendConfig
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipv6_network: IPv6Network | None = None
    ipv6_subnet_len: int | None = None
    ipv6_subnet_min: IPv6Address | None = None
    ipv6_subnet_max: IPv6Address | None = None
    enable_nftables: bool = False

    @property
    def network(self) -> IPv4Network:
        """The IPv4 Network; ConfigError on an IPv6-only config (see `ipv4_network`)."""
        if self.ipv4_network is None:
            raise ConfigError("this network is IPv6-only (EnableIPv4 is false): it has no "
                              "IPv4 Network")
        return self.ipv4_network

    def subnet_count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax, both included."""
        if self.ipv4_network is None:
            return 0
        step = 1 << (32 - self.subnet_len)
        span = int(self.subnet_max) - int(self.subnet_min)
        return span // step + 1 if span >= 0 else 0

    def ipv6_subnet_count(self) -> int:
        if self.ipv6_subnet_len is None or self.ipv6_subnet_min is None \
                or self.ipv6_subnet_max is None:
            return 0
        step = 1 << (128 - self.ipv6_subnet_len)
        span = int(self.ipv6_subnet_max) - int(self.ipv6_subnet_min)
        return span // step + 1 if span >= 0 else 0

    def subnet_fits(self, subnet: IPv4Network | None) -> bool:
        """Could this IPv4 subnet be a lease under this config (flannel's "fits")?
        Required when IPv4 is enabled, absent otherwise."""
        if self.ipv4_network is None:
            return subnet is None
        return (subnet is not None and subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.network_address <= self.subnet_max)

    def ipv6_subnet_fits(self, subnet: IPv6Network | None) -> bool:
        """The IPv6 half of "fits": required when IPv6 is enabled, absent otherwise."""
        if not self.enable_ipv6:
            return subnet is None
        assert self.ipv6_subnet_min is not None and self.ipv6_subnet_max is not None
        return (subnet is not None and subnet.prefixlen == self.ipv6_subnet_len
                and self.ipv6_subnet_min <= subnet.network_address <= self.ipv6_subnet_max)


def parse_network_config(raw: bytes | str) -> NetworkConfig:
    """flannel's config JSON to a validated NetworkConfig, or ConfigError."""
    try:
        doc = json.loads(raw, object_pairs_hook=_fold_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"network config is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"network config must be a JSON object like "
                          f'{{"Network":"10.5.0.0/16"}}, got {_show(doc)}')

    enable_ipv4 = _get(doc, "EnableIPv4", bool, True)
    enable_ipv6 = _get(doc, "EnableIPv6", bool, False)
    if not enable_ipv4 and not enable_ipv6:
        raise ConfigError("EnableIPv4 and EnableIPv6 are both false: enable at least one "
                          "family (EnableIPv4 defaults to true)")

    network = None
    subnet_len, smin, smax = 0, IPv4Address(0), IPv4Address(0)
    if enable_ipv4:
        network = _cidr(doc, "Network", IPv4Network)
        if network is None:
            raise ConfigError('Network is missing: set it to the IPv4 CIDR of the whole '
                              'overlay, e.g. "Network": "10.5.0.0/16" (or "EnableIPv4": '
                              'false with an IPv6Network for an IPv6-only network)')
        subnet_len, smin, smax = _subnets(doc, "", network, 32, 30, 28, 22, 24)

    ipv6_network = ipv6_len = ipv6_min = ipv6_max = None
    if enable_ipv6:
        ipv6_network = _cidr(doc, "IPv6Network", IPv6Network)
        if ipv6_network is None:
            raise ConfigError('EnableIPv6 is true but IPv6Network is missing: set it, '
                              'e.g. "IPv6Network": "fd00:10:5::/48"')
        ipv6_len, ipv6_min, ipv6_max = _subnets(doc, "IPv6", ipv6_network, 128, 126, 124, 62, 64)

    backend_type, backend = _backend(doc)
    if isinstance(backend, WireguardConfig):
        _check_wireguard(backend, enable_ipv4, enable_ipv6)
    return NetworkConfig(
        ipv4_network=network, subnet_len=subnet_len, subnet_min=smin, subnet_max=smax,
        backend_type=backend_type, backend=backend,
        enable_ipv4=enable_ipv4, enable_ipv6=enable_ipv6, ipv6_network=ipv6_network,
        ipv6_subnet_len=ipv6_len, ipv6_subnet_min=ipv6_min, ipv6_subnet_max=ipv6_max,
        enable_nftables=_get(doc, "EnableNFTables", bool, False),
    )


def _subnets(doc: dict[str, Any], fam: str, network: Any, bits: int, max_len: int,
             min_useful: int, big: int, default_len: int) -> tuple[int, Any, Any]:
    """SubnetLen/Min/Max (or the IPv6* ones) with flannel's defaults and checks."""
    len_name, min_name, max_name = f"{fam}SubnetLen", f"{fam}SubnetMin", f"{fam}SubnetMax"
    net_name = f"{fam}Network" if fam else "Network"
    plen = network.prefixlen
    subnet_len = _get(doc, len_name, int, 0)
    if subnet_len:  # flannel treats 0 as "not set"
        if subnet_len > max_len or subnet_len < 0:
            raise ConfigError(f"{len_name} {subnet_len}: must be at most /{max_len} "
                              f"(each host needs room for a gateway and pods)")
        if subnet_len < plen + 2:
            raise ConfigError(f"{len_name} {subnet_len}: {net_name} {network} must hold at "
                              f"least four subnets, so {len_name} must be at least {plen + 2}")
    elif plen > min_useful:
        raise ConfigError(f"{net_name} {network} is too small: the minimum useful prefix is "
                          f"/{min_useful}; use a bigger network")
    else:
        subnet_len = default_len if plen <= big else plen + 2

    addr_type = type(network.network_address)
    size = 1 << (bits - subnet_len)
    base = int(network.network_address)
    last = int(network.broadcast_address) + 1 - size
    found = []
    for name, default in ((min_name, base + size), (max_name, last)):
        value = _address(doc, name, addr_type)
        if value is None or int(value) == 0:  # flannel: the zero address means "not set"
            value = addr_type(default)
        elif value not in network:
            raise ConfigError(f"{name} {value}: not inside {net_name} {network}")
        elif int(value) % size:
            raise ConfigError(f"{name} {value}: not on a /{subnet_len} boundary "
                              f"({len_name}); use {addr_type(int(value) // size * size)}")
        found.append(value)
    smin, smax = found
    if smin > smax:
        raise ConfigError(f"{min_name} {smin} is above {max_name} {smax}: no subnet "
                          "could ever be leased; swap them or fix one")
    return subnet_len, smin, smax


def _backend(doc: dict[str, Any]) -> tuple[str, BackendConfig]:
    raw = doc.get("backend")
    if raw is None:  # absent or null: vxlan (flannel would pick udp)
        return "vxlan", VxlanConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f'Backend {_show(raw)}: must be an object like {{"Type":"vxlan"}}')
    btype = _get(raw, "Type", str, "", "Backend.")
    if not btype:
        raise ConfigError('Backend.Type is missing or empty: set "Type" to "vxlan", '
                          '"host-gw" or "wireguard" (or drop Backend to get vxlan)')
    lowered = btype.lower()
    if lowered == "host-gw":
        return lowered, HostGwConfig()
    if lowered not in SUPPORTED_BACKENDS:
        raise ConfigError(f"Backend.Type {_show(btype)}: unsupported backend; pyflannel "
                          f"supports {', '.join(SUPPORTED_BACKENDS)}")

    def num(name: str, default: int, lo: int, hi: int, what: str) -> int:
        value = _get(raw, name, int, default, "Backend.")
        if not lo <= value <= hi:
            raise ConfigError(f"Backend.{name} {value}: must be {lo}..{hi} ({what})")
        return value

    overhead = "WireGuard's 80" if lowered == "wireguard" else "the VXLAN overhead"
    mtu = num("MTU", 0, 0, 65535, f"0 means the interface MTU minus {overhead}")
    if 0 < mtu < 68 + (80 if lowered == "wireguard" else 0):
        raise ConfigError(f"Backend.MTU {mtu}: too small, the device would be below 68 "
                          "(IPv4's minimum); or 0 for the interface's")
    if lowered == "wireguard":
        return lowered, WireguardConfig(
            listen_port=num("ListenPort", 51820, 1, 65535, "flannel-wg's UDP port"),
            listen_port_v6=num("ListenPortV6", 51821, 1, 65535, "flannel-wg-v6's UDP port"),
            psk=_psk(_get(raw, "PSK", str, "", "Backend.")),
            keepalive=num("PersistentKeepaliveInterval", 0, 0, 65535,
                          "seconds between keepalives; 0 is off"),
            mode=_get(raw, "Mode", str, "separate", "Backend."),  # "" is flannel's error too
            mtu=mtu or None)
    return lowered, VxlanConfig(
        vni=num("VNI", 1, 0, MAX_VNI, "a 24-bit VXLAN network identifier"),
        port=num("Port", 0, 0, 65535, "a UDP port; 0 means the kernel default 8472"),
        mtu=mtu or None,
        direct_routing=_get(raw, "DirectRouting", bool, False, "Backend."),
        gbp=_get(raw, "GBP", bool, False, "Backend."),
        learning=_get(raw, "Learning", bool, False, "Backend."),
    )


def _psk(text: str) -> bytes | None:
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        # the value is a secret: say what is wrong with it, never what it is
        raise ConfigError(f"Backend.PSK ({len(text)} characters): not a WireGuard key (32 "
                          "bytes in base64, 44 characters); make one with `wg genpsk`")
    return raw


def _check_wireguard(wg: WireguardConfig, v4: bool, v6: bool) -> None:
    mode = wg.mode
    if mode == "separate" and v4 and v6 and wg.listen_port == wg.listen_port_v6:
        raise ConfigError(f"Backend.ListenPortV6 {wg.listen_port_v6} equals ListenPort: in "
                          "separate mode flannel-wg and flannel-wg-v6 each need a port of "
                          "their own; use another (51821 by default)")
    if mode not in WIREGUARD_MODES:
        raise ConfigError(f"Backend.Mode {_show(mode)}: no valid Mode configured; use one of "
                          f"{', '.join(WIREGUARD_MODES)} (separate is the default)")
    if mode == "ipv6" and not v6:
        raise ConfigError('Backend.Mode "ipv6" sends peer traffic over IPv6, but EnableIPv6 '
                          'is false: enable IPv6, or use Mode "ipv4" or "separate"')
    if mode == "ipv4" and not v4:
        raise ConfigError('Backend.Mode "ipv4" sends peer traffic over IPv4, but this network '
                          'is IPv6-only: use Mode "ipv6" or "separate"')


def _fold_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Go matches JSON keys to fields case-insensitively (Unicode folding), and
    # the last key that matches a field wins.
    return {k.casefold(): v for k, v in pairs}


_JSON_TYPE = {bool: "true or false", int: "an integer", str: "a string"}


def _get(doc: dict[str, Any], name: str, typ: type[T], default: T, where: str = "") -> T:
    value = doc.get(name.casefold())
    if value is None:  # Go: null leaves the field at its default
        return default
    # bool is an int subclass in Python, not in JSON; Go also rejects 24.0 for an int
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}{name} {_show(value)}: must be {_JSON_TYPE[typ]}")
    return value


def _cidr(doc: dict[str, Any], name: str, cls: Callable[..., T]) -> T | None:
    raw = _get(doc, name, str, "")
    if not raw:
        return None
    if not re.fullmatch(r"[^/\s]+/[0-9]{1,3}", raw):
        raise ConfigError(f"{name} {_show(raw)}: must be a CIDR with a prefix length, "
                          f"e.g. {'10.5.0.0/16' if 'v6' not in name else 'fd00:10:5::/48'}")
    try:
        return cls(raw, strict=False)  # Go's ParseCIDR masks the host bits away
    except (AddressValueError, NetmaskValueError, ValueError) as exc:
        raise ConfigError(f"{name} {_show(raw)}: not a valid "
                          f"{'IPv6' if 'v6' in name else 'IPv4'} CIDR ({str(exc)[:80]})") from None


def _address(doc: dict[str, Any], name: str, cls: Callable[[str], T]) -> T | None:
    raw = _get(doc, name, str, "")
    if not raw:
        return None
    try:
        return cls(raw)
    except (AddressValueError, ValueError):
        fam = "IPv6" if "6" in name else "IPv4"
        raise ConfigError(f"{name} {_show(raw)}: not an {fam} address") from None


def _show(value: Any) -> str:
    """A config value as the user wrote it (JSON), clipped."""
    return clipped(json.dumps(value) if not isinstance(value, float) else repr(value))
