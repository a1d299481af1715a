"""Links: the RTM_*LINK bodies we send (vxlan device, bridge, veth pair, settings) and the one
link parser. Pure, import-light (the CNI plugin's in-process path loads it).

Bodies come without the nlmsghdr; `msg_*` builders return (type, flags, body)
requests ready for `RtNetlink.batch`/`apply`.
"""

from __future__ import annotations

from _socket import inet_aton, inet_pton  # not `socket`: it imports enum and selectors

from netlink.base import (
    Buf,
    Row,
    iter_attrs,
    mac_bytes,
    mac_str,
    nested,
    rta,
    rta_u8,
    rta_u32,
    strz,
)
from netlink.uapi import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    BE16,
    IFF_PROMISC,
    IFF_UP,
    IFINFOMSG,
    IFLA_ADDRESS,
    IFLA_AF_SPEC,
    IFLA_BRPORT_MODE,
    IFLA_IFNAME,
    IFLA_INET_CONF,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_INFO_SLAVE_DATA,
    IFLA_INFO_SLAVE_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    IFLA_OPERSTATE,
    IFLA_TXQLEN,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_NEWLINK,
    U32,
    VETH_INFO_PEER,
    VX_GBP,
    VX_ID,
    VX_L2MISS,
    VX_L3MISS,
    VX_LEARNING,
    VX_LINK,
    VX_LOCAL,
    VX_LOCAL6,
    VX_PORT,
    VX_PROXY,
    VX_RSC,
    VX_TOS,
    VX_TTL,
    VX_UDP_ZERO_CSUM6_RX,
    VX_UDP_ZERO_CSUM6_TX,
)

Request = tuple[int, int, bytes]  # (type, flags, body) of one request


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC) -> bytes:
    """An ifinfomsg header."""
    return IFINFOMSG.pack(family, 0, index, flags, change)


def link_by(name: str | None, index: int) -> bytes:
    """An ifinfomsg addressing a link by index, or (index 0) by name (CNI's GET/DEL)."""
    return ifinfo(index) + (strz(IFLA_IFNAME, name) if name and not index else b"")


# --- the backends' bodies ---------------------------------------------------------------------


def link_get_body(name: str | None = None, index: int = 0) -> bytes:
    body = ifinfo(index)
    return body + rta(IFLA_IFNAME, name.encode() + b"\0") if name else body


def link_set_body(index: int, *, up: bool | None = None, mtu: int | None = None,
                  mac: str | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = ifinfo(index, flags, change)
    if mtu is not None:
        body += rta_u32(IFLA_MTU, mtu)
    if mac is not None:
        body += rta(IFLA_ADDRESS, mac_bytes(mac))
    return body


def vxlan_create_body(name: str, *, vni: int, local: str, link: int, port: int, learning: bool,
                      gbp: bool, mtu: int, mac: str) -> bytes:
    """The RTM_NEWLINK flannel's netlink library sends for its vxlan device (compat §3.1);
    an IPv6 `local` (flannel-v6.<VNI>) goes in LOCAL6."""
    local_attr = (rta(VX_LOCAL6, inet_pton(AF_INET6, local)) if ":" in local
                  else rta(VX_LOCAL, inet_aton(local)))
    data = (rta_u32(VX_ID, vni) + rta_u32(VX_LINK, link) + local_attr
            + rta_u8(VX_TTL, 0) + rta_u8(VX_TOS, 0) + rta_u8(VX_LEARNING, int(learning))
            + rta_u8(VX_PROXY, 0) + rta_u8(VX_RSC, 0) + rta_u8(VX_L2MISS, 0)
            + rta_u8(VX_L3MISS, 0) + rta_u8(VX_UDP_ZERO_CSUM6_TX, 0)
            + rta_u8(VX_UDP_ZERO_CSUM6_RX, 0))
    if gbp:
        data += rta(VX_GBP, b"")
    if port > 0:  # otherwise the kernel default, 8472
        data += rta(VX_PORT, BE16.pack(port))
    info = rta(IFLA_INFO_KIND, b"vxlan") + rta(IFLA_INFO_DATA, data)
    return (ifinfo() + rta(IFLA_IFNAME, name.encode() + b"\0") + rta_u32(IFLA_MTU, mtu)
            + rta_u32(IFLA_TXQLEN, 0) + rta(IFLA_ADDRESS, mac_bytes(mac))
            + rta(IFLA_LINKINFO, info))


# --- the CNI plugin's requests ----------------------------------------------------------------


def msg_new_bridge(name: str, mtu: int, mac: str) -> Request:
    body = (ifinfo(0, IFF_UP, IFF_UP) + strz(IFLA_IFNAME, name) + rta(IFLA_ADDRESS, mac_bytes(mac))
            + (rta_u32(IFLA_MTU, mtu) if mtu else b"")
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_KIND, "bridge")))
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body


