"""The batched rtnetlink layer (netlink/rtnl.py, nlmsg.py) against the real kernel."""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Iterator

import pytest
from backend_lab import bridge_fdb, ipj
from netns_lab.netns import Sandbox, ip, list_netns, run

from netlink import messages as m
from netlink.rtnl import CHUNK, RtNetlink, call_in_netns

pytestmark = pytest.mark.netns
REPLACE = m.NLM_F_CREATE | m.NLM_F_REPLACE
_n = itertools.count()


@pytest.fixture
def nsvx(sandbox: Sandbox) -> Iterator[tuple[str, RtNetlink, int]]:
    """A namespace with eth0 (192.168.64.3/24) and a flannel-style vxlan device."""
    name = f"nl{os.getpid() % 1000}{next(_n)}"
    ns, peer = sandbox.add_netns(name), sandbox.add_netns(name + "x")
    sandbox.veth(ns, "eth0", peer, "eth0")
    ip("addr", "add", "192.168.64.3/24", "dev", "eth0", netns=ns)
    nl = RtNetlink(ns)
    try:
        ext = nl.get(m.RTM_GETLINK, m.link_get_body("eth0"), m.parse_link, m.RTM_NEWLINK)
        assert ext is not None
        nl.check(m.RTM_NEWLINK, m.NLM_F_CREATE | m.NLM_F_EXCL, m.vxlan_create_body(
            "flannel.1", vni=1, local="192.168.64.3", link=ext.ifindex, port=0, learning=False,
            gbp=False, mtu=1450, mac="c6:d2:32:6f:8f:44"), "create")
        dev = nl.get(m.RTM_GETLINK, m.link_get_body("flannel.1"), m.parse_link, m.RTM_NEWLINK)
        assert dev is not None
        nl.check(m.RTM_NEWADDR, REPLACE, m.addr_body(dev.ifindex, "10.5.52.0", 32), "addr")
        nl.check(m.RTM_NEWLINK, 0, m.link_set_body(dev.ifindex, up=True), "up")
        yield ns, nl, dev.ifindex
    finally:
        nl.close()
        for n in (ns, peer):
            run(["ip", "netns", "del", n], check=False)


def test_device_has_flannels_attributes(nsvx: tuple[str, RtNetlink, int]) -> None:
    ns, _, _ = nsvx
    (link,) = ipj(ns, "-d", "link", "show", "flannel.1")
    assert link["mtu"] == 1450 and link["address"] == "c6:d2:32:6f:8f:44"
    assert link.get("txqlen", 0) == 0
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["local"], info["link"], info["port"], info["learning"]) == (
        1, "192.168.64.3", "eth0", 8472, False)


def test_batch_maps_each_error_to_its_request(nsvx: tuple[str, RtNetlink, int]) -> None:
    ns, nl, dev = nsvx
    ops = [
        (m.RTM_NEWNEIGH, REPLACE, m.neigh_body(dev, "10.5.34.0", "0e:7a:19:3b:d0:0f")),
        (m.RTM_NEWNEIGH, REPLACE, m.neigh_body(999, "10.5.35.0", "0e:00:00:00:00:01")),  # no dev
        (m.RTM_NEWNEIGH, REPLACE, m.fdb_body(dev, "0e:7a:19:3b:d0:0f", "192.168.64.4")),
        (m.RTM_NEWROUTE, REPLACE, m.route_body("10.5.36.0", 24, "10.5.36.0", dev, onlink=False)),
        (m.RTM_NEWROUTE, REPLACE, m.route_body("10.5.34.0", 24, "10.5.34.0", dev, onlink=True)),
        (m.RTM_DELROUTE, 0, m.route_body("10.5.99.0", 24, "10.5.99.0", dev, onlink=True,
                                         delete=True)),
    ]
    results = nl.apply(ops)
    assert [r[0] for r in results] == [0, errno.ENODEV, 0, errno.ENETUNREACH, 0, errno.ESRCH]
    assert "gateway" in results[3][1].lower()  # the extended ack text
    assert ipj(ns, "neigh", "show", "dev", "flannel.1")[0]["lladdr"] == "0e:7a:19:3b:d0:0f"
    (fdb,) = bridge_fdb(ns, "flannel.1")
    assert (fdb["mac"], fdb["dst"], set(fdb["flags"]), fdb["state"]) == (
        "0e:7a:19:3b:d0:0f", "192.168.64.4", {"self"}, "permanent")
    (route,) = ipj(ns, "route", "show", "10.5.34.0/24")
    assert (route["gateway"], route["dev"], route["flags"]) == ("10.5.34.0", "flannel.1",
                                                               ["onlink"])
    assert "protocol" not in route  # boot, which `ip` does not show: as flannel


