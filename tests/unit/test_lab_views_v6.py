"""The lab's pure IPv6 pieces: IPv6 peer state over `ip -j -6` output, leases matched to
hosts by PublicIPv6, ICMPv6 echo, partition rules, per-family ping and status rendering,
ping -6 output, full-size payloads (no root, no etcd)."""

from __future__ import annotations

import struct
from ipaddress import IPv6Network
from typing import Any

from netns_lab import chaos, observe, ping, probes, runtime, status, topology
from netns_lab.lab import Lab, Pod
from netns_lab.measure import parse_ping
from netns_lab.plan import make_plan

from core.lease import decode_lease

MAC6 = "0e:60:00:00:00:0b"
DS = decode_lease(
    "10.30.49.0-24&fc00:30:0:53::-64",
    '{"PublicIP":"192.168.30.11","PublicIPv6":"fd10:30::11","BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"0e:40:00:00:00:0b"},'
    f'"BackendV6Data":{{"VNI":1,"VtepMAC":"{MAC6}"}}}}')
V6ONLY = decode_lease("&fc00:33:0:46::-64", '{"PublicIP":"0.0.0.0","PublicIPv6":"fd10:33::11",'
                      '"BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"' + MAC6 + '"}}')
DEV6: dict[str, Any] = {"ifname": "flannel-v6.1", "ifindex": 7,
                        "linkinfo": {"info_kind": "vxlan"}}
DEV4: dict[str, Any] = {"ifname": "flannel.1", "ifindex": 6, "linkinfo": {"info_kind": "vxlan"}}
# the kernel state of a dual-stack vxlan peer, as `ip -j -6` / `bridge -j` print it
ROUTE6: dict[str, Any] = {"dst": "fc00:30:0:53::/64", "gateway": "fc00:30:0:53::",
                          "dev": "flannel-v6.1", "protocol": "boot", "metric": 1024,
                          "flags": ["onlink"], "pref": "medium"}
NEIGH6: dict[str, Any] = {"dst": "fc00:30:0:53::", "dev": "flannel-v6.1", "lladdr": MAC6,
                          "state": ["PERMANENT"]}
FDB6: dict[str, Any] = {"mac": MAC6, "ifname": "flannel-v6.1", "dst": "fd10:30::11",
                        "flags": ["self"], "state": "permanent"}


def view6(routes: list[dict[str, Any]], neighs: list[dict[str, Any]] | None = None,
          fdb: list[dict[str, Any]] | None = None) -> observe.KernelView:
    return observe.KernelView(links=[DEV4, DEV6], routes6=routes, neighs6=neighs or [],
                              fdb=fdb or [])


def test_peer_state6_vxlan_needs_route_neighbour_and_fdb() -> None:
    assert observe.peer_state6(DS, view6([ROUTE6], [NEIGH6], [FDB6])) == "vxlan"
    assert observe.peer_state6(DS, view6([ROUTE6], [NEIGH6], [])) == "partial"
    assert observe.peer_state6(DS, view6([], [], [])) == "missing"
    stale = {**FDB6, "dst": "fd10:30::99"}
    assert observe.peer_state6(DS, view6([ROUTE6], [NEIGH6], [stale])) == "partial"
    assert observe.peer_state6(V6ONLY, view6([{**ROUTE6, "dst": "fc00:33:0:46::/64",
                                               "gateway": "fc00:33:0:46::"}],
                                             [{**NEIGH6, "dst": "fc00:33:0:46::"}],
                                             [{**FDB6, "dst": "fd10:33::11"}])) == "vxlan"


def test_peer_state6_direct_for_hostgw_and_the_v4_side_alone() -> None:
    hostgw = decode_lease("10.31.36.0-24&fc00:31:0:2f::-64",
                          '{"PublicIP":"192.168.31.11","PublicIPv6":"fd10:31::11",'
                          '"BackendType":"host-gw"}')
    route = {"dst": "fc00:31:0:2f::/64", "gateway": "fd10:31::11", "dev": "eth0",
             "metric": 1024, "protocol": "boot"}
    assert observe.peer_state6(hostgw, observe.KernelView(routes6=[route])) == "direct"
    wrong = {**route, "gateway": "fd10:31::99"}
    assert observe.peer_state6(hostgw, observe.KernelView(routes6=[wrong])) == "partial"
    assert observe.peer_state(V6ONLY, observe.KernelView()) == "missing"  # no IPv4 subnet
    v4only = decode_lease("10.5.1.0-24", '{"PublicIP":"192.168.1.2","BackendType":"host-gw"}')
    assert observe.peer_state6(v4only, observe.KernelView()) == "missing"


