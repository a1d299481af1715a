"""flannelctl on dual-stack flanneld nodes (real etcd, namespaces, kernel): status, leases and
doctor show the IPv6 side; doctor catches IPv6 forwarding turned off, a v6 route deleted and
flannel-v6.<VNI>'s MTU and accept_ra changed by hand (with flanneld frozen, so the resync
cannot repair them first), and flanneld's repair turns it OK again; a capture on the
underlay decodes a pod-to-pod ping6 as IPv6 in VXLAN over IPv6, through `flannelctl
trace` and through `python -m netns_lab.capture` (netns-lab capture's decoder). host-gw's
IPv6 routes are checked the same way."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from e2e_cluster import HEALTHZ_PORT, Cluster, Host, Underlay, metric
from netns_lab.netns import run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("ctl-v6")]
FLANNELCTL = str(Path(sys.executable).with_name("flannelctl"))


def config(backend: str, n: int) -> dict[str, Any]:
    return {"Network": f"10.{n}.0.0/16", "EnableIPv6": True, "IPv6Network": f"fc00:{n}::/48",
            "Backend": {"Type": backend}}


def v6(host: Host) -> str:
    return f"fd7c::{host.number}"


def subnet6(host: Host) -> IPv6Network:
    return IPv6Interface(host.subnet_env()["FLANNEL_IPV6_SUBNET"]).network


def pod6(host: Host) -> str:
    return str(subnet6(host).network_address + 2)


def dual_stack(underlay: Underlay, name: str, backend: str, n: int) -> Iterator[Cluster]:
    """Two flanneld nodes, each with a global IPv6 address on eth0 and a dual-stack pod."""
    c = Cluster(underlay, name, config(backend, n))
    c.put_config()
    try:
        hosts = [c.add_host(x) for x in ("h1", "h2")]
        for h in hosts:
            run(["ip", "-n", h.ns, "addr", "add", f"{v6(h)}/64", "dev", "eth0", "nodad"])
            run(["ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            c.start(h)
        for h in hosts:
            c.wait_ready(h)
            c.add_pod(h)
            gw = subnet6(h).network_address + 1
            assert h.pod_ns is not None
            run(["ip", "-n", h.ns, "addr", "add", f"{gw}/64", "dev", "cni0", "nodad"])
            run(["ip", "-n", h.pod_ns, "addr", "add", f"{pod6(h)}/64", "dev", "eth0", "nodad"])
            run(["ip", "-n", h.pod_ns, "route", "add", "::/0", "via", str(gw)])
        yield c
    finally:
        c.teardown()


@pytest.fixture(scope="module")
def vxlan(underlay: Underlay) -> Iterator[Cluster]:
    yield from dual_stack(underlay, "c6v", "vxlan", 11)


@pytest.fixture(scope="module")
def hostgw(underlay: Underlay) -> Iterator[Cluster]:
    yield from dual_stack(underlay, "c6h", "host-gw", 12)


def ctl(c: Cluster, host: Host, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_")}
    env.update(FLANNELD_ETCD_ENDPOINTS=c.etcd.client_url, FLANNELD_ETCD_PREFIX=c.prefix,
               FLANNELD_SUBNET_FILE=str(host.subnet_file),
               FLANNELD_STATE_DIR=str(host.dir / "state"),
               FLANNELD_HEALTHZ_PORT=str(HEALTHZ_PORT))
    proc = subprocess.run(["ip", "netns", "exec", host.ns, FLANNELCTL, *args],
                          capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"flannelctl {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def status(c: Cluster, host: Host) -> dict[str, Any]:
    return json.loads(ctl(c, host, "status", "--json").stdout)


def doctor(c: Cluster, host: Host) -> dict[str, dict[str, Any]]:
    proc = ctl(c, host, "doctor", "--json", check=False)
    return {x["check"]: x for x in json.loads(proc.stdout)["checks"]}


def ping6(src: Host, dst: Host, count: int = 1) -> bool:
    assert src.pod_ns is not None
    return run(["ip", "netns", "exec", src.pod_ns, "ping", "-6", "-n", "-c", str(count),
                "-i", "0.2", "-W", "1", pod6(dst)], check=False).returncode == 0


@contextmanager
def frozen(host: Host) -> Iterator[None]:
    """flanneld on `host` stopped (SIGSTOP) for the block: nothing repairs what we break.
    Kept short: its etcd lease (TTL 10 s) must not run out meanwhile."""
    assert host.proc is not None
    host.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        host.proc.send_signal(signal.SIGCONT)


# --- vxlan ------------------------------------------------------------------------------------


def test_status_shows_both_families(vxlan: Cluster) -> None:
    h1, h2 = vxlan.hosts
    wait_for(lambda: ping6(h1, h2), 20, what="a ping6 between the pods")
    s = status(vxlan, h1)
    six = s["ipv6"]
    assert (six["subnet"], six["network"], six["public_ipv6"]) == (
        str(subnet6(h1)), "fc00:11::/48", v6(h1))
    dev = six["device"]
    assert (dev["name"], dev["up"], dev["local"], dev["accept_ra"]) == (
        "flannel-v6.1", True, v6(h1), "0")
    assert dev["mtu"] == s["interface"]["mtu"] - 70 == s["subnet_env"]["mtu"]
    assert f"{subnet6(h1).network_address}/128" in dev["addresses"]
    assert (six["programmed"], six["expected"]) == (1, 1)
    [peer] = s["peers"]
    assert (peer["ipv6_subnet"], peer["public_ipv6"], peer["state"], peer["state6"]) == (
        str(subnet6(h2)), v6(h2), "programmed", "programmed")
    text = ctl(vxlan, h1, "status").stdout
    assert f"subnet v6  {subnet6(h1)} (network fc00:11::/48)" in text
    assert f"public v6  {v6(h1)}" in text and "device v6  flannel-v6.1 (VNI 1" in text
    assert "IPv6: 1/1 peers programmed" in text


def test_leases_show_ipv6(vxlan: Cluster) -> None:
    h1, h2 = vxlan.hosts
    rows = json.loads(ctl(vxlan, h1, "leases", "--json").stdout)["leases"]
    by_v6 = {r["ipv6_subnet"]: r for r in rows}
    for h in (h1, h2):
        r = by_v6[str(subnet6(h))]
        assert r["key"].endswith(f"&{subnet6(h).network_address}-64")
        assert (r["public_ip"], r["public_ipv6"], r["problem"]) == (h.ip, v6(h), None)
        assert r["vtep_mac_v6"] and r["vtep_mac_v6"] != r["vtep_mac"]
    text = ctl(vxlan, h1, "leases").stdout
    assert "IPv6 SUBNET" in text and "IPv6 network fc00:11::/48" in text
    assert all(str(subnet6(h)) in text and v6(h) in text for h in (h1, h2))


def test_doctor_is_green_on_both_families(vxlan: Cluster) -> None:
    h1, _ = vxlan.hosts
    checks = doctor(vxlan, h1)
    for name in ("v6-lease", "v6-device", "v6-peers", "v6-skipped", "v6-strays", "ip6-forward",
                 "mtu", "peers", "lease"):
        assert checks[name]["status"] == "OK", checks[name]
    assert "1 peers programmed for IPv6" == checks["v6-peers"]["detail"]


def test_doctor_catches_ipv6_forwarding_off(vxlan: Cluster) -> None:
    h1, _ = vxlan.hosts
    sysctl = ["ip", "netns", "exec", h1.ns, "sysctl", "-qw"]
    run([*sysctl, "net.ipv6.conf.all.forwarding=0"])
    try:
        f = doctor(vxlan, h1)["ip6-forward"]
        assert (f["status"], f["detail"]) == ("FAIL", "net.ipv6.conf.all.forwarding = 0")
        assert f["fix"].startswith("sysctl -w net.ipv6.conf.all.forwarding=1")
    finally:
        run([*sysctl, "net.ipv6.conf.all.forwarding=1"])
    assert doctor(vxlan, h1)["ip6-forward"]["status"] == "OK"


def test_doctor_catches_v6_drift_and_flanneld_repairs_it(vxlan: Cluster) -> None:
    h1, h2 = vxlan.hosts
    before = metric(h1, "flanneld_repairs_total", 'kind="route6"')
    with frozen(h1):
        run(["ip", "-n", h1.ns, "-6", "route", "del", str(subnet6(h2))])
        run(["ip", "-n", h1.ns, "link", "set", "flannel-v6.1", "mtu", "1400"])
        run(["ip", "netns", "exec", h1.ns, "sysctl", "-qw",
             "net.ipv6.conf.flannel-v6/1.accept_ra=1"])
        checks = doctor(vxlan, h1)
    peers, device = checks["v6-peers"], checks["v6-device"]
    assert peers["status"] == "FAIL", peers
    [line] = peers["lines"]
    assert line.startswith(f"{h2.subnet.network_address}-24&") and \
        f"route {subnet6(h2)} via {subnet6(h2).network_address} dev #" in line and \
        line.endswith("onlink missing")
    assert device["status"] == "FAIL" and "flannel-v6.1 MTU 1400, want 1430" in device["detail"]
    assert "flannel-v6.1 accept_ra is 1, want 0" in device["detail"]
    assert "ip link set flannel-v6.1 mtu 1430" in device["fix"]
    assert "sysctl -w net.ipv6.conf.flannel-v6/1.accept_ra=0" in device["fix"]
    wait_for(lambda: all(doctor(vxlan, h1)[n]["status"] == "OK" for n in ("v6-peers",
                                                                          "v6-device")),
             30, interval=0.5, what="flanneld to repair the IPv6 route and device")
    assert metric(h1, "flanneld_repairs_total", 'kind="route6"') >= before + 1
    wait_for(lambda: ping6(h1, h2), 10, what="ping6 after the repair")


def captured(argv: list[str], traffic: Callable[[], object], timeout: float = 30) -> str:
    """What a capture command prints; `traffic` runs again and again once the capture
    listens, until the capture has its packets and exits."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        seen, deadline = "", time.monotonic() + timeout
        while "capturing on" not in seen:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"capture never started: {seen}")
            if sel.select(timeout=0.5):
                seen += proc.stderr.readline()
        sel.close()

        def done() -> bool:
            traffic()
            return proc.poll() is not None
        wait_for(done, timeout, interval=0.1, what="the capture to see its packets")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out


