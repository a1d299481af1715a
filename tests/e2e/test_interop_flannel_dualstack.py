"""A flannel dual-stack vxlan node beside ours, against real etcd and namespaces.

The flannel node is built by hand exactly as flannel v0.26 builds it (reference
flannel-v6-wireguard-scale.md §1-2): its lease is written as flannel writes it (the `&`
key, Go's field order, a TTL lease), its two devices as flannel creates them
(flannel.1 and flannel-v6.1, a random locally administered MAC each, MTU ext - 50 on
both, the subnets' network addresses as /32 and /128, accept_ra 0) and our node's
entries on them as flannel's handleSubnetEvents programs them, read from our lease.

Our flanneld must program the flannel node exactly as flannel would (the same six
entries), publish a lease that flannel's key regex and JSON decoding read, and pods
must ping both ways over IPv4 and IPv6. flannel's v6 MTU is 20 bytes too large
(docs/compatibility.md): our pods' full-size DF packets cross in both families.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

import pytest
from e2e_cluster import Cluster, Host, Underlay, ip_json
from netns_lab.netns import ip, run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("interop-ds")]

CONFIG = {"Network": "10.9.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00:9::/48",
          "Backend": {"Type": "vxlan"}}
# flannel's subnetRegex (pkg/subnet/subnet.go), as Go's RE2 reads it
FLANNEL_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")
THEIRS4, THEIRS6 = IPv4Interface("10.9.99.0/24"), IPv6Interface("fc00:9:0:99::/64")
MAC4, MAC6 = "7a:11:22:33:44:01", "7a:11:22:33:44:02"  # locally administered, as flannel's
FLANNEL_MTU = 1450  # flannel: ext - 50 for both devices


def v6(host: Host) -> str:
    return f"fd79::{host.number}"


def sh(ns: str, *lines: str) -> None:
    for line in lines:
        run(["ip", "netns", "exec", ns, "sh", "-c", line])


def build_flannel_node(cluster: Cluster, h: Host) -> None:
    """flannel's lease, devices and pod, by hand."""
    value = {"PublicIP": h.ip, "PublicIPv6": v6(h), "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": MAC4},
             "BackendV6Data": {"VNI": 1, "VtepMAC": MAC6}}
    grant = cluster.etcd.etcdctl("lease", "grant", "300")
    lease_id = grant.split()[1]
    key = f"{cluster.prefix}/subnets/10.9.99.0-24&fc00:9:0:99::-64"
    cluster.etcd.etcdctl("put", "--lease", lease_id, key,
                         json.dumps(value, separators=(",", ":")))
    sh(h.ns,
       f"ip link add flannel.1 address {MAC4} mtu {FLANNEL_MTU} type vxlan id 1 "
       f"local {h.ip} dev eth0 nolearning dstport 8472",
       "ip addr add 10.9.99.0/32 dev flannel.1", "ip link set flannel.1 up",
       f"ip link add flannel-v6.1 address {MAC6} mtu {FLANNEL_MTU} type vxlan id 1 "
       f"local {v6(h)} dev eth0 nolearning dstport 8472",
       "sysctl -qw net.ipv6.conf.flannel-v6/1.accept_ra=0",
       "ip addr add fc00:9:0:99::/128 dev flannel-v6.1 nodad", "ip link set flannel-v6.1 up",
       "sysctl -qw net.ipv6.conf.all.forwarding=1")
    pod = cluster.sandbox.add_netns(f"{cluster.name}{h.name}p", forwarding=False)
    sh(h.ns, "ip link add cni0 type bridge", "ip addr add 10.9.99.1/24 dev cni0",
       "ip addr add fc00:9:0:99::1/64 dev cni0 nodad", "ip link set cni0 up")
    cluster.sandbox.veth(h.ns, "vpod", pod, "eth0", mtu=FLANNEL_MTU)
    sh(h.ns, "ip link set vpod master cni0")
    sh(pod, "ip addr add 10.9.99.2/24 dev eth0", "ip addr add fc00:9:0:99::2/64 dev eth0 nodad",
       "ip route add default via 10.9.99.1", "ip -6 route add ::/0 via fc00:9:0:99::1")
    h.pod_ns = pod


def program_like_flannel(h: Host, peer_lease: dict[str, Any], sub4: str, sub6: str) -> None:
    """flannel's handleSubnetEvents for one added lease: neighbour, FDB, then the route."""
    s4, s6 = sub4.split("/")[0], sub6.split("/")[0]
    mac4, mac6 = peer_lease["BackendData"]["VtepMAC"], peer_lease["BackendV6Data"]["VtepMAC"]
    sh(h.ns,
       f"ip neigh replace {s4} lladdr {mac4} dev flannel.1 nud permanent",
       f"bridge fdb replace {mac4} dev flannel.1 dst {peer_lease['PublicIP']} self permanent",
       f"ip route replace {sub4} via {s4} dev flannel.1 onlink",
       f"ip -6 neigh replace {s6} lladdr {mac6} dev flannel-v6.1 nud permanent",
       f"bridge fdb replace {mac6} dev flannel-v6.1 dst {peer_lease['PublicIPv6']} "
       "self permanent",
       f"ip -6 route replace {sub6} via {s6} dev flannel-v6.1 onlink")