def test_vxlan_links_split_by_family() -> None:
    v = observe.KernelView(links=[DEV4, DEV6, {"ifname": "eth0"}])
    assert [lk["ifname"] for lk in v.vxlan_links(v6=True)] == ["flannel-v6.1"]
    assert [lk["ifname"] for lk in v.vxlan_links(v6=False)] == ["flannel.1"]
    assert len(v.vxlan_links()) == 2


def test_leases_belong_to_hosts_by_public_ip_or_ipv6() -> None:
    lab = Lab.new("lab", topology.load("ipv6-only"))
    assert observe.lease_owner(lab, V6ONLY) == "h2"
    assert observe.host_lease(lab, "h2", [V6ONLY]) == V6ONLY
    assert observe.lease_name(V6ONLY) == "fc00:33:0:46::/64"
    assert observe.peers6_of(lab, "h2", [V6ONLY], view6([])) == {}
    assert observe.peers6_of(lab, "h1", [V6ONLY], view6([])) == {"fc00:33:0:46::/64": "missing"}
    ds = Lab.new("lab", topology.load("dualstack"))
    assert observe.lease_owner(ds, DS) == "h2"


def test_pod_routes_per_family() -> None:
    v = observe.KernelView(routes6=[ROUTE6, {"dst": "fc00:30:0:3::/64", "dev": "cni0"},
                                    {"dst": "fd10:30::/64"}, {"dst": "default"}])
    net6 = IPv6Network("fc00:30::/48")
    assert observe.pod_routes(v, net6, "fc00:30:0:3::/64") == ["fc00:30:0:53::/64"]
    assert observe.pod_routes(v, None, "") == []


def test_icmp6_echo_request_and_reply() -> None:
    req = ping.echo_request(0x4242, 3, family=6)
    kind, code, csum, ident, seq = struct.unpack("!BBHHH", req[:8])
    assert (kind, code, csum, ident, seq) == (128, 0, 0, 0x4242, 3)  # the kernel sums it
    reply = bytes([129]) + req[1:]
    got = ping.parse_echo6_reply(reply, "fc00:30:0:0053::2", 0x4242)
    assert got is not None and got[0] == "fc00:30:0:53::2" and got[1] >= 0
    assert ping.parse_echo6_reply(req, "fc00::2", 0x4242) is None  # a request
    assert ping.parse_echo6_reply(bytes([135]) + reply[1:], "fe80::1%eth0", 0x4242) is None
    assert ping.parse_echo6_reply(reply, "fc00::2", 0x1111) is None


def test_partition_rules_across_routers_cover_both_families() -> None:
    plan = make_plan(topology.load("vxlan-routed-v6"), "lab")
    rules = chaos.partition_rules(plan, [("e1", "w1")])
    tag = 'drop comment "partition e1 w1"'
    assert rules["east"] == [f'iifname "to-e1" ip daddr 192.168.42.10 {tag}',
                             f'iifname "to-e1" ip6 daddr fd10:42::10 {tag}']
    only = make_plan(topology.load("ipv6-only"), "lab")
    assert chaos.partition_rules(only, [("h1", "h2")])["lan"][0].startswith(
        'iifname "to-h1" oifname "to-h2" drop')


def test_cni_result_addresses_per_family() -> None:
    result = {"ips": [{"address": "10.30.1.2/24"}, {"address": "fc00:30:0:1::2/64"}]}
    assert runtime.result_address(result, 4) == "10.30.1.2"
    assert runtime.result_address(result, 6) == "fc00:30:0:1::2"
    assert runtime.result_address({"ips": [{"address": "fc00::2/64"}]}, 4) == ""


def dual_lab() -> Lab:
    lab = Lab.new("lab", topology.load("dualstack"))
    lab.pods = {"h1": {"p1": Pod("h1", "p1", "10.30.1.2", {}, "fc00:30:0:1::2")},
                "h2": {"p1": Pod("h2", "p1", "10.30.2.2", {}, "fc00:30:0:2::2")},
                "h3": {"p1": Pod("h3", "p1", "", {}, "fc00:30:0:3::2")}}
    return lab


