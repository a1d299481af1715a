"""`flannelctl doctor`'s IPv6 checks, pure over what `_node` read (IPv6 enabled only).

v6-lease: our lease's IPv6 half against subnet.env and the device; v6-device:
flannel-v6.<VNI> as flanneld makes it; v6-peers/-skipped/-strays: every peer's IPv6
entries (the same verdicts as the IPv4 side); ip6-forward. Each finding says what
is wrong and, where one command repairs it, that command.
"""

from __future__ import annotations

from ipaddress import IPv6Interface

from backends.vxlan6 import VXLAN6_OVERHEAD
from flanneld.ctl._common import vtep_mac_v6
from flanneld.ctl._node import NodeView
from flanneld.ctl._node6 import View6
from flanneld.ctl.findings import FAIL, OK, SKIP, Finding, peer_findings

REPAIRS = "or wait one --resync-interval: flanneld repairs all of these"


def _v6(view: NodeView) -> View6:
    if view.v6 is None:
        raise ValueError("the IPv6 checks run only when the network config enables IPv6")
    return view.v6


def check_lease6(view: NodeView) -> Finding:
    v6, env = _v6(view), view.subnet_env
    if env is None:
        return Finding("v6-lease", SKIP, "no subnet.env")
    if env.ipv6_subnet is None:
        return Finding("v6-lease", FAIL, "subnet.env has no FLANNEL_IPV6_SUBNET, but the "
                       f"network config enables IPv6 (IPv6Network {v6.network})")
    sub6 = env.ipv6_subnet.network
    own = view.own.lease if view.own else None
    if own is None:
        return Finding("v6-lease", FAIL if not view.ipv4 else SKIP,
                       f"no lease for {sub6} in etcd" if not view.ipv4
                       else "no lease of ours (see the lease check)")
    if own.ipv6_subnet != sub6:
        return Finding("v6-lease", FAIL, f"our lease {own.key} has IPv6 subnet "
                       f"{own.ipv6_subnet or 'none'}; subnet.env says {sub6}")
    ip6 = own.attrs.public_ipv6
    if ip6 is None:
        ext = view.ext_name or "the external interface"
        return Finding("v6-lease", FAIL, f"our lease {own.key} has PublicIPv6 null: no peer "
                       f"can reach {sub6}",
                       fix=f"give {ext} a global IPv6 address (or pass --public-ipv6), then "
                       "restart flanneld")
    detail = f"{sub6}, PublicIPv6 {ip6}"
    if view.backend == "vxlan":
        mac, dev = vtep_mac_v6(own.attrs), v6.device
        if mac is None:
            return Finding("v6-lease", FAIL, f"our lease {own.key} has no BackendV6Data "
                           f"VtepMAC: peers do not program {sub6}")
        if dev is not None and dev.mac != mac:
            return Finding("v6-lease", FAIL, f"our lease's BackendV6Data VtepMAC is {mac}, "
                           f"but {dev.name} has MAC {dev.mac}: peers send IPv6 pod traffic "
                           "to a MAC nobody has",
                           fix="restart flanneld (it restores the device's MAC or "
                           "republishes the lease)")
        detail += f", VtepMAC {mac}"
    return Finding("v6-lease", OK, detail)


def device6_mtu(view: NodeView, config_mtu: int | None) -> int | None:
    """flannel-v6.N's MTU as flanneld sets it (None: the underlay's is not known)."""
    base = config_mtu or view.ext_mtu
    return base - VXLAN6_OVERHEAD if base else None


def check_device6(view: NodeView, config_mtu: int | None) -> Finding | None:
    """flannel-v6.<VNI> against what flanneld makes (None: the backend has no IPv6 device)."""
    v6 = _v6(view)
    if view.backend != "vxlan":
        return None
    name, dev = v6.device_name, v6.device
    if dev is None:
        ext = view.ext_name or "the external interface"
        return Finding("v6-device", FAIL, f"{name} does not exist: no IPv6 pod traffic leaves "
                       "this node",
                       fix=f"restart flanneld (it creates {name} at start-up; its log says "
                       f"why it could not, e.g. no global IPv6 address on {ext})")
    problems: list[str] = []
    fixes: list[str] = []
    if not dev.up:
        problems.append(f"{name} is DOWN")
        fixes.append(f"ip link set {name} up")
    want = device6_mtu(view, config_mtu)
    if want is not None and dev.mtu != want:
        problems.append(f"{name} MTU {dev.mtu}, want {want} ({view.ext_name} {view.ext_mtu} "
                        f"- {VXLAN6_OVERHEAD} for VXLAN over IPv6)"
                        if not config_mtu else f"{name} MTU {dev.mtu}, want {want}")
        fixes.append(f"ip link set {name} mtu {want}")
    if v6.public_ipv6 is not None and dev.local != v6.public_ipv6.compressed:
        problems.append(f"{name} sends from {dev.local or 'no address'}, but our lease's "
                        f"PublicIPv6 is {v6.public_ipv6}")
        fixes.append("restart flanneld (it re-creates the device with the right local)")
    if v6.subnet is not None:
        addr = f"{v6.subnet.network_address.compressed}/128"
        if addr not in v6.addresses:
            problems.append(f"{name} lacks its address {addr} (our IPv6 subnet's)")
            fixes.append(f"ip -6 addr add {addr} dev {name} nodad")
        assert v6.network is not None
        for other in v6.addresses:
            if other != addr and _inside(other, v6) and not other.startswith("fe80:"):
                problems.append(f"{name} also has {other}, which is not ours")
                fixes.append(f"ip -6 addr del {other} dev {name}")
    if v6.accept_ra not in (None, "0"):
        problems.append(f"{name} accept_ra is {v6.accept_ra}, want 0 (router advertisements "
                        "would add addresses and routes to it)")
        fixes.append(f"sysctl -w net.ipv6.conf.{name.replace('.', '/')}.accept_ra=0")
    if problems:
        return Finding("v6-device", FAIL, "; ".join(problems), fix="; ".join(fixes)
                       + f" ({REPAIRS})")
    return Finding("v6-device", OK, f"{name} up, MTU {dev.mtu}, local {dev.local}, "
                   f"{', '.join(a for a in v6.addresses if not a.startswith('fe80:'))}, "
                   f"accept_ra {v6.accept_ra}")


def _inside(cidr: str, v6: View6) -> bool:
    return v6.network is not None and IPv6Interface(cidr).ip in v6.network


def check_peers6(view: NodeView) -> list[Finding]:
    v6 = _v6(view)
    names = ("v6-peers", "v6-skipped", "v6-strays")
    own = view.own.lease if view.own else None
    why = ("no subnet.env" if view.subnet_env is None else "no lease of ours in etcd"
           if own is None else "no IPv6 subnet in our lease" if own.ipv6_subnet is None
           else "external interface not found (no device, no interface with our address)"
           if not view.ext_index else "")
    if why:
        return [Finding(n, SKIP, why) for n in names]
    return peer_findings(v6.checks, v6.strays, names, "IPv6")


def check_forward6(value: str | None) -> Finding:
    return Finding("ip6-forward", OK if value == "1" else FAIL,
                   f"net.ipv6.conf.all.forwarding = {value}")