def msg_new_veth(name: str, mac: str, mtu: int, master: int, peer_name: str, peer_mac: str,
                 peer_netns_fd: int) -> Request:
    """A veth pair, host end up and enslaved, peer created (down) straight in its netns.

    The peer cannot be created up: veth_open() refuses (ENOTCONN) until the
    pair is linked, which happens after the peer is configured.
    """
    mtu_attr = rta_u32(IFLA_MTU, mtu) if mtu else b""
    peer = (ifinfo() + strz(IFLA_IFNAME, peer_name)
            + rta(IFLA_ADDRESS, mac_bytes(peer_mac)) + mtu_attr
            + rta_u32(IFLA_NET_NS_FD, peer_netns_fd))
    body = (ifinfo(0, IFF_UP, IFF_UP) + strz(IFLA_IFNAME, name) + rta(IFLA_ADDRESS, mac_bytes(mac))
            + mtu_attr + rta_u32(IFLA_MASTER, master)
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_KIND, "veth"),
                     nested(IFLA_INFO_DATA, rta(VETH_INFO_PEER, peer))))
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body


def msg_hairpin(index: int, on: bool, name: str = "") -> Request:
    """Hairpin on a bridge port, by index or (index 0) by name: batchable with its creation."""
    body = (link_by(name, index)
            + nested(IFLA_LINKINFO, strz(IFLA_INFO_SLAVE_KIND, "bridge"),
                     nested(IFLA_INFO_SLAVE_DATA, rta(IFLA_BRPORT_MODE, bytes([int(on)])))))
    return RTM_NEWLINK, 0, body


def msg_up(index: int) -> Request:
    return RTM_NEWLINK, 0, ifinfo(index, IFF_UP, IFF_UP)


def msg_down(index: int) -> Request:
    return RTM_NEWLINK, 0, ifinfo(index, 0, IFF_UP)


def msg_promisc(index: int) -> Request:
    return RTM_NEWLINK, 0, ifinfo(index, IFF_PROMISC, IFF_PROMISC)


def msg_inet_conf(index: int, values: dict[int, int]) -> Request:
    conf = nested(IFLA_INET_CONF, *(rta_u32(k, v) for k, v in values.items()))
    return RTM_NEWLINK, 0, ifinfo(index) + nested(IFLA_AF_SPEC, nested(AF_INET, conf))


# --- the one parser ---------------------------------------------------------------------------


class LinkRow(Row):
    ifindex: int
    flags: int
    name: str
    mtu: int
    mac: str
    kind: str
    info: dict[int, bytes]  # IFLA_INFO_DATA attributes by type
    master: int = 0  # IFLA_MASTER: the bridge (or bond) it is enslaved to
    operstate: int = 0  # IFLA_OPERSTATE (IF_OPER_UP ...)
    peer_index: int = 0  # IFLA_LINK: a veth's peer, as an index in the peer's namespace


def parse_link(buf: Buf, off: int, end: int) -> LinkRow:
    """An RTM_NEWLINK body (buf[off:end]) as a LinkRow."""
    _, _, index, flags, _ = IFINFOMSG.unpack_from(buf, off)
    name = mac = kind = ""
    mtu = master = operstate = peer = 0
    info: dict[int, bytes] = {}
    unpack_u32 = U32.unpack_from
    for k, a, b in iter_attrs(buf, off + IFINFOMSG.size, end):
        if k == IFLA_IFNAME:
            name = bytes(buf[a:b]).rstrip(b"\0").decode()
        elif k == IFLA_MTU:
            mtu = unpack_u32(buf, a)[0]
        elif k == IFLA_ADDRESS:
            mac = mac_str(buf[a:b])
        elif k == IFLA_MASTER:
            master = unpack_u32(buf, a)[0]
        elif k == IFLA_LINK:
            peer = unpack_u32(buf, a)[0]
        elif k == IFLA_OPERSTATE:
            operstate = buf[a]
        elif k == IFLA_LINKINFO:
            for k2, a2, b2 in iter_attrs(buf, a, b):
                if k2 == IFLA_INFO_KIND:
                    kind = bytes(buf[a2:b2]).rstrip(b"\0").decode()
                elif k2 == IFLA_INFO_DATA:
                    info = {k3: bytes(buf[a3:b3]) for k3, a3, b3 in iter_attrs(buf, a2, b2)}
    return LinkRow(index, flags, name, mtu, mac, kind, info, master, operstate, peer)
