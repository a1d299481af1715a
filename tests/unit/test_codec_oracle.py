"""pyroute2 is the oracle of our netlink codec (issue 11), without root.

Our encoder (netlink/) is ~100x faster than pyroute2's message classes on the hot
path, so it stays; these property tests hold it against pyroute2's independent
reading of the same bytes:

- every request we encode (neighbour and FDB add/del, IPv4 routes add/del, the CNI's
  routes and addresses in both families, the vxlan device, bridge, veth, link settings,
  dump requests) decodes with pyroute2's parser (`ndmsg`, `rtmsg`, `ifaddrmsg`,
  `ifinfmsg`) to the fields we meant, every byte accounted for;
- every message pyroute2 encodes, in the kernel's attribute order or any other, is
  read by our parsers (fast paths and general walks alike) to the same fields.

The kernel's side (real dumps read by both) is tests/kernel/test_dump_oracle.py.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2.netlink import nla
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg, states
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from backends.vxlan import link_state
from flanneld.iface import parse_addr6
from netlink import messages as m

ORACLE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generated entries ------------------------------------------------------------------------

ifindex = st.integers(1, 2**31 - 1)
ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1)).map(str)
ipv6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
FAMILY: dict[int, tuple[int, int, st.SearchStrategy[Any]]] = {  # version -> family, bits, addr
    4: (socket.AF_INET, 32, st.builds(IPv4Address, st.integers(0, 2**32 - 1))),
    6: (socket.AF_INET6, 128, ipv6)}
mac = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))
u8 = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)
# Names the kernel would accept: 1..15 printable bytes without '/', ':' or whitespace.
ifname = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                               blacklist_characters="/:%"), min_size=1, max_size=15)


def decode(cls: type, req: tuple[int, int, bytes]) -> Any:
    """pyroute2's reading of one of our requests, framed as the socket frames it."""
    kind, flags, body = req
    raw = m.nlmsg(kind, m.NLM_F_REQUEST | flags, 7, body)
    msg = cls(raw)
    msg.decode()
    hdr = msg["header"]
    assert (hdr["length"], hdr["type"], hdr["sequence_number"]) == (len(raw), kind, 7)
    assert hdr["flags"] == m.NLM_F_REQUEST | flags
    assert len(raw) % 4 == 0  # every attribute padded
    return msg


ADDRESSES = {"NDA_DST", "RTA_DST", "RTA_GATEWAY", "IFA_LOCAL", "IFA_ADDRESS",
             "IFLA_VXLAN_LOCAL"}


def attrs(msg: Any) -> list[tuple[str, Any]]:
    """(name, value) of each attribute at this level (unknown ones show as such); addresses in
    Python's canonical text (inet_ntop writes ::0.1.0.0 where ipaddress writes ::1:0)."""
    return [(a[0], str(ip_address(a[1])) if a[0] in ADDRESSES else a[1]) for a in msg["attrs"]]


def names(msg: Any) -> list[str]:
    return [a[0] for a in msg["attrs"]]


def encoded(msg: Any, kind: int) -> bytes:
    """pyroute2's bytes for a message it built (header included)."""
    msg["header"]["type"] = kind
    msg.encode()
    return bytes(msg.data[:msg["header"]["length"]])


# --- neighbours and FDB entries (backends/engine.py's hot path) -------------------------------


@ORACLE
@given(ifindex, ipv4, mac)
def test_neighbour_add_and_delete(dev: int, ip: str, lladdr: str) -> None:
    add = decode(ndmsg, (m.RTM_NEWNEIGH, m.NLM_F_CREATE | m.NLM_F_REPLACE,
                         m.neigh_body(dev, ip, lladdr)))
    assert (add["family"], add["ifindex"], add["state"], add["flags"], add["ndm_type"]) == (
        socket.AF_INET, dev, m.NUD_PERMANENT, 0, m.RTN_UNICAST)
    assert attrs(add) == [("NDA_DST", ip), ("NDA_LLADDR", lladdr)]
    delete = decode(ndmsg, (m.RTM_DELNEIGH, 0, m.neigh_body(dev, ip, None)))
    assert (delete["family"], delete["ifindex"], delete["state"]) == (
        socket.AF_INET, dev, m.NUD_PERMANENT)
    assert attrs(delete) == [("NDA_DST", ip)]


