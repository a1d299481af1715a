"""The one socket class serving the CNI plugin's needs (issue 11) against the real kernel:
opened by netns fd, echoed creations, errno mapping, the link/addr/route reads."""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator

import pytest
from netns_lab.netns import Sandbox, ip, run

from netlink import messages as m
from netlink.rtnl import RtNetlink

pytestmark = pytest.mark.netns
_n = itertools.count()


@pytest.fixture
def two_ns(sandbox: Sandbox) -> Iterator[tuple[str, str, int]]:
    """(host netns, pod netns, an open fd of the pod netns)."""
    name = f"nls{os.getpid() % 1000}{next(_n)}"
    host, pod = sandbox.add_netns(name), sandbox.add_netns(name + "p")
    fd = os.open(f"/run/netns/{pod}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield host, pod, fd
    finally:
        os.close(fd)
        for n in (host, pod):
            run(["ip", "netns", "del", n], check=False)


def test_veth_into_a_netns_fd_echoes_its_peer(two_ns: tuple[str, str, int]) -> None:
    host, _pod, fd = two_ns
    with RtNetlink(host) as nl, RtNetlink(fd) as pod:
        assert nl.batch([m.msg_new_bridge("br9", 1400, "02:00:00:00:09:01")]) == [None]
        br = nl.link("br9")
        assert br is not None and br.kind == "bridge" and br.mtu == 1400
        kind, flags, body = m.msg_new_veth("vh9", "02:00:00:00:09:02", 1400, br.ifindex,
                                           "eth0", "02:00:00:00:09:03", fd)
        echoed: list[tuple[int, bytes]] = []
        errors = nl.batch([(kind, flags | m.NLM_F_ECHO, body),
                           m.msg_hairpin(0, True, name="vh9")], echoed)
        assert errors == [None, None]
        peers = [m.parse_link(b, 0, len(b)).peer_index for k, b in echoed
                 if k == m.RTM_NEWLINK]
        eth0 = pod.link("eth0")
        assert eth0 is not None and eth0.kind == "veth" and eth0.mac == "02:00:00:00:09:03"
        assert eth0.ifindex in peers
        hv = nl.link("vh9")
        assert hv is not None and hv.master == br.ifindex and hv.peer_index == eth0.ifindex
        assert nl.link(index=hv.ifindex) == hv


def test_errors_map_to_their_requests_and_to_oserror(two_ns: tuple[str, str, int]) -> None:
    host, _, _ = two_ns
    with RtNetlink(host) as nl:
        lo = nl.link("lo")
        assert lo is not None
        ok = m.msg_new_bridge("br8", 0, "02:00:00:00:08:01")
        errors = nl.batch([ok, ok, m.msg_up(lo.ifindex)])
        assert errors[0] is None and errors[2] is None
        dup = errors[1]
        assert isinstance(dup, OSError) and isinstance(dup, m.NetlinkError)
        assert dup.errno == errno.EEXIST
        with pytest.raises(m.NetlinkError) as exc:
            nl.check(*m.msg_new_bridge("br8", 0, "02:00:00:00:08:01"), what="add br8")
        assert exc.value.errno == errno.EEXIST and str(exc.value).startswith(
            "[Errno 17] add br8: File exists")
        assert nl.link("nosuch0") is None
        assert nl.delete_link("nosuch0") is False
        assert nl.delete_link("br8") is True and nl.link("br8") is None


def test_pod_side_addresses_and_routes_both_families(two_ns: tuple[str, str, int]) -> None:
    _, pod_ns, fd = two_ns
    ip("link", "add", "d0", "type", "veth", "peer", "name", "d1", netns=pod_ns)
    with RtNetlink(fd) as pod:
        d0 = pod.link("d0")
        assert d0 is not None
        v4, v6 = bytes([10, 9, 0, 2]), bytes.fromhex("fd00000000000000000000000000000a")
        gw4 = bytes([10, 9, 0, 1])
        msgs = [m.msg_up(d0.ifindex), m.msg_new_addr(d0.ifindex, m.AF_INET, v4, 24, nodad=True),
                m.msg_new_addr(d0.ifindex, m.AF_INET6, v6, 64, nodad=True),
                m.msg_new_route(d0.ifindex, m.AF_INET, bytes([10, 8, 0, 0]), 16, gw4)]
        assert pod.batch(msgs) == [None] * 4
        have = {(a.family, a.address, a.prefixlen) for a in pod.addrs(d0.ifindex)}
        assert {(m.AF_INET, v4, 24), (m.AF_INET6, v6, 64)} <= have
        assert [a.address for a in pod.addrs(d0.ifindex, m.AF_INET)] == [v4]
        routes = pod.routes(m.AF_INET)
        assert any(r.dst == bytes([10, 8, 0, 0]) and r.dst_len == 16 and r.gateway == gw4
                   and r.oif == d0.ifindex for r in routes)
        assert all(r.family == m.AF_INET6 for r in pod.routes(m.AF_INET6))
        (text,) = [t for i, t in pod.dump(m.RTM_GETADDR, m.addr_dump_body(d0.ifindex),
                                          m.parse_addr, m.RTM_NEWADDR)]
        assert text == "10.9.0.2/24"
        pod.set_down(d0.ifindex)
        link = pod.link(index=d0.ifindex)
        assert link is not None and not link.flags & m.IFF_UP