def test_large_batches_and_dumps_round_trip(nsvx: tuple[str, RtNetlink, int]) -> None:
    ns, nl, dev = nsvx
    n = CHUNK * 2 + 100
    peers = [(f"10.{6 + i // 250}.{i % 250}.0", f"0e:00:00:00:{i // 256:02x}:{i % 256:02x}",
              f"192.168.64.{10 + i % 200}") for i in range(n)]
    ops = [(m.RTM_NEWNEIGH, REPLACE, m.neigh_body(dev, s0, mac)) for s0, mac, _ in peers]
    ops += [(m.RTM_NEWNEIGH, REPLACE, m.fdb_body(dev, mac, p)) for _, mac, p in peers]
    ops += [(m.RTM_NEWROUTE, REPLACE, m.route_body(s0, 24, s0, dev, onlink=True))
            for s0, _, _ in peers]
    assert all(r == (0, "") for r in nl.apply(ops))

    neighs = nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_INET, dev), m.parse_neigh,
                     m.RTM_NEWNEIGH)
    assert {(r.dst, r.mac) for r in neighs if r.state & m.NUD_PERMANENT} == {
        (s0, mac) for s0, mac, _ in peers}
    fdb = nl.dump(m.RTM_GETNEIGH, m.neigh_dump_body(m.AF_BRIDGE, dev), m.parse_neigh,
                  m.RTM_NEWNEIGH)
    assert {(r.mac, r.dst) for r in fdb} == {(mac, p) for _, mac, p in peers}
    assert all(r.flags & m.NTF_SELF and not r.extra for r in fdb)
    routes = nl.dump(m.RTM_GETROUTE, m.route_dump_body(), m.parse_route, m.RTM_NEWROUTE)
    ours = {(r.cidr, r.gateway, r.oif, bool(r.flags & m.RTNH_F_ONLINK), r.proto)
            for r in routes if r.oif == dev}
    assert ours == {(f"{s0}/24", s0, dev, True, 3) for s0, _, _ in peers}
    assert {r.table for r in routes} == {m.RT_TABLE_MAIN}  # strict checking filtered the dump
    assert len(ipj(ns, "route", "show", "dev", "flannel.1")) == n

    # A batch where every request fails still reports every failure (no lost replies).
    bad = [(m.RTM_NEWNEIGH, REPLACE, m.neigh_body(999, s0, mac)) for s0, mac, _ in peers]
    assert [r[0] for r in nl.apply(bad)] == [errno.ENODEV] * n


def test_notifications_of_our_writes_carry_our_portid(nsvx: tuple[str, RtNetlink, int]) -> None:
    ns, nl, dev = nsvx
    watch = call_in_netns(ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                    socket.NETLINK_ROUTE))
    try:
        watch.bind((0, 0x40))  # RTMGRP_IPV4_ROUTE
        watch.settimeout(5)
        assert nl.apply([(m.RTM_NEWROUTE, REPLACE, m.route_body(
            "10.5.34.0", 24, "10.5.34.0", dev, onlink=True))]) == [(0, "")]
        data = watch.recv(65536)
        kind, _, _, _, _ = next(m.iter_msgs(data, len(data)))
        assert kind == m.RTM_NEWROUTE and m.NLMSG_HDR.unpack_from(data)[4] == nl.portid != 0
    finally:
        watch.close()


def test_addresses_and_link_attributes(nsvx: tuple[str, RtNetlink, int]) -> None:
    _, nl, dev = nsvx
    rows = nl.dump(m.RTM_GETADDR, m.addr_dump_body(dev), m.parse_addr, m.RTM_NEWADDR)
    assert [cidr for idx, cidr in rows if idx == dev] == ["10.5.52.0/32"]
    nl.check(m.RTM_NEWLINK, 0, m.link_set_body(dev, mtu=1400, mac="0e:00:00:00:00:09"), "set")
    row = nl.get(m.RTM_GETLINK, m.link_get_body(index=dev), m.parse_link, m.RTM_NEWLINK)
    assert row is not None and (row.mtu, row.mac, row.kind) == (1400, "0e:00:00:00:00:09", "vxlan")
    assert nl.get(m.RTM_GETLINK, m.link_get_body("nope0"), m.parse_link, m.RTM_NEWLINK) is None


def test_missing_namespace_is_an_error_not_created() -> None:
    name = f"pyflannel-missing-{os.getpid()}"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        call_in_netns(name, lambda: None)
    assert name not in list_netns()