def test_ping_render_one_matrix_per_family() -> None:
    lab = dual_lab()
    assert ping.families_of(lab.all_pods()) == [4, 6]
    results = [ping.PingResult("h1/p1", "h2/p1", True, 1.0, family=4),
               ping.PingResult("h2/p1", "h1/p1", True, 1.0, family=4),
               ping.PingResult("h1/p1", "h3/p1", True, 2.0, family=6),
               ping.PingResult("h3/p1", "h1/p1", False, None, "no reply", family=6)]
    out = ping.render(lab, results)
    v4, v6 = out.split("\nIPv6\n")
    assert v4.startswith("IPv4\n") and "2/2 pod pairs reachable" in v4 and "h3/p1" not in v4
    assert "1/2 pod pairs reachable" in v6 and "h3/p1 -> h1/p1: no reply" in v6
    single = ping.render(lab, results[:2])
    assert not single.startswith("IPv4") and "2/2 pod pairs reachable" in single


def test_status_render_has_the_v6_columns() -> None:
    row = {"host": "h1", "public_ip": "192.168.30.10", "public_ipv6": "fd10:30::10",
           "subnet": "10.30.1.0/24", "subnet6": "fc00:30:0:1::/64", "subnet_from": "etcd",
           "backend": "vxlan", "flanneld": "ready", "peers": {"10.30.2.0/24": "vxlan"},
           "peers6": {"fc00:30:0:2::/64": "vxlan"},
           "pods": {"p1": "10.30.1.2"}, "pods6": {"p1": "fc00:30:0:1::2"}}
    data = {"lab": "lab", "description": "", "backend": "vxlan", "network": "10.30.0.0/16",
            "network6": "fc00:30::/48", "families": [4, 6], "etcd_error": "",
            "etcd": [{"name": "etcd", "ip": "192.168.30.1", "healthy": True}],
            "hosts": [row], "stale_leases": [], "partitions": [],
            "world": {"name": "world", "segment": "lan",
                      "addresses": ["192.168.30.2", "fd10:30::2"]}}
    out = status.render(data)
    assert "network 10.30.0.0/16 + fc00:30::/48" in out
    header = next(line for line in out.splitlines() if line.startswith("HOST"))
    assert header.split() == ["HOST", "PUBLIC", "IP", "SUBNET", "PEERS", "PUBLIC", "IPV6",
                              "SUBNET6", "PEERS6", "BACKEND", "FLANNELD", "PODS"]
    assert "fc00:30:0:1::/64" in out and "p1=10.30.1.2,fc00:30:0:1::2" in out
    assert "world: 192.168.30.2 fd10:30::2" in out
    only = {**data, "network": "", "families": [6], "world": None,
            "hosts": [{**row, "subnet": "", "peers": {}, "pods": {"p1": "fc00:30:0:1::2"}}]}
    out = status.render(only)
    assert "(network fc00:30::/48," in out and "PUBLIC IP " not in out
    assert "p1=fc00:30:0:1::2 " not in out and "p1=fc00:30:0:1::2" in out


def test_parse_ping6_output() -> None:
    out = ("PING fc00:30:0:53::2 (fc00:30:0:53::2) 56 data bytes\n"
           "[1700000000.100000] 64 bytes from fc00:30:0:53::2: icmp_seq=1 ttl=63 time=0.5 ms\n"
           "[1700000000.110000] 64 bytes from fc00:30:0:53::2: icmp_seq=2 ttl=63 time=0.5 ms\n"
           "\n--- fc00:30:0:53::2 ping statistics ---\n"
           "3 packets transmitted, 2 received, 33% packet loss, time 20ms\n")
    stats = parse_ping(out, "h1/p1", "h2/p1")
    assert (stats.sent, stats.received, stats.in_flight, stats.lost) == (3, 2, 1, 0)
    assert stats.longest_gap_s == 0.01


def test_full_size_payloads() -> None:
    assert probes.full_size(1430, 6) == 1382  # 1430 - 40 IPv6 - 8 ICMPv6
    assert probes.full_size(1450, 4) == 1422  # 1450 - 20 IPv4 - 8 ICMP