@ORACLE
@given(ifindex, mac, st.one_of(st.none(), ipv4))
def test_fdb_add_and_delete(dev: int, lladdr: str, dst: str | None) -> None:
    msg = decode(ndmsg, (m.RTM_NEWNEIGH, m.NLM_F_CREATE | m.NLM_F_REPLACE,
                         m.fdb_body(dev, lladdr, dst)))
    assert (msg["family"], msg["ifindex"], msg["state"], msg["flags"], msg["ndm_type"]) == (
        socket.AF_BRIDGE, dev, m.NUD_PERMANENT, m.NTF_SELF, 0)
    want = [("NDA_LLADDR", lladdr)] if dst is None else [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
    assert attrs(msg) == want


@ORACLE
@given(st.sampled_from([socket.AF_INET, socket.AF_BRIDGE]), ifindex)
def test_neighbour_dump_request(family: int, dev: int) -> None:
    msg = decode(ndmsg, (m.RTM_GETNEIGH, m.NLM_F_DUMP, m.neigh_dump_body(family, dev)))
    assert msg["family"] == family
    if family == socket.AF_BRIDGE:  # filtered by the header's ifindex
        assert (msg["ifindex"], attrs(msg)) == (dev, [])
    else:  # filtered by NDA_IFINDEX (strict checking)
        assert (msg["ifindex"], attrs(msg)) == (0, [("NDA_IFINDEX", dev)])


# --- routes -----------------------------------------------------------------------------------


@ORACLE
@given(ipv4, st.integers(0, 32), ipv4, st.integers(0, 2**31 - 1), st.booleans(), u32, u8,
       st.booleans())
def test_route_add_and_delete(dst: str, dst_len: int, gw: str, oif: int, onlink: bool,
                              priority: int, proto: int, delete: bool) -> None:
    body = m.route_body(dst, dst_len, gw, oif, onlink=onlink, priority=priority, proto=proto,
                        delete=delete)
    msg = decode(rtmsg, (m.RTM_DELROUTE if delete else m.RTM_NEWROUTE, 0, body))
    assert (msg["family"], msg["dst_len"], msg["src_len"], msg["tos"]) == (
        socket.AF_INET, dst_len, 0, 0)
    assert (msg["table"], msg["proto"], msg["type"]) == (m.RT_TABLE_MAIN, proto, m.RTN_UNICAST)
    assert msg["scope"] == (m.RT_SCOPE_NOWHERE if delete else m.RT_SCOPE_UNIVERSE)
    assert msg["flags"] == (m.RTNH_F_ONLINK if onlink else 0)
    want = [("RTA_DST", dst), ("RTA_GATEWAY", gw)]
    want += [("RTA_OIF", oif)] if oif else []
    want += [("RTA_PRIORITY", priority)] if priority else []
    assert attrs(msg) == want


@ORACLE
@given(st.sampled_from([4, 6]), st.data())
def test_cni_route_both_families(version: int, data: st.DataObject) -> None:
    family, top, addr = FAMILY[version]
    dst = data.draw(addr)
    dst_len = data.draw(st.integers(0, top))
    gw = data.draw(st.one_of(st.none(), addr))
    oif = data.draw(ifindex)
    msg = decode(rtmsg, m.msg_new_route(oif, family, dst.packed, dst_len,
                                        gw.packed if gw is not None else None))
    assert (msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["type"]) == (
        family, dst_len, m.RT_TABLE_MAIN, m.RTPROT_BOOT, m.RTN_UNICAST)
    assert msg["scope"] == (m.RT_SCOPE_UNIVERSE if gw is not None else m.RT_SCOPE_LINK)
    want: list[tuple[str, Any]] = [("RTA_DST", str(dst))] if dst_len else []
    want += [("RTA_OIF", oif)]
    want += [("RTA_GATEWAY", str(gw))] if gw is not None else []
    assert attrs(msg) == want


@ORACLE
@given(st.sampled_from([socket.AF_INET, socket.AF_INET6]), u8)
def test_route_dump_request(family: int, table: int) -> None:
    msg = decode(rtmsg, (m.RTM_GETROUTE, m.NLM_F_DUMP, m.route_dump_body(table, family)))
    assert (msg["family"], msg["table"], attrs(msg)) == (family, table, [])


# --- addresses --------------------------------------------------------------------------------


@ORACLE
@given(ifindex, ipv4, st.integers(0, 32))
def test_vxlan_device_address(dev: int, ip: str, plen: int) -> None:
    for kind in (m.RTM_NEWADDR, m.RTM_DELADDR):
        msg = decode(ifaddrmsg, (kind, 0, m.addr_body(dev, ip, plen)))
        assert (msg["family"], msg["prefixlen"], msg["index"], msg["scope"]) == (
            socket.AF_INET, plen, dev, m.RT_SCOPE_UNIVERSE)
        assert attrs(msg) == [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]


@ORACLE
@given(st.sampled_from([4, 6]), st.data(), st.integers(1, 2**32 - 1), st.booleans())
def test_cni_address_add_and_delete(version: int, data: st.DataObject, index: int,
                                    nodad: bool) -> None:
    family, top, any_addr = FAMILY[version]
    addr = data.draw(any_addr)
    plen = data.draw(st.integers(0, top))
    add = decode(ifaddrmsg, m.msg_new_addr(index, family, addr.packed, plen, nodad))
    flags = m.IFA_F_PERMANENT | (m.IFA_F_NODAD if nodad else 0)
    assert (add["family"], add["prefixlen"], add["index"], add["flags"]) == (
        family, plen, index, flags)
    assert attrs(add) == [("IFA_LOCAL", str(addr)), ("IFA_ADDRESS", str(addr)),
                          ("IFA_FLAGS", flags)]
    delete = decode(ifaddrmsg, m.msg_del_addr(index, family, addr.packed, plen))
    assert (delete["family"], delete["prefixlen"], delete["index"]) == (family, plen, index)
    assert attrs(delete) == [("IFA_LOCAL", str(addr))]


def test_address_dump_request() -> None:
    for family in (socket.AF_INET, socket.AF_INET6):
        msg = decode(ifaddrmsg, (m.RTM_GETADDR, m.NLM_F_DUMP, m.addr_dump_body(9, family)))
        assert (msg["family"], msg["index"], attrs(msg)) == (family, 9, [])


# --- links ------------------------------------------------------------------------------------


def linkinfo(msg: Any) -> Any:
    return msg.get_attr("IFLA_LINKINFO")


@ORACLE
@given(ifname, st.integers(1, 2**24 - 1), ipv4, st.integers(0, 2**31 - 1),
       st.integers(0, 65535), st.booleans(), st.booleans(), st.integers(68, 65535), mac)
def test_vxlan_device(name: str, vni: int, local: str, link: int, port: int, learning: bool,
                      gbp: bool, mtu: int, lladdr: str) -> None:
    body = m.vxlan_create_body(name, vni=vni, local=local, link=link, port=port,
                               learning=learning, gbp=gbp, mtu=mtu, mac=lladdr)
    msg = decode(ifinfmsg, (m.RTM_NEWLINK, m.NLM_F_CREATE | m.NLM_F_EXCL, body))
    assert (msg["family"], msg["index"], msg["flags"], msg["change"]) == (0, 0, 0, 0)
    assert attrs(msg)[:4] == [("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_TXQLEN", 0),
                              ("IFLA_ADDRESS", lladdr)]
    assert names(msg) == ["IFLA_IFNAME", "IFLA_MTU", "IFLA_TXQLEN", "IFLA_ADDRESS",
                          "IFLA_LINKINFO"]
    info = linkinfo(msg)
    assert info.get_attr("IFLA_INFO_KIND") == "vxlan"
    data = dict(attrs(info.get_attr("IFLA_INFO_DATA")))
    want: dict[str, Any] = {
        "IFLA_VXLAN_ID": vni, "IFLA_VXLAN_LINK": link, "IFLA_VXLAN_LOCAL": local,
        "IFLA_VXLAN_TTL": 0, "IFLA_VXLAN_TOS": 0, "IFLA_VXLAN_LEARNING": int(learning),
        "IFLA_VXLAN_PROXY": 0, "IFLA_VXLAN_RSC": 0, "IFLA_VXLAN_L2MISS": 0,
        "IFLA_VXLAN_L3MISS": 0, "IFLA_VXLAN_UDP_ZERO_CSUM6_TX": 0,
        "IFLA_VXLAN_UDP_ZERO_CSUM6_RX": 0}
    if gbp:
        want["IFLA_VXLAN_GBP"] = True
    if port > 0:
        want["IFLA_VXLAN_PORT"] = port
    assert data == want
    assert len(names(info.get_attr("IFLA_INFO_DATA"))) == len(want)  # no duplicates


@ORACLE
@given(st.integers(1, 2**31 - 1), st.one_of(st.none(), st.booleans()),
       st.one_of(st.none(), st.integers(68, 65535)), st.one_of(st.none(), mac))
def test_link_settings(index: int, up: bool | None, mtu: int | None, lladdr: str | None
                       ) -> None:
    msg = decode(ifinfmsg, (m.RTM_NEWLINK, 0, m.link_set_body(index, up=up, mtu=mtu,
                                                               mac=lladdr)))
    assert msg["index"] == index
    assert (msg["flags"], msg["change"]) == (m.IFF_UP if up else 0,
                                             m.IFF_UP if up is not None else 0)
    want: list[tuple[str, Any]] = [("IFLA_MTU", mtu)] if mtu is not None else []
    want += [("IFLA_ADDRESS", lladdr)] if lladdr is not None else []
    assert attrs(msg) == want


@ORACLE
@given(st.one_of(st.none(), ifname), st.integers(0, 2**31 - 1))
def test_link_lookups(name: str | None, index: int) -> None:
    get = decode(ifinfmsg, (m.RTM_GETLINK, 0, m.link_get_body(name, index)))
    assert (get["index"], attrs(get)) == (index, [("IFLA_IFNAME", name)] if name else [])
    by = decode(ifinfmsg, (m.RTM_DELLINK, 0, m.link_by(name, index)))
    assert (by["index"], attrs(by)) == (index, [("IFLA_IFNAME", name)] if name and not index
                                        else [])


@ORACLE
@given(ifname, st.integers(0, 65535), mac)
def test_bridge(name: str, mtu: int, lladdr: str) -> None:
    msg = decode(ifinfmsg, m.msg_new_bridge(name, mtu, lladdr))
    assert msg["header"]["flags"] & (m.NLM_F_CREATE | m.NLM_F_EXCL) == (
        m.NLM_F_CREATE | m.NLM_F_EXCL)
    assert (msg["flags"], msg["change"]) == (m.IFF_UP, m.IFF_UP)
    want: list[str] = ["IFLA_IFNAME", "IFLA_ADDRESS"] + (["IFLA_MTU"] if mtu else [])
    assert names(msg) == [*want, "IFLA_LINKINFO"]
    assert msg.get_attr("IFLA_IFNAME") == name and msg.get_attr("IFLA_ADDRESS") == lladdr
    assert msg.get_attr("IFLA_MTU") == (mtu or None)
    assert attrs(linkinfo(msg)) == [("IFLA_INFO_KIND", "bridge")]


@ORACLE
@given(ifname, mac, st.integers(0, 65535), st.integers(1, 2**31 - 1), ifname, mac,
       st.integers(0, 2**31 - 1))
def test_veth_pair(name: str, lladdr: str, mtu: int, master: int, peer_name: str,
                   peer_mac: str, fd: int) -> None:
    msg = decode(ifinfmsg, m.msg_new_veth(name, lladdr, mtu, master, peer_name, peer_mac, fd))
    assert (msg["flags"], msg["change"]) == (m.IFF_UP, m.IFF_UP)
    mtu_attr = [("IFLA_MTU", mtu)] if mtu else []
    assert attrs(msg)[:-1] == [("IFLA_IFNAME", name), ("IFLA_ADDRESS", lladdr), *mtu_attr,
                               ("IFLA_MASTER", master)]
    info = linkinfo(msg)
    assert names(info) == ["IFLA_INFO_KIND", "IFLA_INFO_DATA"]
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert (peer["index"], peer["flags"], peer["change"]) == (0, 0, 0)
    assert attrs(peer) == [("IFLA_IFNAME", peer_name), ("IFLA_ADDRESS", peer_mac), *mtu_attr,
                           ("IFLA_NET_NS_FD", fd)]


@ORACLE
@given(st.integers(0, 2**31 - 1), st.booleans(), ifname)
def test_hairpin(index: int, on: bool, name: str) -> None:
    msg = decode(ifinfmsg, m.msg_hairpin(index, on, name))
    assert msg["index"] == index
    assert names(msg) == (["IFLA_IFNAME"] if not index else []) + ["IFLA_LINKINFO"]
    info = linkinfo(msg)
    assert info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge"
    assert attrs(info.get_attr("IFLA_INFO_SLAVE_DATA")) == [("IFLA_BRPORT_MODE", int(on))]


@ORACLE
@given(st.integers(1, 2**31 - 1))
def test_up_down_promisc(index: int) -> None:
    for req, flags, change in ((m.msg_up(index), m.IFF_UP, m.IFF_UP),
                               (m.msg_down(index), 0, m.IFF_UP),
                               (m.msg_promisc(index), m.IFF_PROMISC, m.IFF_PROMISC)):
        msg = decode(ifinfmsg, req)
        assert (msg["index"], msg["flags"], msg["change"], attrs(msg)) == (
            index, flags, change, [])


class _InetConf(nla):
    """The IFLA_AF_SPEC/AF_INET attribute as the kernel reads it on a set (inet_set_link_af):
    one nested IFLA_INET_CONF of u32s typed by ipv4_devconf index. pyroute2's own `inet` class
    reads the dump form (a flat array), so the map is built from its field names, in order."""

    nla_map = ((0, "IFLA_INET_UNSPEC", "none"), (1, "IFLA_INET_CONF", "conf"))

    class conf(nla):
        nla_map = tuple((i, name, "uint32") for i, name in
                        enumerate(ifinfmsg.af_spec_inet.inet.field_names))


@ORACLE
@given(st.integers(1, 2**31 - 1), st.dictionaries(
    st.sampled_from([m.IPV4_DEVCONF_FORWARDING, m.IPV4_DEVCONF_ARP_NOTIFY]), u32, min_size=1))
def test_inet_conf(index: int, values: dict[int, int]) -> None:
    msg = decode(ifinfmsg, m.msg_inet_conf(index, values))
    assert (msg["index"], names(msg)) == (index, ["IFLA_AF_SPEC"])
    spec = msg.get_attr("IFLA_AF_SPEC")
    assert names(spec) == ["AF_INET"]
    # Re-read the AF_INET attribute with the set-side layout.
    raw = m.msg_inet_conf(index, values)[2]
    conf = _InetConf(raw[m.IFINFOMSG.size + 4:])  # after IFLA_AF_SPEC's header
    conf.decode()
    got = dict(attrs(conf.get_attr("IFLA_INET_CONF")))
    by_name = {ifinfmsg.af_spec_inet.inet.field_names[k]: v for k, v in values.items()}
    assert got == by_name
    assert {"forwarding", "arp_notify"} >= set(got)


# --- the other way: pyroute2 encodes, our parsers read ----------------------------------------

cacheinfo = {"ndm_used": 1, "ndm_confirmed": 2, "ndm_updated": 3, "ndm_refcnt": 0}


@ORACLE
@given(st.sampled_from([socket.AF_INET, socket.AF_BRIDGE]), ifindex, u8, u8, ipv4, mac,
       st.permutations(["dst", "lladdr", "cacheinfo", "probes"]), st.booleans(),
       st.sampled_from(["", "NDA_PORT", "NDA_VNI", "NDA_IFINDEX"]))
def test_our_neighbour_parser(family: int, dev: int, state: int, flags: int, dst: str,
                              lladdr: str, order: list[str], cache: bool, extra: str) -> None:
    msg = ndmsg()
    msg["family"], msg["ifindex"], msg["state"], msg["flags"] = family, dev, state, flags
    msg["ndm_type"] = m.RTN_UNICAST if family == socket.AF_INET else 0
    pool = {"dst": ("NDA_DST", dst), "lladdr": ("NDA_LLADDR", lladdr),
            "cacheinfo": ("NDA_CACHEINFO", cacheinfo), "probes": ("NDA_PROBES", 0)}
    chosen = [pool[k] for k in order if cache or k not in ("cacheinfo", "probes")]
    if extra and family == socket.AF_BRIDGE:  # the kernel sends overrides in FDB entries only
        chosen.insert(2, (extra, {"NDA_PORT": 4789, "NDA_VNI": 5}.get(extra, 3)))
    msg["attrs"] = chosen
    raw = encoded(msg, m.RTM_NEWNEIGH)
    row = m.parse_neigh(raw, m.NLMSG_HDRLEN, len(raw))
    assert row == m.NeighRow(family, dev, state, flags, dst, lladdr,
                             bool(extra) and family == socket.AF_BRIDGE)


@ORACLE
@given(ipv4, st.integers(0, 32), ipv4, ifindex, u8, u8, u8, u8, u8, u32, st.booleans(),
       st.booleans())
def test_our_route_parsers(dst: str, dst_len: int, gw: str, oif: int, table: int, proto: int,
                           scope: int, rtype: int, flags: int, priority: int,
                           kernel_order: bool, with_priority: bool) -> None:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"] = socket.AF_INET, dst_len, table
    msg["proto"], msg["scope"], msg["type"], msg["flags"] = proto, scope, rtype, flags
    chosen = [("RTA_TABLE", table), ("RTA_DST", dst), ("RTA_GATEWAY", gw), ("RTA_OIF", oif)]
    if with_priority:
        chosen.insert(1, ("RTA_PRIORITY", priority))
    if not kernel_order:
        chosen.reverse()
    msg["attrs"] = chosen
    raw = encoded(msg, m.RTM_NEWROUTE)
    row = m.parse_route(raw, m.NLMSG_HDRLEN, len(raw))
    assert (row.dst, row.dst_text, row.dst_len, row.table, row.proto, row.scope, row.rtype,
            row.flags, row.oif, row.gateway, row.priority, row.multipath) == (
        int(IPv4Address(dst)), dst, dst_len, table, proto, scope, rtype, flags, oif, gw,
        priority if with_priority else 0, False)
    entry = m.parse_route_entry(raw, m.NLMSG_HDRLEN, len(raw))
    assert entry == m.RouteEntry(socket.AF_INET, socket.inet_aton(dst), dst_len,
                                 socket.inet_aton(gw), oif, table, rtype)


@ORACLE
@given(ipv6, st.integers(0, 128), st.one_of(st.none(), ipv6), ifindex, st.integers(0, 2**31))
def test_our_route_parser_v6(dst: IPv6Address, dst_len: int, gw: IPv6Address | None, oif: int,
                             table: int) -> None:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"], msg["type"] = (
        socket.AF_INET6, dst_len, min(table, 252), m.RTN_UNICAST)
    chosen: list[tuple[str, Any]] = [("RTA_TABLE", table), ("RTA_DST", str(dst)),
                                     ("RTA_OIF", oif)]
    if gw is not None:
        chosen.append(("RTA_GATEWAY", str(gw)))
    msg["attrs"] = chosen
    raw = encoded(msg, m.RTM_NEWROUTE)
    assert m.parse_route_entry(raw, m.NLMSG_HDRLEN, len(raw)) == m.RouteEntry(
        socket.AF_INET6, dst.packed, dst_len, gw.packed if gw else b"", oif, table,
        m.RTN_UNICAST)


