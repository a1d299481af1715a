"""flannel's delegate configuration, derived exactly as flannel-io/cni-plugin does (pure).

Input: the `flannel` plugin's config and the node's subnet.env. Output: the
delegate config (a bridge config with host-local IPAM by default) that flannel
saves to `<dataDir>/<containerID>` and hands to the delegate plugin. We serve
`type: bridge` ourselves with the same semantics, so the derivation is the
contract: same keys, same defaults, same errors.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from cni.protocol import INVALID_CONFIG, INVALID_ENV, UNSUPPORTED_FIELD, CniError, shown

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from core.subnetenv import SubnetEnv

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"


@dataclass(frozen=True)
class FlannelConf:
    name: str
    cni_version: str
    subnet_file: str
    data_dir: str
    socket_path: str
    delegate: dict[str, Any]
    ipam: dict[str, Any] | None
    runtime_config: dict[str, Any] | None


def socket_path_for(conf: dict[str, Any]) -> str:
    """Where flanneld serves the CNI: `cniSocket`, else beside the subnet file."""
    explicit = conf.get("cniSocket")
    if isinstance(explicit, str) and explicit:
        return explicit
    subnet_file = conf.get("subnetFile") or DEFAULT_SUBNET_FILE
    head, slash, _ = str(subnet_file).rpartition("/")
    return f"{head or ('' if slash else '.')}/cni.sock"


def load_conf(conf: dict[str, Any]) -> FlannelConf:
    """The flannel plugin's own keys, type-checked; errors name the field."""
    def string(key: str, default: str) -> str:
        value = conf.get(key, default)
        if not isinstance(value, str) or not value:
            raise CniError(INVALID_CONFIG,
                           f"{key!r} must be a non-empty string, got {shown(value)}")
        return value

    def obj(key: str) -> dict[str, Any] | None:
        value = conf.get(key)
        if value is not None and not isinstance(value, dict):
            raise CniError(INVALID_CONFIG, f"{key!r} must be a JSON object, got {shown(value)}")
        return value

    delegate = obj("delegate")
    if delegate is None:
        delegate = {}
    else:
        delegate = dict(delegate)
        if "type" in delegate and not isinstance(delegate["type"], str):
            raise CniError(INVALID_CONFIG, "'delegate' dictionary, if present, must have "
                           f"(string) 'type' field, got {shown(delegate['type'])}")
        if "name" in delegate:
            raise CniError(INVALID_CONFIG, "'delegate' dictionary must not have 'name' field, "
                           "it'll be set by flannel")
        if "ipam" in delegate:
            raise CniError(INVALID_CONFIG, "'delegate' dictionary must not have 'ipam' field, "
                           "it'll be set by flannel")
    return FlannelConf(
        name=string("name", ""), cni_version=str(conf.get("cniVersion") or ""),
        subnet_file=string("subnetFile", DEFAULT_SUBNET_FILE),
        data_dir=string("dataDir", DEFAULT_DATA_DIR), socket_path=socket_path_for(conf),
        delegate=delegate, ipam=obj("ipam"), runtime_config=obj("runtimeConfig"))


def derive_delegate(fc: FlannelConf, env: SubnetEnv) -> dict[str, Any]:
    """The delegate config flannel would build (flannel_linux.go doCmdAdd/getDelegateIPAM)."""
    d = dict(fc.delegate)
    if fc.runtime_config is not None:
        d["runtimeConfig"] = fc.runtime_config
    d["name"] = fc.name
    d.setdefault("type", "bridge")
    d.setdefault("ipMasq", not env.ipmasq)  # flanneld masquerades, or the bridge does
    d.setdefault("mtu", env.mtu)
    if d["type"] == "bridge":
        d.setdefault("isGateway", True)
    if fc.cni_version:
        d["cniVersion"] = fc.cni_version
    d["ipam"] = delegate_ipam(fc.ipam, env)
    return d


def delegate_ipam(ipam: dict[str, Any] | None, env: SubnetEnv) -> dict[str, Any]:
    """flannel's getDelegateIPAM: one range set per family present, IPv4 first; the routes
    are the ipam routes, then FLANNEL_NETWORK, then FLANNEL_IPV6_NETWORK. An IPv6-only
    subnet.env gives one (IPv6) range set and one network route."""
    out = dict(ipam or {})
    out.setdefault("type", "host-local")
    ranges = []
    if env.ipv4_subnet is not None:
        ranges.append([{"subnet": str(env.ipv4_subnet.network)}])
    if env.ipv6_subnet is not None:
        ranges.append([{"subnet": str(env.ipv6_subnet.network)}])
    out["ranges"] = ranges
    routes = out.get("routes") or []
    if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
        raise CniError(INVALID_CONFIG,
                       f"'ipam.routes' must be a list of objects, got {shown(routes)}")
    # Go re-marshals types.Route: only dst and gw survive, in that order.
    normal = [{k: r[k] for k in ("dst", "gw") if r.get(k)} for r in routes]
    if env.ipv4_network is not None:
        normal.append({"dst": str(env.ipv4_network)})
    if env.ipv6_network is not None:
        normal.append({"dst": str(env.ipv6_network)})
    out["routes"] = normal
    return out


