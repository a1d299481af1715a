"""The lab's pure pieces beyond topology: peer state, leases, partition rules, ICMP, capture
decoding, the CNI conflist and tables (no root, no etcd)."""

from __future__ import annotations

import base64
import json
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from netns_lab import chaos, observe, ping, runtime, topology
from netns_lab.plan import make_plan
from netns_lab.status import table

from core.lease import decode_lease

VX = decode_lease("10.5.34.0-24", '{"PublicIP":"192.168.64.4","PublicIPv6":null,'
                  '"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:7a:19:3b:d0:0f"}}')


def view(routes: list[dict[str, Any]], neighs: list[dict[str, Any]] | None = None,
         fdb: list[dict[str, Any]] | None = None) -> observe.KernelView:
    return observe.KernelView(routes=routes, neighs=neighs or [], fdb=fdb or [])


# the kernel state of flannel-compat vector D, as `ip -j` / `bridge -j` print it
D_ROUTE: dict[str, Any] = {"dst": "10.5.34.0/24", "gateway": "10.5.34.0", "dev": "flannel.1",
                           "flags": ["onlink"]}
D_NEIGH: dict[str, Any] = {"dst": "10.5.34.0", "dev": "flannel.1",
                           "lladdr": "0e:7a:19:3b:d0:0f", "state": ["PERMANENT"]}
D_FDB: dict[str, Any] = {"mac": "0e:7a:19:3b:d0:0f", "ifname": "flannel.1", "dst": "192.168.64.4",
         "flags": ["self"], "state": "permanent"}


def test_peer_state_vxlan_needs_route_neighbour_and_fdb() -> None:
    assert observe.peer_state(VX, view([D_ROUTE], [D_NEIGH], [D_FDB])) == "vxlan"
    assert observe.peer_state(VX, view([D_ROUTE], [D_NEIGH], [])) == "partial"
    assert observe.peer_state(VX, view([D_ROUTE], [], [D_FDB])) == "partial"
    stale_mac = {**D_NEIGH, "lladdr": "aa:bb:cc:dd:ee:ff"}
    assert observe.peer_state(VX, view([D_ROUTE], [stale_mac], [D_FDB])) == "partial"
    assert observe.peer_state(VX, view([], [D_NEIGH], [D_FDB])) == "partial"
    assert observe.peer_state(VX, view([], [], [])) == "missing"
    old_iproute = {**D_FDB, "dev": "flannel.1"}
    del old_iproute["ifname"]
    assert observe.peer_state(VX, view([D_ROUTE], [D_NEIGH], [old_iproute])) == "vxlan"


def test_peer_state_direct_route_for_hostgw_and_directrouting() -> None:
    hostgw = decode_lease("10.5.36.0-24", '{"PublicIP":"192.168.64.6","BackendType":"host-gw"}')
    route: dict[str, Any] = {"dst": "10.5.36.0/24", "gateway": "192.168.64.6", "dev": "eth0"}
    assert observe.peer_state(hostgw, view([route])) == "direct"
    assert observe.peer_state(VX, view([{"dst": "10.5.34.0/24", "gateway": "192.168.64.4",
                                         "dev": "eth0"}])) == "direct"
    assert observe.peer_state(hostgw, view([{**route, "gateway": "192.168.64.9"}])) == "partial"


def test_decode_leases_from_etcdctl_json_skips_bad_keys() -> None:
    def kv(key: str, value: str, lease: int = 0) -> dict[str, object]:
        return {"key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(), "lease": lease}
    good = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"host-gw"}'
    out = json.dumps({"kvs": [kv("/coreos.com/network/subnets/10.5.52.0-24", good, 77),
                              kv("/coreos.com/network/subnets/not-a-subnet", good)]})
    leases, problems = observe.decode_leases(out)
    assert [(str(ls.subnet), ls.lease_id) for ls in leases] == [("10.5.52.0/24", 77)]
    assert len(problems) == 1 and "not-a-subnet" in problems[0]
    assert observe.decode_leases("{}") == ([], [])


def test_json_stream_splits_batch_output() -> None:
    assert observe._json_stream('[{"a":1}]\n[]\n[{"b":2}]\n') == [[{"a": 1}], [], [{"b": 2}]]


def test_subnet_env_and_pod_routes(tmp_path: Path) -> None:
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\n")
    assert observe.read_subnet_env(env)["FLANNEL_SUBNET"] == "10.5.52.1/24"
    assert observe.read_subnet_env(tmp_path / "missing") == {}
    routes: list[dict[str, Any]] = [D_ROUTE, {"dst": "10.5.52.0/24", "dev": "cni0"},
                                    {"dst": "192.168.64.0/24"}, {"dst": "default"}]
    assert observe.pod_routes(view(routes), IPv4Network("10.5.0.0/16"),
                              "10.5.52.0/24") == ["10.5.34.0/24"]


