"""flannelctl end to end, run inside a lab host's namespace exactly as an operator would
(`ip netns exec <host> flannelctl ...` with flanneld's FLANNELD_* environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labrun import LabRun, lab_up
from netns_lab.netns import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("ctl-lab")]
FLANNELCTL = str(Path(sys.executable).with_name("flannelctl"))


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with lab_up("default", "ctl") as run:
        yield run


def ctl(run: LabRun, host: str, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    lab = run.lab()
    d = lab.host_dir(host)
    env = {**os.environ, "FLANNELD_ETCD_ENDPOINTS": ",".join(lab.plan.etcd_endpoints),
           "FLANNELD_ETCD_PREFIX": lab.topology.etcd_prefix,
           "FLANNELD_SUBNET_FILE": str(d / "subnet.env"), "FLANNELD_STATE_DIR": str(d),
           "FLANNELD_HEALTHZ_PORT": "8471"}
    proc = subprocess.run(["ip", "netns", "exec", lab.ns(host), FLANNELCTL, *args],
                          capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"flannelctl {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def conflist(run: LabRun, host: str) -> str:
    return str(run.lab().host_dir(host) / "cni" / "10-flannel.conflist")


def status(run: LabRun, host: str) -> dict[str, Any]:
    return json.loads(ctl(run, host, "status", "--json").stdout)


def doctor(run: LabRun, host: str) -> tuple[int, dict[str, Any]]:
    proc = ctl(run, host, "doctor", "--json", "--conflist", conflist(run, host), check=False)
    return proc.returncode, {c["check"]: c for c in json.loads(proc.stdout)["checks"]}


def test_status_shows_every_peer_programmed(lab: LabRun) -> None:
    s = status(lab, "h1")
    assert s["ready"] is True and s["backend"] == "vxlan"
    assert s["lease"]["public_ip"] == s["public_ip"]
    assert s["device"]["mtu"] == s["subnet_env"]["mtu"] == s["interface"]["mtu"] - 50
    assert len(s["peers"]) == 2
    assert {p["state"] for p in s["peers"]} == {"programmed"}
    assert all(p["vtep_mac"] and p["expires"].endswith("m") for p in s["peers"])
    text = ctl(lab, "h1", "status").stdout
    assert "2 peers: 2 programmed" in text


def test_doctor_fails_on_drift_and_passes_after_the_resync(lab: LabRun) -> None:
    code, checks = doctor(lab, "h1")
    assert code == 0, checks
    peer = status(lab, "h1")["peers"][0]["subnet"]
    lab.cli("flanneld", "kill", "h1")  # so nothing repairs the drift before we look
    try:
        subprocess.run(["ip", "-n", lab.lab().ns("h1"), "route", "del", peer], check=True)
        code, checks = doctor(lab, "h1")
        assert code == 1
        assert checks["peers"]["status"] == "FAIL" and peer in checks["peers"]["lines"][0]
        assert "route" in checks["peers"]["lines"][0] and checks["peers"]["fix"]
        assert checks["flanneld"]["status"] == "FAIL"
    finally:
        lab.cli("flanneld", "start", "h1")
    wait_for(lambda: doctor(lab, "h1")[0] == 0, 30, interval=0.5,
             what="doctor to pass once flanneld reprogrammed h1")


def test_leases_reserve_and_release(lab: LabRun) -> None:
    ctl(lab, "h1", "leases", "reserve", "10.244.250.0/24", "--public-ip", "192.168.100.200")
    rows = {r["key"]: r for r in json.loads(ctl(lab, "h1", "leases", "--json").stdout)["leases"]}
    assert rows["10.244.250.0-24"]["reservation"] and rows["10.244.250.0-24"]["expires"] == \
        "reservation"
    assert ctl(lab, "h1", "leases", "release", "10.244.250.0/24").returncode == 0
    # h2's own live lease becomes a reservation; h2 keeps its subnet and stays ready
    h2 = status(lab, "h2")
    subnet, ip = h2["subnet"], h2["public_ip"]
    refused = ctl(lab, "h1", "leases", "reserve", subnet, "--public-ip", "192.168.100.201",
                  check=False)
    assert refused.returncode == 1 and "--force" in refused.stdout
    ctl(lab, "h1", "leases", "reserve", subnet, "--public-ip", ip)
    wait_for(lambda: (s := status(lab, "h2"))["ready"] and s["lease"]["reservation"]
             and s["subnet"] == subnet, 20, interval=0.5, what="h2 to adopt its reservation")
    ctl(lab, "h1", "leases", "release", subnet)
    wait_for(lambda: (s := status(lab, "h2"))["ready"] and s["lease"] is not None
             and not s["lease"]["reservation"] and s["subnet"] == subnet, 20, interval=0.5,
             what="h2 to hold its subnet with a TTL lease again")


def test_ipam_gc_releases_a_pod_lost_without_cni_del(lab: LabRun) -> None:
    before = json.loads(ctl(lab, "h3", "ipam", "list", "--json", "--conflist",
                            conflist(lab, "h3")).stdout)["allocations"]
    assert before and all(a["state"] == "alive" for a in before)
    _, pod_ns = lab.lab().resolve("h3/p2")
    subprocess.run(["ip", "netns", "del", pod_ns], check=True)
    gone = json.loads(ctl(lab, "h3", "ipam", "gc", "--json", "--conflist",
                          conflist(lab, "h3")).stdout)["would_release"]
    assert [a["container_id"] for a in gone] == [f"{lab.name}-h3-p2"]
    _, checks = doctor(lab, "h3")
    assert checks["ipam"]["status"] == "WARN"
    ctl(lab, "h3", "ipam", "gc", "--yes", "--conflist", conflist(lab, "h3"))
    after = json.loads(ctl(lab, "h3", "ipam", "list", "--json", "--conflist",
                           conflist(lab, "h3")).stdout)["allocations"]
    assert len(after) == len(before) - 1 and all(a["state"] == "alive" for a in after)


def test_trace_decodes_vxlan(lab: LabRun) -> None:
    trace = ("trace", "--iface", "eth0", "-c", "2", "--timeout", "30", "--json")
    tracer = threading.Thread(target=lambda: traced.append(ctl(lab, "h1", *trace, check=False)))
    traced: list[subprocess.CompletedProcess[str]] = []
    tracer.start()

    def pinged_until_traced() -> bool:
        # the capture starts once scapy is loaded, which takes seconds on a busy machine:
        # keep pinging until it has seen its packets
        if tracer.is_alive():
            lab.cli("ping", "--from", "h1/p1", check=False)
        return not tracer.is_alive()
    wait_for(pinged_until_traced, 40, what="flannelctl trace to capture 2 packets")
    [proc] = traced
    assert proc.returncode == 0, proc.stderr
    packets = [json.loads(line) for line in proc.stdout.splitlines()]
    assert packets and packets[0]["encap"] == "vxlan" and packets[0]["vni"] == 1
    assert packets[0]["inner_src"].startswith("10.244.")
