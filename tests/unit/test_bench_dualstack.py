"""The dual-stack benchmarks' inputs (pure, no root): what ours and each reference are given
is the same work, and our own code accepts the synthetic leases and configs whole."""

from __future__ import annotations

import json
import sys
from ipaddress import IPv6Network, ip_network
from pathlib import Path

import yaml
from netns_lab.topology import parse

from backends.vxlan6 import desired6
from cni.delegate import derive_delegate, load_conf
from core.subnetenv import parse_subnet_env

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cni_latency
import programming
import throughput6

N = 300


def test_dual_stack_peers_are_distinct_and_all_usable_by_the_v6_plane() -> None:
    peers = [programming.peer(i, True) for i in range(N)]
    own = programming.OWN_DS
    subnets = {p.ipv6_subnet for p in peers} | {own.ipv6_subnet}
    assert len(subnets) == N + 1
    assert all(s is not None and s.subnet_of(programming.NETWORK6) for s in subnets)
    macs = {p.attrs.vtep_mac for p in peers} | {p.attrs.backend_v6_data["VtepMAC"] for p in peers}
    assert len(macs) == 2 * N  # each device its own MAC
    want = desired6(own, [own, *peers], programming.NETWORK6, 1, dev_index=7)
    assert not want.skipped
    assert (len(want.tables.neighs), len(want.tables.fdb), len(want.tables.routes)) == (N, N, N)


def test_the_reference_batches_hold_the_same_entries_as_our_desired_state() -> None:
    peers = [programming.peer(i, True) for i in range(N)]
    lines = programming.batch_lines(peers, True)
    own = programming.OWN_DS
    want = desired6(own, [own, *peers], programming.NETWORK6, 1, dev_index=7).tables
    v6 = [line.split() for part in lines.values() for line in part
          if programming.DEV6 in line and line.split()[1] == "replace"]
    assert {w[2]: w[4] for w in v6 if w[0] == "neigh"} == want.neighs
    assert {w[2]: (w[6],) for w in v6 if w[0] == "fdb"} == want.fdb
    assert {w[2] for w in v6 if w[0] == "route"} == set(want.routes)
    # and the IPv4 mode keeps its three devices' lines plus three per peer, no IPv6
    v4 = programming.batch_lines([programming.peer(i) for i in range(N)], False)
    assert sum(map(len, v4.values())) == 3 + 3 * N
    assert not any(programming.DEV6 in line for part in v4.values() for line in part)


def test_cni_ours_derives_the_reference_range_sets() -> None:
    for subnet in ("10.5.52.1/24", "10.99.0.0/24"):
        env = parse_subnet_env(cni_latency.subnet_env(subnet, False, True))
        conf = {"cniVersion": "1.0.0", "name": "x", "type": "flannel", "subnetFile": "/nowhere",
                "delegate": {"bridge": "cni0", "isDefaultGateway": True}}
        ranges = derive_delegate(load_conf(conf), env)["ipam"]["ranges"]
        ref, routes = cni_latency.ref_ranges(
            str(ip_network(subnet, strict=False)), True)
        assert [[r["subnet"] for r in s] for s in ranges] == \
            [[r["subnet"] for r in s] for s in ref]
        assert ip_network(ref[1][0]["gateway"]) == ip_network(
            f"{IPv6Network(ref[1][0]['subnet']).network_address + 1}")
        assert routes == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    # IPv4 mode: one range set, as before
    assert len(cni_latency.ref_ranges("10.99.0.0/24", False)[0]) == 1
    assert "IPV6" not in cni_latency.subnet_env("10.5.52.1/24", False, False)


def test_throughput_labs_are_valid_dual_stack_topologies() -> None:
    for kind in throughput6.BACKENDS:
        topo = parse(yaml.safe_load(throughput6.topology(kind)))
        assert len(topo.hosts) == 2 and topo.enable_ipv6
        assert json.loads(throughput6.topology(kind))["network"]["Backend"] == \
            throughput6.BACKENDS[kind]
