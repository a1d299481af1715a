"""flanneld's masquerade tables applied to a real kernel, in throwaway namespaces.

    pod ──(fd00:10:5:52::/64)── node ──(2001:db8:1::/64)── world
                                 └──(fd00:10:5:34::/64)── remote pod (another node's subnet)

The node gets `--ip-masq` rules for a dual-stack lease (cluster fd00:10:5::/48, pod
subnet fd00:10:5:52::/64, and the IPv4 pair). nft counters in the receiving
namespaces record the source each packet arrived with: a pod talking to the world
arrives as the node's address (masqueraded), a pod talking to a remote pod keeps its
own, and the host talking to a remote pod is masqueraded (flannel's iptables rule 6,
which flannel's own nft rule 4 would skip). Drift in one family's table is repaired
without touching the other; a family the node stops running loses its table.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import pytest
from netns_lab.netns import Sandbox, in_netns, ip, run

from flanneld import masq

pytestmark = pytest.mark.netns

PARAMS = masq.RuleParams(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24"),
                         masquerade=True, ipv6_network=IPv6Network("fd00:10:5::/48"),
                         ipv6_subnet=IPv6Network("fd00:10:5:52::/64"))
POD, REMOTE_POD = "fd00:10:5:52::2", "fd00:10:5:34::2"
NODE_UP, WORLD = "2001:db8:1::1", "2001:db8:1::2"
NODE_TO_REMOTE = "fd00:10:5:34::1"
_seq = itertools.count()

COUNT_TABLE = """\
table ip6 seen {
    chain input {
        type filter hook input priority filter; policy accept;
        icmpv6 type echo-request ip6 saddr %s counter
        icmpv6 type echo-request ip6 saddr %s counter
        icmpv6 type echo-request ip6 saddr %s counter
    }
}
"""


@dataclass
class Topo:
    node: str
    pod: str
    world: str
    remote: str


@pytest.fixture
def topo(sandbox: Sandbox) -> Iterator[Topo]:
    tag = f"mq{os.getpid() % 1000}n{next(_seq)}"
    names = [sandbox.add_netns(f"{tag}{n}", forwarding=n == "node")
             for n in ("node", "pod", "world", "remote")]
    t = Topo(*names)
    try:
        run(["ip", "netns", "exec", t.node, "sysctl", "-qw",
             "net.ipv6.conf.all.forwarding=1"])
        for ns in names:  # no DAD on the veths (link-local included): no lost first packets
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0"])
        for ns, here, there, node_addr, addr, prefix in (
                (t.pod, "npod", "eth0", "fd00:10:5:52::1", POD, 64),
                (t.world, "nup", "eth0", NODE_UP, WORLD, 64),
                (t.remote, "nrem", "eth0", NODE_TO_REMOTE, REMOTE_POD, 64)):
            sandbox.veth(t.node, here, ns, there)
            ip("addr", "add", f"{node_addr}/{prefix}", "dev", here, "nodad", netns=t.node)
            ip("addr", "add", f"{addr}/{prefix}", "dev", there, "nodad", netns=ns)
        # the pod and the remote pod route everything via their node; the world knows
        # nothing of the cluster's addresses (only a masqueraded packet can be answered)
        ip("-6", "route", "add", "default", "via", "fd00:10:5:52::1", netns=t.pod)
        ip("-6", "route", "add", "default", "via", NODE_TO_REMOTE, netns=t.remote)
        for ns in (t.world, t.remote):
            run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input=COUNT_TABLE % (POD, NODE_UP, NODE_TO_REMOTE))
        yield t
    finally:
        for ns in names:
            run(["ip", "netns", "del", ns], check=False)


def seen(ns: str) -> dict[str, int]:
    """Echo requests that arrived in `ns`, by source address."""
    out: dict[str, int] = {}
    listing = run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip6", "seen"]).stdout
    for line in listing.splitlines():
        if "counter packets" in line:
            words = line.split()
            out[words[words.index("saddr") + 1]] = int(words[words.index("packets") + 1])
    return out


def ping(ns: str, target: str, source: str | None = None) -> bool:
    argv = ["ip", "netns", "exec", ns, "ping", "-6", "-c", "1", "-W", "2"]
    if source:
        argv += ["-I", source]
    return run([*argv, target], check=False).returncode == 0


def test_v6_masquerade_to_the_world_but_not_between_pods(topo: Topo) -> None:
    t = topo
    # no rules yet: the pod's packets reach the world with their own source (the first
    # may be lost to neighbour discovery), and the world cannot answer them
    assert not any([ping(t.pod, WORLD) for _ in range(2)])
    assert seen(t.world)[POD] >= 1 and seen(t.world)[NODE_UP] == 0
    assert in_netns(t.node, lambda: masq.ensure(PARAMS)) == ["ip pyflannel", "ip6 pyflannel"]
    # both tables hold exactly what we render (the listing round-trips)
    for family in (4, 6):
        listing = in_netns(t.node, lambda f=family: masq.list_table(f))  # type: ignore[misc]
        assert masq.is_intact(listing, PARAMS, family), listing
    assert in_netns(t.node, lambda: masq.ensure(PARAMS)) == []
    before = seen(t.world)
    # pod -> outside the cluster's IPv6Network: masqueraded to the node's address
    assert ping(t.pod, WORLD)
    after = seen(t.world)
    assert after[NODE_UP] == before[NODE_UP] + 1 and after[POD] == before[POD]
    # pod -> remote pod (inside the IPv6Network): the source is kept
    assert ping(t.pod, REMOTE_POD)
    remote = seen(t.remote)
    assert remote[POD] >= 1 and remote[NODE_TO_REMOTE] == 0
    # host -> remote pod: masqueraded (iptables' rule 6; flannel's nft rule 4 returns early)
    assert ping(t.node, REMOTE_POD, source=NODE_UP)
    remote = seen(t.remote)
    assert remote[NODE_TO_REMOTE] >= 1 and remote[NODE_UP] == 0
    conntrack = run(["ip", "netns", "exec", t.node, "cat", "/proc/net/nf_conntrack"],
                    check=False).stdout
    if conntrack:  # where the kernel exposes it: the pod's flow to the world is NATed
        assert any("fd00:0010:0005:0052:0000:0000:0000:0002" in line or POD in line
                   for line in conntrack.splitlines())


def test_drift_in_one_family_is_repaired_alone(topo: Topo) -> None:
    t = topo
    in_netns(t.node, lambda: masq.ensure(PARAMS))
    run(["ip", "netns", "exec", t.node, "nft", "flush", "chain", "ip6", "pyflannel",
         "postrtg"])
    assert in_netns(t.node, lambda: masq.ensure(PARAMS)) == ["ip6 pyflannel"]
    assert ping(t.pod, WORLD)
    run(["ip", "netns", "exec", t.node, "nft", "delete", "table", "ip6", "pyflannel"])
    assert in_netns(t.node, lambda: masq.ensure(PARAMS)) == ["ip6 pyflannel"]
    assert in_netns(t.node, lambda: masq.ensure(PARAMS)) == []
    # the node drops IPv6: its ip6 table goes, the ip one stays; pods lose the NAT
    v4_only = masq.RuleParams(PARAMS.network, PARAMS.subnet, masquerade=True)
    assert in_netns(t.node, lambda: masq.ensure(v4_only)) == ["ip6 pyflannel"]
    tables = run(["ip", "netns", "exec", t.node, "nft", "list", "tables"]).stdout
    assert "table ip pyflannel" in tables and "table ip6 pyflannel" not in tables
    assert not ping(t.pod, WORLD)


def test_ipv6_only_node_has_only_the_ip6_table(topo: Topo) -> None:
    t = topo
    v6_only = masq.RuleParams(None, None, masquerade=True, ipv6_network=PARAMS.ipv6_network,
                              ipv6_subnet=PARAMS.ipv6_subnet)
    assert in_netns(t.node, lambda: masq.ensure(v6_only)) == ["ip6 pyflannel"]
    tables = run(["ip", "netns", "exec", t.node, "nft", "list", "tables"]).stdout
    assert "table ip6 pyflannel" in tables and "table ip pyflannel" not in tables
    assert ping(t.pod, WORLD) and ping(t.pod, REMOTE_POD)
    assert seen(t.remote)[POD] >= 1 and seen(t.world)[NODE_UP] >= 1
