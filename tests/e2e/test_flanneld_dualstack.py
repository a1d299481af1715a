"""flanneld, dual-stack host-gw, against real etcd and namespaces: flannel's `&` key and
value, the v6 subnet.env lines, flannel's IPv6 route per peer, the ip6 masquerade table,
pods that ping over IPv6, and a route deleted by hand put back by the resync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv6Interface, IPv6Network

import pytest
from e2e_cluster import Cluster, Host, Underlay, ip_json, metric
from netns_lab.netns import run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("flanneld-ds")]

CONFIG = {"Network": "10.7.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00:7::/48",
          "Backend": {"Type": "host-gw"}}


def v6(host: Host) -> str:
    return f"fd7a::{host.number}"


def subnet6(host: Host) -> IPv6Network:
    return IPv6Interface(host.subnet_env()["FLANNEL_IPV6_SUBNET"]).network


def pod6(host: Host) -> str:
    return str(subnet6(host).network_address + 2)


@pytest.fixture(scope="module")
def cluster(underlay: Underlay) -> Iterator[Cluster]:
    c = Cluster(underlay, "ds", CONFIG, args=["--ip-masq"])
    c.put_config()
    try:
        hosts = [c.add_host(n) for n in ("h1", "h2")]
        for h in hosts:
            run(["ip", "-n", h.ns, "addr", "add", f"{v6(h)}/64", "dev", "eth0", "nodad"])
            c.start(h)
        for h in hosts:
            c.wait_ready(h)
            c.add_pod(h)
            sub = subnet6(h)
            run(["ip", "-n", h.ns, "addr", "add", f"{sub.network_address + 1}/64", "dev", "cni0",
                 "nodad"])
            assert h.pod_ns is not None
            run(["ip", "-n", h.pod_ns, "addr", "add", f"{pod6(h)}/64", "dev", "eth0", "nodad"])
            run(["ip", "-n", h.pod_ns, "route", "add", "::/0", "via",
                 str(sub.network_address + 1)])
            run(["ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        yield c
    finally:
        c.teardown()


def routes6(host: Host) -> dict[str, str]:
    return {r["dst"]: r.get("gateway", "") for r in ip_json(host.ns, "-6", "route")
            if r["dst"].startswith("fc00:7:")}


def test_lease_and_subnet_env_are_flannels(cluster: Cluster) -> None:
    for h in cluster.hosts:
        env = h.subnet_env()
        assert list(env) == ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK",
                             "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
        assert env["FLANNEL_IPV6_NETWORK"] == "fc00:7::/48" and env["FLANNEL_MTU"] == "1500"
        sub4 = env["FLANNEL_SUBNET"].replace(".1/", ".0-")
        sub6 = subnet6(h)
        key = f"{cluster.prefix}/subnets/{sub4}&{sub6.network_address}-{sub6.prefixlen}"
        value = cluster.etcd.etcdctl("get", key, "--print-value-only").strip()
        assert value == json.dumps({"PublicIP": h.ip, "PublicIPv6": v6(h),
                                    "BackendType": "host-gw"}, separators=(",", ":")), value
    assert len({subnet6(h) for h in cluster.hosts}) == 2


def test_v6_routes_masquerade_and_pods_ping(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts
    for h, peer in ((h1, h2), (h2, h1)):
        wait_for(lambda h=h, peer=peer: routes6(h).get(str(subnet6(peer))) == v6(peer), 20,
                 what=f"{h.name}: the IPv6 route to {peer.name}")
        tables = run(["ip", "netns", "exec", h.ns, "nft", "list", "tables"]).stdout
        assert "table ip6 pyflannel" in tables and "table ip pyflannel" in tables
    for src, dst in ((h1, h2), (h2, h1)):
        assert src.pod_ns is not None
        wait_for(lambda src=src, dst=dst: run(
            ["ip", "netns", "exec", src.pod_ns, "ping", "-6", "-c1", "-W1", "-n", pod6(dst)],
            check=False).returncode == 0, 10, what=f"{src.name} pod -> {dst.name} pod, IPv6")


def test_a_v6_route_deleted_by_hand_is_repaired(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts
    before = metric(h1, "flanneld_repairs_total", 'kind="route6"')
    run(["ip", "-n", h1.ns, "route", "del", str(subnet6(h2))])
    wait_for(lambda: routes6(h1).get(str(subnet6(h2))) == v6(h2), 20,
             what="the resync to put the IPv6 route back")
    wait_for(lambda: metric(h1, "flanneld_repairs_total", 'kind="route6"') == before + 1, 10,
             what="the repair to be counted")
