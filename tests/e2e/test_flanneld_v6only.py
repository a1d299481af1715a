"""flanneld, IPv6-only (EnableIPv4 false) in etcd mode, which flannel cannot do, against real
etcd and namespaces, for both backends: the `&<v6>` key and flannel's value with PublicIP
0.0.0.0, a subnet.env with only the IPv6 lines, no IPv4 device, route or nftables table,
the IPv6 data plane for each peer, and pods that ping over IPv6 with a full-size DF packet.

etcd is reached over the underlay's IPv4 here (the subject is the data plane); the lab's
ipv6-only topology runs etcd over IPv6 too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv6Interface, IPv6Network

import pytest
from e2e_cluster import Cluster, Host, Underlay, ip_json, metric
from netns_lab.netns import ip, run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("flanneld-v6only")]

V6NET = "fc00:8::/48"


def v6(host: Host) -> str:
    return f"fd7b::{host.number}"


def subnet6(host: Host) -> IPv6Network:
    return IPv6Interface(host.subnet_env()["FLANNEL_IPV6_SUBNET"]).network


def pod6(host: Host) -> str:
    return str(subnet6(host).network_address + 2)


def add_pod6(cluster: Cluster, host: Host) -> None:
    """cni0 with the ::1 of the host's IPv6 subnet, a pod namespace holding the ::2."""
    sub, mtu = subnet6(host), host.subnet_env()["FLANNEL_MTU"]
    gw = sub.network_address + 1
    pod_ns = cluster.sandbox.add_netns(f"{cluster.name}{host.name}p", forwarding=False)
    ip("link", "add", "cni0", "type", "bridge", netns=host.ns)
    ip("addr", "add", f"{gw}/{sub.prefixlen}", "dev", "cni0", "nodad", netns=host.ns)
    ip("link", "set", "cni0", "up", netns=host.ns)
    cluster.sandbox.veth(host.ns, "vpod", pod_ns, "eth0", mtu=int(mtu))
    ip("link", "set", "vpod", "master", "cni0", netns=host.ns)
    ip("addr", "add", f"{pod6(host)}/{sub.prefixlen}", "dev", "eth0", "nodad", netns=pod_ns)
    ip("route", "add", "::/0", "via", str(gw), netns=pod_ns)
    run(["ip", "netns", "exec", host.ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    host.pod_ns = pod_ns


@pytest.fixture(scope="module", params=["vxlan", "host-gw"])
def cluster(request: pytest.FixtureRequest, underlay: Underlay) -> Iterator[Cluster]:
    backend = request.param
    config = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": V6NET,
              "Backend": {"Type": backend}}
    c = Cluster(underlay, "v6o" + backend[0], config, args=["--ip-masq"])
    c.put_config()
    try:
        hosts = [c.add_host(n) for n in ("h1", "h2")]
        for h in hosts:
            ip("addr", "add", f"{v6(h)}/64", "dev", "eth0", "nodad", netns=h.ns)
            c.start(h, "--iface", v6(h))
        for h in hosts:
            c.wait_ready(h)
            add_pod6(c, h)
        yield c
    finally:
        c.teardown()


def backend_of(cluster: Cluster) -> str:
    return str(cluster.config["Backend"]["Type"])


def route6(host: Host, dst: str) -> dict[str, object] | None:
    rows = [r for r in ip_json(host.ns, "-6", "route", "show", dst) if r["dst"] == dst]
    return rows[0] if rows else None


def test_lease_and_subnet_env(cluster: Cluster) -> None:
    vxlan = backend_of(cluster) == "vxlan"
    keys = cluster.etcd.etcdctl("get", f"{cluster.prefix}/subnets/", "--prefix",
                                "--keys-only").split()
    assert len(keys) == 2, keys
    for h in cluster.hosts:
        env = h.subnet_env()
        assert list(env) == ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU",
                             "FLANNEL_IPMASQ"], env
        assert env["FLANNEL_IPV6_NETWORK"] == V6NET
        assert env["FLANNEL_MTU"] == ("1430" if vxlan else "1500")  # 1500 - 70 over IPv6
        sub6 = subnet6(h)
        key = f"{cluster.prefix}/subnets/&{sub6.network_address}-{sub6.prefixlen}"
        assert key in keys
        value = cluster.etcd.etcdctl("get", key, "--print-value-only").strip()
        want: dict[str, object] = {"PublicIP": "0.0.0.0", "PublicIPv6": v6(h),
                                   "BackendType": backend_of(cluster)}
        if vxlan:
            dev = ip_json(h.ns, "-d", "link", "show", "flannel-v6.1")[0]
            want["BackendV6Data"] = {"VNI": 1, "VtepMAC": dev["address"]}
        assert value == json.dumps(want, separators=(",", ":")), value
    assert len({subnet6(h) for h in cluster.hosts}) == 2


def test_no_ipv4_state(cluster: Cluster) -> None:
    for h in cluster.hosts:
        links = {link["ifname"] for link in ip_json(h.ns, "link", "show")}
        assert "flannel.1" not in links
        assert ("flannel-v6.1" in links) == (backend_of(cluster) == "vxlan")
        tables = run(["ip", "netns", "exec", h.ns, "nft", "list", "tables"]).stdout
        assert "table ip6 pyflannel" in tables and "table ip pyflannel" not in tables


def test_peers_programmed_and_pods_ping_full_size(cluster: Cluster) -> None:
    vxlan = backend_of(cluster) == "vxlan"
    for h in cluster.hosts:
        peer = cluster.peers_of(h)[0]
        sub = str(subnet6(peer))

        wait_for(lambda h=h, sub=sub: route6(h, sub) is not None, 20,
                 what=f"{h.name}: the route to {peer.name}")
        r = route6(h, sub)
        assert r is not None
        if vxlan:
            assert r["dev"] == "flannel-v6.1" and r["gateway"] == str(subnet6(peer)[0])
            assert "onlink" in r.get("flags", [])
            fdb = json.loads(run(["bridge", "-j", "-n", h.ns, "fdb", "show", "dev",
                                  "flannel-v6.1"]).stdout)
            assert any(f.get("dst") == v6(peer) for f in fdb), fdb
        else:
            assert r["dev"] == "eth0" and r["gateway"] == v6(peer)
        wait_for(lambda h=h: metric(h, "flanneld_peers_programmed") == 1, 10,
                 what=f"{h.name}: 1 peer programmed in /metrics")
    h1, h2 = cluster.hosts
    mtu = int(h1.subnet_env()["FLANNEL_MTU"])
    for src, dst in ((h1, h2), (h2, h1)):
        assert src.pod_ns is not None
        # 40 bytes of IPv6 header and 8 of ICMPv6: a packet of exactly the pod MTU, DF
        cmd = ["ip", "netns", "exec", src.pod_ns, "ping", "-6", "-c1", "-W1", "-n", "-M", "do",
               "-s", str(mtu - 48), pod6(dst)]
        wait_for(lambda cmd=cmd: run(cmd, check=False).returncode == 0, 15,
                 what=f"{src.name} pod -> {dst.name} pod, IPv6, {mtu} bytes with DF")
