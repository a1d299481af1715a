"""The bridge plugin's kernel work: bridge, veth pair, pod addresses and routes (netlink).

Same effects as the reference bridge plugin (containernetworking/plugins
bridge.go), in fewer round trips: the host end is created up and enslaved in
one message, its peer is created straight in the pod's netns, and the pod side
(up, arp_notify, addresses, routes) is one batched datagram.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from _socket import AF_INET, AF_INET6  # not `socket`: it imports enum and selectors
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cni.delegate import BridgeConf
from cni.protocol import INTERNAL, INVALID_NETNS, CniError
from netlink import messages as m
from netlink.netns import entered
from netlink.rtnl import RtNetlink

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

Deferred = Callable[[RtNetlink], None]  # work for a background thread, given its netlink
_OPER_WAIT = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.0)


def random_mac() -> str:
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return m.mac_str(bytes(raw))


def random_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


@dataclass
class PodAddr:
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None


@dataclass
class PodRoute:
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None


@dataclass
class BridgeCache:
    """Bridges recently checked (kind, up, gateway addresses), so an ADD skips the lookup.

    An entry is trusted for TTL seconds, then checked again, so a bridge that
    someone flushed or recreated is repaired within that time; a veth creation
    that fails on a stale index drops the entry at once (see `forget`).
    """

    TTL = 10.0
    entries: dict[str, tuple[m.LinkRow, frozenset[str], float]] = field(default_factory=dict)

    def get(self, name: str, wanted: frozenset[str]) -> m.LinkRow | None:
        hit = self.entries.get(name)
        if hit is None or not wanted <= hit[1] or time.monotonic() - hit[2] > self.TTL:
            return None
        return hit[0]

    def forget(self, name: str) -> None:
        self.entries.pop(name, None)


def open_netns(path: str) -> int:
    """An fd for CNI_NETNS; code 8 if it is missing, not a netns, or our own."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(INVALID_NETNS, f'failed to open netns "{path}": {exc.strerror}',
                       "CNI_NETNS must name an existing network namespace") from None
    st, own = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
    if st.st_dev != own.st_dev or _ns_type(fd) != m.CLONE_NEWNET:
        os.close(fd)
        raise CniError(INVALID_NETNS, f'"{path}" is not a network namespace',
                       "CNI_NETNS must be a netns file such as /run/netns/<name>")
    if st.st_ino == own.st_ino:
        os.close(fd)
        raise CniError(INVALID_NETNS, f'netns "{path}" is the plugin\'s own network namespace',
                       "CNI_NETNS must be the container's namespace, not the host's")
    return fd


def _ns_type(fd: int) -> int:
    """NS_GET_NSTYPE: which kind of namespace an nsfs fd is (a mount ns passes the fstat)."""
    import fcntl
    try:
        return fcntl.ioctl(fd, m.NS_GET_NSTYPE)
    except OSError:
        return 0


def _sysctl(path: str, value: str) -> None:
    """Write a /proc/sys value if it differs (per-netns: the calling thread's namespace)."""
    try:
        with open(path, "r+") as f:
            if f.read().strip() != value:
                f.seek(0)
                f.write(value)
    except FileNotFoundError:
        pass


def ensure_bridge(host: RtNetlink, bc: BridgeConf, gateways: Sequence[PodAddr],
                  cache: BridgeCache) -> m.LinkRow:
    """The bridge, up, with the gateway address(es) when isGateway (bridge.go ensureBridge)."""
    wanted = frozenset(str(g.address) for g in gateways)
    cached = cache.get(bc.bridge, wanted)
    if cached is not None:
        return cached
    br = host.link(bc.bridge)
    if br is None:
        err = host.batch([m.msg_new_bridge(bc.bridge, bc.mtu, random_mac())])[0]
        if err is not None and err.errno != errno.EEXIST:
            raise CniError(INTERNAL, f"could not add bridge {bc.bridge!r}: {err.strerror}")
        br = host.link(bc.bridge)
        if br is None:
            raise CniError(INTERNAL, f"bridge {bc.bridge!r} vanished right after creation")
        _sysctl(f"/proc/sys/net/ipv6/conf/{bc.bridge}/accept_ra", "0")
    if br.kind != "bridge":
        raise CniError(INTERNAL, f"{bc.bridge!r} already exists but is not a bridge "
                       f"(kind {br.kind or 'unknown'!r})",
                       "pick another 'bridge' name in the delegate config or remove the link")
    if not br.flags & m.IFF_UP:
        host.check(*m.msg_up(br.ifindex))
    for g in gateways:
        _ensure_gateway_addr(host, br, g.address, bc.force_address)
    if bc.promisc:
        host.check(*m.msg_promisc(br.ifindex))
    cache.entries[bc.bridge] = (br, wanted, time.monotonic())
    return br