def traced(argv: list[str], traffic: Callable[[], object]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in captured(argv, traffic).splitlines() if x.startswith("{")]


def check_ping6_in_vxlan6(packets: list[dict[str, Any]], src: Host, dst: Host) -> None:
    ours = [p for p in packets if p["encap"] == "vxlan"
            and {p.get("inner_src"), p.get("inner_dst")} == {pod6(src), pod6(dst)}]
    request = next((p for p in ours if p["inner_src"] == pod6(src)), None)
    reply = next((p for p in ours if p["inner_src"] == pod6(dst)), None)
    assert request is not None and reply is not None, packets
    assert (request["outer_family"], request["outer_src"], request["outer_dst"],
            request["port"], request["vni"]) == ("ipv6", v6(src), v6(dst), 8472, 1)
    assert (request["inner_family"], request["inner_proto"]) == ("ipv6", "icmp6 echo-request")
    assert (reply["outer_src"], reply["inner_proto"]) == (v6(dst), "icmp6 echo-reply")


def test_trace_decodes_ping6_as_ipv6_in_vxlan_over_ipv6(vxlan: Cluster) -> None:
    h1, h2 = vxlan.hosts
    port = f"p{h1.number}"  # h1's port on the underlay bridge
    trace = [FLANNELCTL, "trace", "--netns", vxlan.underlay.ns, "--iface", port, "-c", "4",
             "--timeout", "30"]
    check_ping6_in_vxlan6(traced([*trace, "--json"], lambda: ping6(h1, h2)), h1, h2)
    out = captured(trace, lambda: ping6(h1, h2))
    assert f"VXLAN6 {v6(h1)} > {v6(h2)} udp/8472 vni 1 | inner {pod6(h1)} > {pod6(h2)} " \
           "icmp6 echo-request" in out, out
    assert f"VXLAN6 {v6(h2)} > {v6(h1)} udp/8472 vni 1 | inner {pod6(h2)} > {pod6(h1)} " \
           "icmp6 echo-reply" in out, out