@ORACLE
@given(st.sampled_from([4, 6]), st.data(), st.integers(1, 2**32 - 1), u8, st.booleans(),
       st.one_of(st.none(), u32))
def test_our_address_parsers(version: int, data: st.DataObject, index: int, plen: int,
                             local_first: bool, flags32: int | None) -> None:
    family, top, addr = FAMILY[version]
    local, peer = data.draw(addr), data.draw(addr)
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = family, plen % (top + 1), index
    msg["flags"] = (flags32 or 0) & 0xFF
    chosen: list[tuple[str, Any]] = [("IFA_ADDRESS", str(peer)), ("IFA_LOCAL", str(local))]
    if local_first:
        chosen.reverse()
    if flags32 is not None:
        chosen.append(("IFA_FLAGS", flags32))
    msg["attrs"] = chosen
    raw = encoded(msg, m.RTM_NEWADDR)
    off, end = m.NLMSG_HDRLEN, len(raw)
    assert m.parse_addr_entry(raw, off, end) == m.AddrEntry(index, family, local.packed,
                                                            plen % (top + 1))
    got4 = m.parse_addr(raw, off, end)
    assert got4 == (index, f"{local}/{plen % (top + 1)}" if version == 4 else None)
    got6 = parse_addr6(raw, off, end)
    if version == 4:
        assert got6 is None
    else:
        assert got6 is not None
        assert (got6[0], got6[1].address) == (index, local)
        assert got6[1].flags == (flags32 if flags32 is not None else msg["flags"])