def test_partition_rules_same_segment_by_port_across_routers_by_address() -> None:
    plan = make_plan(topology.load("vxlan-routed"), "lab")
    rules = chaos.partition_rules(plan, [("e1", "e2"), ("e1", "w1")])
    east, west = rules["east"], rules["west"]
    assert 'iifname "to-e1" oifname "to-e2" drop comment "partition e1 e2"' in east
    assert 'iifname "to-e2" oifname "to-e1" drop comment "partition e1 e2"' in east
    w1, e1 = plan.ip_of("w1"), plan.ip_of("e1")
    assert f'iifname "to-e1" ip daddr {w1} drop comment "partition e1 w1"' in east
    assert west == [f'iifname "to-w1" ip daddr {e1} drop comment "partition e1 w1"']


def test_nft_script_replaces_the_table_atomically() -> None:
    empty = chaos.nft_script([])
    assert empty.splitlines() == ["table bridge pfl_partition", "delete table bridge pfl_partition"]
    full = chaos.nft_script(["iifname \"a\" drop"])
    assert full.index("delete table") < full.index("chain forward")
    assert "type filter hook forward priority 0; policy accept;" in full


def test_icmp_echo_round_trip() -> None:
    request = ping.echo_request(0x1234, 7)
    assert request[0] == 8 and ping._checksum(request) == 0
    reply = bytes([0]) + request[1:2] + b"\0\0" + request[4:]  # type 0, checksum not checked
    ip_header = bytes([0x45]) + bytes(11) + bytes([10, 5, 34, 2]) + bytes([10, 5, 52, 2])
    got = ping.parse_echo_reply(ip_header + reply, 0x1234)
    assert got is not None and got[0] == "10.5.34.2" and got[1] >= 0
    assert ping.parse_echo_reply(ip_header + reply, 0x9999) is None
    assert ping.parse_echo_reply(ip_header + request, 0x1234) is None  # a request, not a reply


def test_capture_decodes_vxlan_and_plain_ip() -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    inner = Ether(src="0e:7a:19:3b:d0:0f", dst="c6:d2:32:6f:8f:44") / IP(
        src="10.5.34.2", dst="10.5.52.2") / ICMP(type=8)
    pkt = Ether(bytes(Ether() / IP(src="192.168.64.4", dst="192.168.64.3")
                      / UDP(sport=40000, dport=8472) / VXLAN(vni=1) / inner))
    d = decode_pkt(pkt)
    assert d is not None
    assert (d["encap"], d["outer_src"], d["outer_dst"], d["vni"], d["port"]) == (
        "vxlan", "192.168.64.4", "192.168.64.3", 1, 8472)
    assert (d["inner_src"], d["inner_dst"], d["inner_proto"]) == (
        "10.5.34.2", "10.5.52.2", "icmp echo-request")
    assert "vni 1 | inner 10.5.34.2 > 10.5.52.2" in capture_line(d)

    plain = Ether(bytes(Ether() / IP(src="10.5.34.2", dst="10.5.52.2") / ICMP(type=0)))
    d = decode_pkt(plain)
    assert d is not None and d["encap"] == "none" and d["proto"] == "icmp echo-reply"
    etcd = Ether(bytes(Ether() / IP(src="192.168.64.3", dst="192.168.64.1")
                       / TCP(sport=50000, dport=2379)))
    assert decode_pkt(etcd) is None
    assert decode_pkt(etcd, show_all=True) is not None


def decode_pkt(pkt: object, show_all: bool = False) -> dict[str, object] | None:
    from flanneld.capture import decode
    return decode(pkt, show_all=show_all)


def capture_line(d: dict[str, object]) -> str:
    from flanneld.capture import format_line
    return format_line(d, 0.0)


def test_conflist_is_kube_flannels_with_the_hosts_own_files(tmp_path: Path) -> None:
    conf = runtime.flannel_conflist(tmp_path)
    assert (conf["name"], conf["cniVersion"]) == ("cbr0", "0.3.1")
    plugin = conf["plugins"][0]
    assert plugin["type"] == "flannel"
    assert plugin["delegate"] == {"hairpinMode": True, "isDefaultGateway": True}
    assert plugin["subnetFile"] == str(tmp_path / "subnet.env")
    assert plugin["ipam"] == {"dataDir": str(tmp_path / "ipam")}
    assert "ipam" not in plugin["delegate"]  # flannel refuses ipam inside the delegate
    path = runtime.write_conflist(tmp_path)
    assert json.loads(path.read_text()) == conf


def test_cni_args_and_result_address() -> None:
    args = runtime.cni_args("lab-h1-p1", "p1")
    assert args.startswith("IgnoreUnknown=1;") and "K8S_POD_NAME=p1" in args
    result = {"cniVersion": "0.3.1", "ips": [{"version": "6", "address": "fd00::2/64"},
                                             {"version": "4", "address": "10.5.52.2/24"}]}
    assert runtime.result_ipv4(result) == "10.5.52.2"


def test_table_aligns_columns() -> None:
    out = table(["A", "LONGER"], [["xxxx", "y"], ["z", ""]]).splitlines()
    assert out == ["A     LONGER", "----  ------", "xxxx  y", "z"]