def _ensure_gateway_addr(host: RtNetlink, br: m.LinkRow,
                         want: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                         force: bool) -> None:
    family = AF_INET if want.version == 4 else AF_INET6
    for a in host.addrs(br.ifindex, family):
        have = ipaddress.ip_interface((a.address, a.prefixlen))
        if have == want:
            return
        clash = want.version == 4 or want.ip in have.network or have.ip in want.network
        if clash and not force:
            raise CniError(INTERNAL, f'"{br.name}" already has an IP address different from '
                           f"{want}", "set forceAddress in the delegate config to replace it")
        if clash:
            host.check(*m.msg_del_addr(br.ifindex, family, a.address, a.prefixlen))
    err = host.batch([m.msg_new_addr(br.ifindex, family, want.ip.packed, want.network.prefixlen,
                                      nodad=True)])[0]
    if err is not None and err.errno != errno.EEXIST:
        raise CniError(INTERNAL, f"could not add {want} to bridge {br.name}: {err.strerror}")


def enable_forwarding(families: set[int]) -> None:
    """net.ipv4.ip_forward=1 (and IPv6 forwarding) in the host netns, as isGateway does."""
    if 4 in families:
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    if 6 in families:
        _sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def create_veth(host: RtNetlink, br: m.LinkRow, host_name: str, ifname: str, netns_fd: int,
                mtu: int, pod_mac: str, hairpin: bool) -> tuple[str, int]:
    """The pair (and hairpin on its port, same datagram): (host MAC, pod ifindex or 0).

    The creation is echoed back, which tells the peer's index (IFLA_LINK), so the
    pod side needs no lookup. A failed creation raises its NetlinkError unchanged
    (EEXIST is the caller's).
    """
    host_mac = random_mac()
    kind, flags, body = m.msg_new_veth(host_name, host_mac, mtu, br.ifindex, ifname, pod_mac,
                                        netns_fd)
    msgs = [(kind, flags | m.NLM_F_ECHO, body)]
    if hairpin:
        msgs.append(m.msg_hairpin(0, True, name=host_name))
    echoed: list[tuple[int, bytes]] = []
    errors = host.batch(msgs, echoed)
    if errors[0] is not None:
        raise errors[0]
    if hairpin and errors[1] is not None:
        raise CniError(INTERNAL, f"setting hairpin mode on {host_name}: {errors[1].strerror}")
    peers = [m.parse_link(b, 0, len(b)).peer_index for k, b in echoed if k == m.RTM_NEWLINK]
    return host_mac, next((p for p in peers if p), 0)


def pod_exists(netns_fd: int, ifname: str) -> bool:
    with RtNetlink(netns_fd) as pod:
        return pod.link(ifname) is not None


def configure_pod(netns_fd: int, ifname: str, index: int, addrs: Sequence[PodAddr],
                  routes: Sequence[PodRoute]) -> None:
    """Inside the pod: up, arp_notify=1, addresses, routes via the gateway (+accept_dad=0).

    `index` is the pod interface's ifindex if known (0: look it up by name).
    """
    with entered(netns_fd):
        pod = RtNetlink()
        if any(a.address.version == 6 for a in addrs):  # as bridge does (IPv4-only: moot)
            _sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad", "0")
    with pod:
        if not index:
            link = pod.link(ifname)
            if link is None:
                raise CniError(INTERNAL, f"{ifname} vanished from the pod's netns during ADD")
            index = link.ifindex
        msgs = [m.msg_up(index), m.msg_inet_conf(index, {m.IPV4_DEVCONF_ARP_NOTIFY: 1})]
        for a in addrs:
            family = AF_INET if a.address.version == 4 else AF_INET6
            msgs.append(m.msg_new_addr(index, family, a.address.ip.packed,
                                        a.address.network.prefixlen, nodad=True))
        for r in routes:
            gw = r.gw or next((a.gateway for a in addrs
                               if a.address.version == r.dst.version and a.gateway), None)
            family = AF_INET if r.dst.version == 4 else AF_INET6
            msgs.append(m.msg_new_route(index, family, r.dst.network_address.packed,
                                         r.dst.prefixlen, gw.packed if gw else None))
        for msg, err in zip(msgs, pod.batch(msgs), strict=True):
            if err is not None:
                raise CniError(INTERNAL, f"configuring {ifname} in the pod: {_describe(msg)}: "
                               f"{err.strerror}")