@ORACLE
@given(ifindex, ifname, st.integers(0, 2**32 - 1), mac, st.integers(1, 2**24 - 1), ipv4,
       st.integers(0, 2**31 - 1), st.integers(1, 65535), st.booleans(), st.booleans(),
       st.integers(0, 2**31 - 1), st.integers(0, len(states) - 1))
def test_our_link_parser_vxlan(index: int, name: str, mtu: int, lladdr: str, vni: int,
                               local: str, link: int, port: int, learning: bool, gbp: bool,
                               master: int, operstate: int) -> None:
    msg = ifinfmsg()
    msg["index"], msg["flags"] = index, m.IFF_UP
    data: list[tuple[str, Any]] = [
        ("IFLA_VXLAN_ID", vni), ("IFLA_VXLAN_LINK", link), ("IFLA_VXLAN_LOCAL", local),
        ("IFLA_VXLAN_LEARNING", int(learning)), ("IFLA_VXLAN_PORT", port)]
    if gbp:
        data.append(("IFLA_VXLAN_GBP", True))
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_ADDRESS", lladdr),
                    ("IFLA_MASTER", master), ("IFLA_OPERSTATE", states[operstate]),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vxlan"),
                                                 ("IFLA_INFO_DATA", {"attrs": data})]})]
    raw = encoded(msg, m.RTM_NEWLINK)
    row = m.parse_link(raw, m.NLMSG_HDRLEN, len(raw))
    assert (row.ifindex, row.flags, row.name, row.mtu, row.mac, row.kind, row.master,
            row.operstate) == (index, m.IFF_UP, name, mtu, lladdr, "vxlan", master, operstate)
    st_ = link_state(row)
    assert (st_.vni, st_.local, st_.link, st_.port, st_.learning, st_.gbp, st_.up) == (
        vni, local, link, port, learning, gbp, True)