@pytest.fixture(scope="module")
def pair(underlay: Underlay) -> Iterator[tuple[Cluster, Host, Host]]:
    c = Cluster(underlay, "ids", CONFIG, args=["--ip-masq"])
    c.put_config()
    try:
        ours, theirs = c.add_host("h1"), c.add_host("h2")
        for h in (ours, theirs):
            ip("addr", "add", f"{v6(h)}/64", "dev", "eth0", "nodad", netns=h.ns)
        build_flannel_node(c, theirs)
        c.start(ours)
        c.wait_ready(ours)
        c.add_pod(ours)
        env = ours.subnet_env()
        sub6 = IPv6Interface(env["FLANNEL_IPV6_SUBNET"]).network
        sh(ours.ns, f"ip addr add {sub6.network_address + 1}/64 dev cni0 nodad",
           "sysctl -qw net.ipv6.conf.all.forwarding=1")
        assert ours.pod_ns is not None
        sh(ours.pod_ns, f"ip addr add {sub6.network_address + 2}/64 dev eth0 nodad",
           f"ip -6 route add ::/0 via {sub6.network_address + 1}")
        _, value = our_lease(c, ours)
        program_like_flannel(theirs, value, str(ours.subnet), str(sub6))
        yield c, ours, theirs
    finally:
        c.teardown()


def our_lease(c: Cluster, ours: Host) -> tuple[str, dict[str, Any]]:
    out = c.etcd.etcdctl("get", f"{c.prefix}/subnets/", "--prefix").splitlines()
    pairs = dict(zip(out[::2], out[1::2], strict=True))
    (key,) = [k for k in pairs if "10.9.99.0" not in k]
    return key, json.loads(pairs[key])


def pod6(h: Host) -> str:
    if h.name == "h2":
        return "fc00:9:0:99::2"
    return str(IPv6Interface(h.subnet_env()["FLANNEL_IPV6_SUBNET"]).network.network_address + 2)


def pod4(h: Host) -> str:
    return "10.9.99.2" if h.name == "h2" else h.pod_ip


def test_our_lease_reads_as_flannels(pair: tuple[Cluster, Host, Host]) -> None:
    c, ours, _ = pair
    key, value = our_lease(c, ours)
    match = FLANNEL_KEY_RE.search(key)
    assert match is not None, key
    sub6 = IPv6Interface(ours.subnet_env()["FLANNEL_IPV6_SUBNET"]).network
    assert match.groups() == (str(ours.subnet.network_address), "24",
                              str(sub6.network_address), "64")
    raw = c.etcd.etcdctl("get", key, "--print-value-only").strip()
    assert list(json.loads(raw)) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData",
                                     "BackendV6Data"]  # Go's struct order
    assert value["PublicIPv6"] == v6(ours) and value["BackendV6Data"]["VNI"] == 1
    assert value["BackendV6Data"]["VtepMAC"] != value["BackendData"]["VtepMAC"]


def test_we_program_the_flannel_node_as_flannel_would(pair: tuple[Cluster, Host, Host]) -> None:
    _, ours, theirs = pair

    def entries() -> dict[str, Any]:
        neigh4 = {(n["dst"], n["lladdr"]) for n in ip_json(ours.ns, "-4", "neigh", "show",
                                                            "dev", "flannel.1")}
        neigh6 = {(n["dst"], n["lladdr"]) for n in ip_json(ours.ns, "-6", "neigh", "show",
                                                            "dev", "flannel-v6.1")}
        fdb = {(f["mac"], f.get("dst"), f.get("ifname", "")) for dev in ("flannel.1",
                                                                          "flannel-v6.1")
               for f in json.loads(run(["bridge", "-j", "-n", ours.ns, "fdb", "show", "dev",
                                        dev]).stdout or "[]")
               if "self" in f.get("flags", []) and f.get("state") == "permanent"}
        r4 = {(r["dst"], r.get("gateway"), r.get("dev"), tuple(r.get("flags", [])))
              for r in ip_json(ours.ns, "-4", "route", "show", "10.9.99.0/24")}
        r6 = {(r["dst"], r.get("gateway"), r.get("dev"), tuple(r.get("flags", [])))
              for r in ip_json(ours.ns, "-6", "route", "show", "fc00:9:0:99::/64")}
        return {"neigh4": neigh4, "neigh6": neigh6, "fdb": {(m, d) for m, d, _ in fdb},
                "route4": r4, "route6": r6}

    want = {"neigh4": {("10.9.99.0", MAC4)}, "neigh6": {("fc00:9:0:99::", MAC6)},
            "fdb": {(MAC4, theirs.ip), (MAC6, v6(theirs))},
            "route4": {("10.9.99.0/24", "10.9.99.0", "flannel.1", ("onlink",))},
            "route6": {("fc00:9:0:99::/64", "fc00:9:0:99::", "flannel-v6.1", ("onlink",))}}
    wait_for(lambda: all(want[k] <= v for k, v in entries().items()), 20,
             what="the flannel node's six entries on our node")
    got = entries()
    assert got["route4"] == want["route4"] and got["route6"] == want["route6"], got


def test_pods_ping_across_in_both_families(pair: tuple[Cluster, Host, Host]) -> None:
    _, ours, theirs = pair
    for src, dst in ((ours, theirs), (theirs, ours)):
        assert src.pod_ns is not None
        for fam, addr in (("-4", pod4(dst)), ("-6", pod6(dst))):
            cmd = ["ip", "netns", "exec", src.pod_ns, "ping", fam, "-c1", "-W1", "-n", addr]
            wait_for(lambda cmd=cmd: run(cmd, check=False).returncode == 0, 15,
                     what=f"{src.name} pod -> {dst.name} pod ({fam})")
    # our pods' largest packets with DF: FLANNEL_MTU is ext - 70 once IPv6 is on
    mtu = int(ours.subnet_env()["FLANNEL_MTU"])
    assert mtu == 1430
    assert ours.pod_ns is not None
    for fam, addr, header in (("-4", pod4(theirs), 28), ("-6", pod6(theirs), 48)):
        proc = run(["ip", "netns", "exec", ours.pod_ns, "ping", fam, "-c1", "-W2", "-n", "-M",
                    "do", "-s", str(mtu - header), addr], check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