def scratch_bytes(delegate: dict[str, Any]) -> bytes:
    """What flannel writes to `<dataDir>/<containerID>`: compact JSON, keys sorted (Go maps)."""
    return json.dumps(delegate, separators=(",", ":"), sort_keys=True).encode()


def requested_ips(cni_args: dict[str, str], d: dict[str, Any]
                  ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """host-local: the union of CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips."""
    raw: list[tuple[str, Any]] = []
    if cni_args.get("IP"):
        raw += [("CNI_ARGS IP", v) for v in cni_args["IP"].split(",") if v]
    args_cni = (d.get("args") or {}).get("cni") or {}
    raw += [("args.cni.ips", v) for v in args_cni.get("ips") or []]
    raw += [("runtimeConfig.ips", v) for v in (d.get("runtimeConfig") or {}).get("ips") or []]
    out = []
    for where, value in raw:
        try:
            out.append(ipaddress.ip_interface(str(value)).ip)
        except ValueError:
            code = INVALID_ENV if where.startswith("CNI_ARGS") else INVALID_CONFIG
            raise CniError(code, f"{where}: {shown(value)} is not an IP address") from None
    return out


def requested_mac(cni_args: dict[str, str], d: dict[str, Any]) -> str:
    """bridge: CNI_ARGS MAC= < args.cni.mac < runtimeConfig.mac ("" if none)."""
    mac, where = cni_args.get("MAC", ""), "CNI_ARGS MAC"
    if ((d.get("args") or {}).get("cni") or {}).get("mac"):
        mac, where = d["args"]["cni"]["mac"], "args.cni.mac"
    if (d.get("runtimeConfig") or {}).get("mac"):
        mac, where = d["runtimeConfig"]["mac"], "runtimeConfig.mac"
    if not mac:
        return ""
    parts = str(mac).split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise CniError(INVALID_ENV if where.startswith("CNI_ARGS") else INVALID_CONFIG,
                       f"{where}: {shown(mac)} is not a MAC address like 0a:58:0a:05:34:02")
    try:
        bytes.fromhex("".join(parts))
    except ValueError:
        raise CniError(INVALID_CONFIG, f"{where}: {shown(mac)} is not a MAC address") from None
    return str(mac).lower()


# The bridge keys we implement; anything else that changes behaviour is refused
# rather than silently ignored (the error names the key and the value).
_UNSUPPORTED_TRUTHY = ("vlan", "macspoofchk", "vlanTrunk", "enabledad", "portIsolation",
                       "disableContainerInterface", "preserveDefaultVlan")


@dataclass(frozen=True)
class BridgeConf:
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    mtu: int
    hairpin: bool
    promisc: bool
    dns: dict[str, Any]


def bridge_conf(d: dict[str, Any]) -> BridgeConf:
    for key in _UNSUPPORTED_TRUTHY:
        if d.get(key):
            raise CniError(UNSUPPORTED_FIELD, f"delegate key {key!r} = {shown(d[key])} is not "
                           "supported by pyflannel's bridge", f"remove {key!r} from 'delegate'")

    def flag(key: str) -> bool:
        value = d.get(key, False)
        if not isinstance(value, bool):
            raise CniError(INVALID_CONFIG, f"delegate key {key!r} must be true or false, "
                           f"got {shown(value)}")
        return value

    bridge = d.get("bridge") or "cni0"
    if not isinstance(bridge, str) or len(bridge.encode()) > 15 or "/" in bridge:
        raise CniError(INVALID_CONFIG, f"delegate key 'bridge' = {shown(bridge)} is not a valid "
                       "interface name (1-15 bytes)")
    mtu = d.get("mtu") or 0
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 0 <= mtu <= 65535:
        raise CniError(INVALID_CONFIG,
                       f"delegate key 'mtu' = {shown(mtu)} must be an integer 68..65535")
    is_default_gw = flag("isDefaultGateway")
    hairpin, promisc = flag("hairpinMode"), flag("promiscMode")
    if hairpin and promisc:
        raise CniError(INVALID_CONFIG, "cannot set hairpin mode and promiscuous mode at the same "
                       "time", "set only one of 'hairpinMode' and 'promiscMode'")
    dns = d.get("dns") or {}
    if not isinstance(dns, dict):
        raise CniError(INVALID_CONFIG, f"'dns' must be a JSON object, got {shown(dns)}")
    return BridgeConf(bridge=bridge, is_gateway=flag("isGateway") or is_default_gw,
                      is_default_gateway=is_default_gw, force_address=flag("forceAddress"),
                      ip_masq=flag("ipMasq"), mtu=mtu, hairpin=hairpin, promisc=promisc, dns=dns)
