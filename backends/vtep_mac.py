"""The VtepMAC's own rules, pure: the persisted file bound to this node, and who yields a clash.

A node cloned with its state directory (one image, many VMs) would otherwise
bring the same `vtep-mac.flannel.<VNI>` up on every clone: every node then
publishes the same VtepMAC, each peer's FDB can point that MAC at only one of
them, and cross-node pod traffic silently black-holes. Two guards:

- the file names the node that wrote it (`node_identity`: machine-id, public IP,
  hostname), so a copy on another node is not reused (`read_mac_file`); a file of
  the old one-line format is adopted once and rewritten bound;
- when a live peer lease carries our VtepMAC anyway (a legacy file cloned, a MAC
  set by hand, a random collision), exactly one side of each pair changes
  (`must_yield`): the newer lease (higher etcd mod revision), or, when the
  revisions cannot tell, the higher PublicIP. The older holder keeps the MAC the
  other nodes are already programmed with, so the cluster converges.

The I/O (reading /etc/machine-id, the file, the device) is in backends.vxlan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from core.lease import Lease, LeaseError, check_vxlan_attrs

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IDENTITY_PREFIX = "node "


def is_unicast_mac(text: str) -> bool:
    return bool(MAC_RE.fullmatch(text)) and not int(text[:2], 16) & 1


def node_identity(machine_id: str | None, public_ip: str, hostname: str) -> str:
    """What makes this node this node. The public IP is part of it: lab hosts (and some
    cloned VMs) share /etc/machine-id, never their address."""
    mid = (machine_id or "").strip() or "-"
    return f"machine-id={mid} public-ip={public_ip} hostname={hostname.strip() or '-'}"


def render_mac_file(mac: str, identity: str) -> str:
    """`<mac>\\nnode <identity>\\n`: the first line alone is the old format (still read)."""
    return f"{mac}\n{_IDENTITY_PREFIX}{identity}\n"


@dataclass(frozen=True)
class MacFile:
    """What a persisted MAC file says, judged against this node's identity."""

    mac: str | None  # the MAC to use, or None
    status: str  # "bound" (ours), "legacy" (no identity: adopt once), "foreign", "invalid"
    detail: str = ""  # for the log: the foreign identity, or the bad text


def read_mac_file(text: str, identity: str) -> MacFile:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    mac = lines[0].lower() if lines else ""
    if not is_unicast_mac(mac):
        return MacFile(None, "invalid", f"{mac!r} is not a unicast MAC")
    if len(lines) == 1:
        return MacFile(mac, "legacy")
    rest = lines[1]
    if not rest.startswith(_IDENTITY_PREFIX) or len(lines) > 2:
        return MacFile(None, "invalid", f"unexpected {rest!r} after the MAC")
    written_by = rest[len(_IDENTITY_PREFIX):].strip()
    if written_by != identity:
        return MacFile(None, "foreign", written_by)
    return MacFile(mac, "bound")


# --- a live peer holds our VtepMAC ----------------------------------------------------------


Address = IPv4Address | IPv6Address


def _older(a_rev: int, a_ip: Address, b_rev: int, b_ip: Address) -> bool:
    """Does holder a keep the MAC against holder b? The same answer on both nodes."""
    if a_rev and b_rev and a_rev != b_rev:
        return a_rev < b_rev
    return int(a_ip) < int(b_ip)


def _public(p: Lease, v6: bool) -> Address | None:
    return p.attrs.public_ipv6 if v6 else p.attrs.public_ip


def holders(mac: str, vni: int, own_key: str, own_ip: Address | None,
            peers: Iterable[Lease], *, v6: bool = False) -> list[Lease]:
    """Peer leases (vxlan, same VNI, another node) whose VtepMAC is `mac`, by key.
    `v6`: the MAC and VNI of BackendV6Data, the node told apart by PublicIPv6."""
    mac = mac.lower()
    found = []
    for p in peers:
        a = p.attrs
        if p.key == own_key or a.backend_type != "vxlan" or _public(p, v6) in (own_ip, None):
            continue  # our own (or a stale lease of ours), or not in our overlay
        try:
            if check_vxlan_attrs(a, v6=v6) != (vni, mac):
                continue
        except LeaseError:
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.key)


def must_yield(own_rev: int, own_ip: Address, clashing: Iterable[Lease], *,
               v6: bool = False) -> Lease | None:
    """The holder we give the MAC up to (the oldest one older than us), or None: we keep it.

    `own_rev` is our lease's etcd mod revision (0: unknown); see `_older`. `holders`
    only returns leases with a public address of the family asked for.
    """
    def ip(p: Lease) -> Address:
        a = _public(p, v6)
        assert a is not None
        return a
    older = [p for p in clashing if _older(p.mod_revision, ip(p), own_rev, own_ip)]
    if not older:
        return None
    return min(older, key=lambda p: (p.mod_revision or 1 << 62, int(ip(p))))


def fresh_mac(random_mac: str, taken: Iterable[str]) -> str | None:
    """`random_mac` unless a peer already has it (then None: draw again)."""
    return None if random_mac in {t.lower() for t in taken} else random_mac
