"""flanneld end to end: three hosts per backend, real etcd, real kernel, real packets.

One cluster per backend is shared by the tests of this module; tests that
disturb it (drift, lease loss, kill -9, SIGTERM) put it back before they end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from e2e_capture import capture, icmp_frames, vxlan_frames
from e2e_cluster import (
    Cluster,
    Host,
    Underlay,
    all_programmed,
    entries_for,
    ip_json,
    metric,
    ping,
    ping_counts,
    readyz,
    vxlan_device,
)
from netns_lab.netns import ip, run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

VNI, PORT = 42, 8475
CONFIGS = {
    "vxlan": {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": VNI, "Port": PORT}},
    "host-gw": {"Network": "10.6.0.0/16", "Backend": {"Type": "host-gw"}},
}
HOST_TABLE = "table inet hostfw {\n chain input { type filter hook input priority 0; }\n}\n"


@pytest.fixture(scope="module", params=[
    pytest.param("vxlan", marks=pytest.mark.xdist_group("flanneld-vxlan")),
    pytest.param("host-gw", marks=pytest.mark.xdist_group("flanneld-hostgw"))])
def cluster(request: pytest.FixtureRequest, underlay: Underlay) -> Iterator[Cluster]:
    backend = request.param
    c = Cluster(underlay, "vx" if backend == "vxlan" else "hg", CONFIGS[backend],
                args=["--ip-masq"])
    c.put_config()
    try:
        h1 = c.add_host("h1")  # h1 has a ruleset of its own, which we must not touch
        run(["ip", "netns", "exec", h1.ns, "nft", "-f", "-"], input=HOST_TABLE)
        c.hosts.remove(h1)
        c.hosts.insert(0, h1)
        c.start(h1)
        c.up(["h2", "h3"])
        c.wait_ready(h1)
        c.add_pod(h1)
        for h in c.hosts:
            wait_for(lambda h=h: all_programmed(c, h, kind(c)), 20,
                     what=f"{h.name} to program its peers")
        yield c
    finally:
        c.teardown()


def kind(c: Cluster) -> str:
    return c.config["Backend"]["Type"]


def check_converged(c: Cluster, timeout: float = 20) -> None:
    for h in c.hosts:
        wait_for(lambda h=h: all_programmed(c, h, kind(c)), timeout,
                 what=f"{h.name} to have every peer programmed")


def test_subnet_env_and_kernel_state(cluster: Cluster) -> None:
    mtu = "1450" if kind(cluster) == "vxlan" else "1500"
    subnets = set()
    for h in cluster.hosts:
        env = h.subnet_env()
        assert env["FLANNEL_NETWORK"] == cluster.config["Network"]
        assert env["FLANNEL_MTU"] == mtu and env["FLANNEL_IPMASQ"] == "true"
        assert list(env) == ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU",
                             "FLANNEL_IPMASQ"]
        subnets.add(h.subnet)
        dev = vxlan_device(h.ns)
        if kind(cluster) == "vxlan":
            assert dev is not None
            info = dev["linkinfo"]["info_data"]
            assert (info["id"], info["port"], info["local"]) == (VNI, PORT, h.ip)
            assert dev["mtu"] == 1450
        else:
            assert dev is None
            for peer in cluster.peers_of(h):
                routes = [r for r in ip_json(h.ns, "-4", "route")
                          if r.get("dst") == str(peer.subnet)]
                assert routes and routes[0]["gateway"] == peer.ip and routes[0]["dev"] == "eth0"
        assert metric(h, "flanneld_peers_known") == 2
        assert metric(h, "flanneld_peers_programmed") == 2
        assert metric(h, "flanneld_ready") == 1
    assert len(subnets) == 3


def test_pods_ping_each_other(cluster: Cluster) -> None:
    for src in cluster.hosts:
        for dst in cluster.peers_of(src):
            assert ping(src, dst, count=2, interval="0.1") == (2, 2), (src.name, dst.name)


def test_underlay_shows_the_encapsulation(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    frames = capture(cluster.underlay.ns, f"p{h1.number}",
                     lambda: ping(h1, h2, count=2, interval="0.1"))
    if kind(cluster) == "vxlan":
        found = vxlan_frames(frames, PORT)
        assert found, f"no VXLAN to port {PORT} among {[f.summary() for f in frames]}"
        pairs = set()
        for outer, vx, inner in found:
            assert vx.vni == VNI
            assert {outer.src, outer.dst} == {h1.ip, h2.ip}
            if inner.haslayer("IP"):
                pairs.add((inner["IP"].src, inner["IP"].dst))
        assert (h1.pod_ip, h2.pod_ip) in pairs and (h2.pod_ip, h1.pod_ip) in pairs
    else:
        pairs = {(p.src, p.dst) for p in icmp_frames(frames)}
        assert (h1.pod_ip, h2.pod_ip) in pairs and (h2.pod_ip, h1.pod_ip) in pairs
        assert not vxlan_frames(frames, PORT) and not vxlan_frames(frames, 8472)


def test_ip_masq_rules_and_host_ruleset(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    listing = run(["ip", "netns", "exec", h1.ns, "nft", "list", "ruleset"]).stdout
    assert "table inet hostfw" in listing, "the host's own table must be left alone"
    assert f"ip saddr != {cluster.config['Network']} ip daddr {h1.subnet} return" in listing
    # A pod talking to another host's underlay address leaves masqueraded (rule 5) ...
    frames = capture(cluster.underlay.ns, f"p{h1.number}", lambda: run(
        ["ip", "netns", "exec", str(h1.pod_ns), "ping", "-c", "1", "-W", "1", h2.ip]))
    sources = {p.src for p in icmp_frames(frames) if p.dst == h2.ip}
    assert sources == {h1.ip}
    # ... while pod-to-pod keeps the pod's address (checked on the wire in the test above).


REPAIRS = {
    "vxlan": ["route", "neigh", "fdb", "device", "nft"],
    "host-gw": ["route", "nft"],
}


def break_kernel(c: Cluster, h: Host, peer: Host, what: str) -> None:
    dev = vxlan_device(h.ns)
    name = dev["ifname"] if dev else ""
    s0 = str(peer.subnet.network_address)
    if what == "route":
        ip("route", "del", str(peer.subnet), netns=h.ns)
    elif what == "neigh":
        ip("neigh", "del", s0, "dev", name, netns=h.ns)
    elif what == "fdb":
        macs = [n["lladdr"] for n in ip_json(h.ns, "-4", "neigh", "show", "dev", name)
                if n.get("dst") == s0]
        run(["bridge", "-n", h.ns, "fdb", "del", macs[0], "dev", name, "dst", peer.ip])
    elif what == "device":
        ip("link", "del", name, netns=h.ns)
    elif what == "nft":
        run(["ip", "netns", "exec", h.ns, "nft", "delete", "table", "ip", "pyflannel"])


def test_drift_is_repaired_within_a_resync(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    for what in REPAIRS[kind(cluster)]:
        label = f'kind="{what}"'
        before = metric(h1, "flanneld_repairs_total", label)
        break_kernel(cluster, h1, h2, what)
        if what != "nft":
            assert not all_programmed(cluster, h1, kind(cluster))
        # --resync-interval 1: one resync, plus slack for a loaded machine.
        wait_for(lambda: all_programmed(cluster, h1, kind(cluster)), 10,
                 what=f"{what} to be restored on {h1.name}")
        wait_for(lambda lb=label, b=before: metric(h1, "flanneld_repairs_total", lb) > b,
                 10, what=f"the repair of {what} to be counted")
        if what == "nft":
            listing = run(["ip", "netns", "exec", h1.ns, "nft", "list", "tables"]).stdout
            assert "table ip pyflannel" in listing and "table inet hostfw" in listing
        assert ping(h1, h2, count=1) == (1, 1), f"after repairing {what}"


def test_malformed_leases_remove_nothing(cluster: Cluster) -> None:
    sub = f"{cluster.prefix}/subnets"
    bad = {f"{sub}/not-a-subnet": "x", f"{sub}/10.5.250.0-24": "not json",
           f"{sub}/10.6.250.0-24": '{"PublicIP":"fd00::1"}'}
    before = {h.name: metric(h, "flanneld_leases_rejected_total") for h in cluster.hosts}
    try:
        for key, value in bad.items():
            cluster.etcd.etcdctl("put", key, value)
        for h in cluster.hosts:
            wait_for(lambda h=h: metric(h, "flanneld_leases_rejected_total")
                     >= before[h.name] + 2, 10, what=f"{h.name} to reject the bad leases")
        for h in cluster.hosts:
            assert all_programmed(cluster, h, kind(cluster))
            assert metric(h, "flanneld_peers_known") == 2
            assert readyz(h)[0] == 200
        assert ping(cluster.hosts[0], cluster.hosts[2], count=1) == (1, 1)
    finally:
        for key in bad:
            cluster.etcd.etcdctl("del", key)


def _lease_key(c: Cluster, h: Host) -> str:
    net = h.subnet
    return f"{c.prefix}/subnets/{net.network_address}-{net.prefixlen}"


def test_lease_deleted_by_hand_goes_away_and_comes_back(cluster: Cluster) -> None:
    h1, h2, h3 = cluster.hosts
    assert h2.proc is not None
    os.kill(h2.proc.pid, signal.SIGSTOP)  # so it cannot re-acquire before we look
    try:
        cluster.etcd.etcdctl("del", _lease_key(cluster, h2))
        for peer in (h1, h3):
            wait_for(lambda p=peer: not any(entries_for(p, h2.subnet, h2.ip).values()), 10,
                     what=f"{peer.name} to drop route, neighbour and fdb entry of h2")
    finally:
        os.kill(h2.proc.pid, signal.SIGCONT)
    wait_for(lambda: cluster.etcd.etcdctl("get", _lease_key(cluster, h2)).strip(), 20,
             what="h2 to re-acquire its subnet")
    check_converged(cluster)
    cluster.wait_ready(h2)
    assert metric(h2, "flanneld_lease_acquisitions_total") >= 2
    assert ping(h1, h2, count=1) == (1, 1)


def test_kill9_and_restart_lose_no_packets(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", str(h1.pod_ns), "ping", "-n", "-q", "-i", "0.01", "-c", "700",
         "-W", "1", h2.pod_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for victim in (h1, h2):
            assert cluster.stop(victim, signal.SIGKILL) == -signal.SIGKILL
            cluster.start(victim)
            cluster.wait_ready(victim)
        restarted_while_pinging = pinger.poll() is None
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    sent, received = ping_counts(out)
    assert restarted_while_pinging, "ping ended before the restarts: raise its count"
    assert sent == 700 and received == sent, out


def test_sigterm_leaves_the_data_plane(cluster: Cluster) -> None:
    h1, h3 = cluster.hosts[0], cluster.hosts[2]
    env_before = h3.subnet_file.read_text()
    key = _lease_key(cluster, h3)
    lease_before = json.loads(cluster.etcd.etcdctl("get", key, "-w", "json"))["kvs"][0]
    runtime = h3.subnet_file.parent / "flanneld.json"  # flannelctl reads our settings there
    written = json.loads(runtime.read_text())
    assert h3.proc is not None and written["pid"] == h3.proc.pid
    assert written["etcd_prefix"] == cluster.prefix and written["backend"] == kind(cluster)
    assert oct(runtime.stat().st_mode & 0o777) == "0o600"
    assert cluster.stop(h3, signal.SIGTERM) == 0
    assert not runtime.exists(), "a clean stop removes the runtime file"
    assert h3.subnet_file.read_text() == env_before
    assert all_programmed(cluster, h3, kind(cluster))  # h3's own entries for its peers
    assert all_programmed(cluster, h1, kind(cluster))  # and the peers' for h3
    tables = run(["ip", "netns", "exec", h3.ns, "nft", "list", "tables"]).stdout
    assert "table ip pyflannel" in tables
    lease_after = json.loads(cluster.etcd.etcdctl("get", key, "-w", "json"))["kvs"][0]
    assert lease_after["mod_revision"] == lease_before["mod_revision"]
    assert ping(h1, h3, count=1) == (1, 1)  # the data plane works without flanneld
    cluster.start(h3)
    cluster.wait_ready(h3)
    assert h3.subnet_file.read_text() == env_before  # same subnet after the restart
    if kind(cluster) == "vxlan":  # the device was adopted: same MAC in the same lease
        value = json.loads(cluster.etcd.etcdctl("get", key, "--print-value-only"))
        assert value["BackendData"]["VNI"] == VNI
        dev = vxlan_device(h3.ns)
        assert dev is not None and value["BackendData"]["VtepMAC"] == dev["address"]
    assert IPv4Address(json.loads(cluster.etcd.etcdctl(
        "get", key, "--print-value-only"))["PublicIP"]) == IPv4Address(h3.ip)