def test_netns_lab_capture_decodes_the_same(vxlan: Cluster) -> None:
    h1, h2 = vxlan.hosts
    packets = traced(["ip", "netns", "exec", vxlan.underlay.ns, sys.executable, "-m",
                      "netns_lab.capture", "--iface", f"p{h2.number}", "-c", "4",
                      "--timeout", "30", "--json"], lambda: ping6(h2, h1))
    check_ping6_in_vxlan6(packets, h2, h1)


def test_a_dual_stack_lease_is_reserved_and_released_by_its_ipv4_subnet(vxlan: Cluster
                                                                        ) -> None:
    h1, h2 = vxlan.hosts
    key = status(vxlan, h2)["lease"]["key"]
    assert "&" in key
    ctl(vxlan, h1, "leases", "reserve", str(h2.subnet), "--public-ip", h2.ip)

    def h2_lease(reserved: bool) -> bool:
        s = status(vxlan, h2)
        return bool(s["ready"] and s["lease"] is not None and s["lease"]["key"] == key
                    and s["lease"]["reservation"] is reserved
                    and s["ipv6"]["subnet"] == str(subnet6(h2)))
    wait_for(lambda: h2_lease(True), 20, interval=0.5, what="h2 to adopt its reservation")
    out = ctl(vxlan, h1, "leases", "release", str(h2.subnet)).stdout
    assert f"{key}: released" in out
    wait_for(lambda: h2_lease(False), 20, interval=0.5,
             what="h2 to hold its dual-stack key with a TTL lease again")


# --- host-gw ----------------------------------------------------------------------------------


def test_host_gw_v6_routes_in_status_and_doctor(hostgw: Cluster) -> None:
    h1, h2 = hostgw.hosts
    wait_for(lambda: ping6(h1, h2), 20, what="a ping6 between the host-gw pods")
    s = status(hostgw, h1)
    assert s["ipv6"]["device"] is None and (s["ipv6"]["programmed"], s["ipv6"]["expected"]) \
        == (1, 1)
    [peer] = s["peers"]
    assert (peer["state6"], peer["kind6"]) == ("programmed", "direct")
    checks = doctor(hostgw, h1)
    assert "v6-device" not in checks
    assert checks["v6-peers"]["status"] == "OK" and checks["mtu"]["status"] == "OK"
    with frozen(h1):
        run(["ip", "-n", h1.ns, "-6", "route", "del", str(subnet6(h2))])
        f = doctor(hostgw, h1)["v6-peers"]
    assert f["status"] == "FAIL" and f"route {subnet6(h2)} via {v6(h2)} dev #" in f["lines"][0]
    wait_for(lambda: doctor(hostgw, h1)["v6-peers"]["status"] == "OK", 30, interval=0.5,
             what="flanneld to put the host-gw IPv6 route back")