def _describe(msg: tuple[int, int, bytes]) -> str:
    return {m.RTM_NEWLINK: "link setup", m.RTM_NEWADDR: "adding an address",
            m.RTM_NEWROUTE: "adding a route"}.get(msg[0], "request")


def wait_port_up(host: RtNetlink, host_name: str) -> None:
    """The reference waits for the host veth to be oper-up before returning; so do we."""
    for delay in _OPER_WAIT:
        if delay:
            time.sleep(delay)
        link = host.link(host_name)
        if link is not None and link.operstate == m.IF_OPER_UP:
            return
    raise CniError(INTERNAL, f"bridge port in error state: {host_name} did not come up")


def remove_host_veth(host: RtNetlink, name: str,
                     later: Callable[[Deferred], None] | None) -> None:
    """Take the pair down now (the pod is cut off at once); delete it now or via `later`.

    Deleting a veth waits for an RCU grace period (~15-25 ms here); a server
    hands that wait to a background thread.
    """
    link = host.link(name)
    if link is None or link.kind != "veth":
        return
    if later is None:
        host.delete_link(index=link.ifindex)
        return
    try:
        host.set_down(link.ifindex)
    except m.NetlinkError as exc:
        if exc.errno not in (errno.ENODEV, errno.ENOENT):
            raise
        return
    index = link.ifindex

    def delete(reaper: RtNetlink) -> None:
        still = reaper.link(index=index)
        if still is not None and still.name == name:  # not a newcomer that reused the index
            reaper.delete_link(index=index)

    later(delete)


def check(host: RtNetlink, netns_fd: int, bridge: str, host_name: str, ifname: str,
          prev: dict[str, Any]) -> None:
    """CHECK: our links, the pod's addresses and routes against prevResult."""
    br = host.link(bridge)
    if br is None or br.kind != "bridge":
        raise CniError(INTERNAL, f"bridge {bridge} not found or not a bridge")
    hv = host.link(host_name)
    if hv is None or hv.kind != "veth":
        raise CniError(INTERNAL, f"host veth {host_name} not found")
    if hv.master != br.ifindex:
        raise CniError(INTERNAL, f"host veth {host_name} is not attached to {bridge}")
    with RtNetlink(netns_fd) as pod:
        link = pod.link(ifname)
        if link is None:
            raise CniError(INTERNAL, f"Interface name {ifname} not found")
        if link.kind != "veth" or hv.peer_index != link.ifindex:
            raise CniError(INTERNAL, f"{ifname} is not the peer of {host_name}")
        for iface in prev.get("interfaces") or []:
            if iface.get("name") == ifname and iface.get("sandbox") and iface.get("mac"):
                if iface["mac"].lower() != link.mac:
                    raise CniError(INTERNAL, f"Interface {ifname} mac {link.mac} doesn't match "
                                   f"prevResult {iface['mac']}")
        have = {ipaddress.ip_interface((a.address, a.prefixlen))
                for a in pod.addrs(link.ifindex)}
        for entry in prev.get("ips") or []:
            want = ipaddress.ip_interface(entry["address"])
            if want not in have:
                raise CniError(INTERNAL, f"Failed to match addr {want} on interface {ifname}")
        routes = pod.routes(AF_INET) + pod.routes(AF_INET6)
        gws = {ipaddress.ip_address(e["gateway"]).version: ipaddress.ip_address(e["gateway"])
               for e in prev.get("ips") or [] if e.get("gateway")}
        for r in prev.get("routes") or []:
            dst = ipaddress.ip_network(r["dst"])
            gw = ipaddress.ip_address(r["gw"]) if r.get("gw") else gws.get(dst.version)
            found = any(rt.dst_len == dst.prefixlen and rt.oif == link.ifindex
                        and (not dst.prefixlen or rt.dst == dst.network_address.packed)
                        and (gw is None or rt.gateway == gw.packed) for rt in routes)
            if not found:
                raise CniError(INTERNAL, f"Failed to match route {r['dst']} via {gw} "
                               f"on interface {ifname}")
