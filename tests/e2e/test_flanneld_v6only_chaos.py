"""IPv6-only vxlan under faults, against real etcd and namespaces: kill -9 of a flanneld
and its restart, then a 10 s etcd outage, under a 100/s ping6 between pods on two hosts.
Nothing may be lost, no kernel entry may change and no node may change its subnet."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from e2e_cluster import Cluster, Host, Underlay, ip_json, ping_counts, readyz
from netns_lab.netns import ip, run, wait_for
from test_flanneld_v6only import V6NET, add_pod6, pod6, v6

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("flanneld-v6chaos")]


@pytest.fixture(scope="module")
def cluster(underlay: Underlay) -> Iterator[Cluster]:
    c = Cluster(underlay, "v6c", {"EnableIPv4": False, "EnableIPv6": True,
                                  "IPv6Network": V6NET, "Backend": {"Type": "vxlan"}})
    c.add_etcd("e", 241)  # its own, to stop
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


def kernel(h: Host) -> str:
    """Our IPv6 entries on the host, as text to compare."""
    neigh = ip_json(h.ns, "-6", "neigh", "show", "dev", "flannel-v6.1")
    fdb = json.loads(run(["bridge", "-j", "-n", h.ns, "fdb", "show", "dev",
                          "flannel-v6.1"]).stdout or "[]")
    routes = ip_json(h.ns, "-6", "route", "show", "dev", "flannel-v6.1")
    link = ip_json(h.ns, "link", "show", "flannel-v6.1")
    return json.dumps([sorted((n["dst"], n.get("lladdr", "")) for n in neigh),
                       sorted((f["mac"], f.get("dst", "")) for f in fdb),
                       sorted((r["dst"], r.get("gateway", "")) for r in routes),
                       [(x["address"], x["mtu"], x["ifindex"]) for x in link]])


def test_kill9_and_an_etcd_outage_lose_nothing(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts
    assert h1.pod_ns is not None
    wait_for(lambda: run(["ip", "netns", "exec", h1.pod_ns, "ping", "-6", "-c1", "-W1",
                          pod6(h2)], check=False).returncode == 0, 15, what="ping6 h1 -> h2")
    before = {h.name: (kernel(h), h.subnet_env()) for h in cluster.hosts}
    log = cluster.sandbox.state_dir / "v6chaos-ping.log"
    pinger = cluster.sandbox.spawn("v6chaos-ping", ["ping", "-6", "-n", "-i", "0.01",
                                                    pod6(h2)], netns=h1.pod_ns, log=log)
    try:
        wait_for(lambda: "icmp_seq=" in log.read_text(errors="replace"), 10,
                 what="the ping6 to answer")
        cluster.stop(h1, signal.SIGKILL)
        cluster.start(h1, "--iface", v6(h1))
        cluster.wait_ready(h1)
        cluster.etcd.stop()
        wait_for(lambda: readyz(h1)[0] == 503, 30, what="h1 to say etcd is gone")
        time.sleep(10)  # the fault's length, not a wait for a condition
        cluster.etcd.start()
        for h in cluster.hosts:
            cluster.wait_ready(h, timeout=60)
    finally:
        if pinger.poll() is None:
            os.kill(pinger.pid, signal.SIGINT)
        pinger.wait(timeout=10)
        cluster.sandbox.pidfile("v6chaos-ping").unlink(missing_ok=True)
    sent, received = ping_counts(log.read_text(errors="replace"))
    assert sent > 500 and received == sent, f"{sent - received} of {sent} lost"
    after = {h.name: (kernel(h), h.subnet_env()) for h in cluster.hosts}
    assert after == before  # adopted, not rebuilt; the same subnets
