"""Every shipped example topology, end to end through the `netns-lab` command.

For each: `up`, every host programmed every peer, the full ping matrix, the
capture shows the expected encapsulation on the underlay (VXLAN with its VNI
and the pods' addresses inside, or plain IP for host-gw and DirectRouting),
then `down` leaves no namespace, interface or process behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from labrun import LabRun

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

# example -> [(source pod, target pod, encapsulation on the source host's eth0, VNI)]
CASES: dict[str, list[tuple[str, str, str, int | None]]] = {
    "default": [("h1/p1", "h2/p1", "vxlan", 1)],
    "hostgw-l2": [("h1/p1", "h3/p2", "none", None)],
    "vxlan-routed": [("e1/p1", "w1/p1", "vxlan", 42)],
    "directrouting": [("a1/p1", "a2/p1", "none", None), ("a1/p1", "b1/p1", "vxlan", 1)],
    "etcd3": [("h1/p1", "h3/p1", "vxlan", 1)],
    "ten-hosts": [("n1/p1", "s3/p1", "vxlan", 1)],
}
BACKENDS = {"hostgw-l2": "host-gw"}


@pytest.fixture
def lab_run() -> Iterator[LabRun]:
    run = LabRun("")
    try:
        yield run
    finally:
        run.close()


def pod_ips(status: dict[str, Any]) -> dict[str, str]:
    return {f"{h['host']}/{name}": ip for h in status["hosts"] for name, ip in h["pods"].items()}


def host_ips(status: dict[str, Any]) -> dict[str, str]:
    return {h["host"]: h["public_ip"] for h in status["hosts"]}


def check_capture(run: LabRun, status: dict[str, Any], src: str, dst: str, encap: str,
                  vni: int | None) -> None:
    pods, hosts = pod_ips(status), host_ips(status)
    src_ip, dst_ip = pods[src], pods[dst]

    def traffic() -> None:
        run.pod_exec(src, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst_ip)

    packets = run.capture(src.split("/")[0], traffic, count=6)
    ours = [p for p in packets
            if {p.get("inner_src", p.get("src")), p.get("inner_dst", p.get("dst"))}
            == {src_ip, dst_ip}]
    assert len(ours) == 6, f"{src}->{dst}: expected 3 requests + 3 replies, got {packets}"
    for p in ours:
        assert p["encap"] == encap, f"{src}->{dst}: expected {encap}, got {p}"
    if encap == "vxlan":
        request = next(p for p in ours if p["inner_src"] == src_ip)
        assert request["vni"] == vni
        assert request["outer_src"] == hosts[src.split("/")[0]]
        assert request["outer_dst"] == hosts[dst.split("/")[0]]
        assert request["inner_proto"] == "icmp echo-request"
    else:
        request = next(p for p in ours if p["src"] == src_ip)
        assert request["dst"] == dst_ip and request["proto"] == "icmp echo-request"


@pytest.mark.parametrize("example", [
    "default", "hostgw-l2", "vxlan-routed", "directrouting", "etcd3",
    pytest.param("ten-hosts", marks=pytest.mark.slow),
])
def test_example_end_to_end(lab_run: LabRun, example: str) -> None:
    # The default lab is what `./dev.sh lab` shows: bring it up the same way, with --demo.
    demo = ("--demo",) if example == "default" else ()
    out = lab_run.up(example, *demo).stdout
    assert f"lab {lab_run.name!r} up in" in out
    if demo:
        for needle in ("HOST", "PUBLIC IP", "SUBNET", "PEERS", "30/30 pod pairs reachable",
                       "Explore:", "capture h1", f"netns-lab --name {lab_run.name} down"):
            assert needle in out, f"{needle!r} missing from the demo output:\n{out}"
    print(f"{example}: up in {lab_run.up_seconds:.1f}s")

    status = lab_run.status()
    n_hosts = len(status["hosts"])
    for h in status["hosts"]:
        assert h["flanneld"] == "ready", h
        assert h["subnet"], h
        assert h["backend"] == BACKENDS.get(example, "vxlan")
        assert len(h["peers"]) == n_hosts - 1
        assert set(h["peers"].values()) <= {"vxlan", "direct"}, h
    assert all(m["healthy"] for m in status["etcd"])

    results = lab_run.ping()
    n_pods = len(pod_ips(status))
    assert len(results) == n_pods * (n_pods - 1)
    assert [r for r in results if not r["ok"]] == []

    for src, dst, encap, vni in CASES[example]:
        check_capture(lab_run, status, src, dst, encap, vni)

    left = lab_run.close()
    assert left == {}, f"`netns-lab down` left behind: {left}"


def test_cli_help_lists_every_command() -> None:
    from labrun import cli_argv
    out = subprocess.run([*cli_argv(), "--help"], capture_output=True, text=True).stdout
    for cmd in ("up", "down", "status", "ping", "exec", "pod", "capture", "flanneld", "etcd",
                "link", "partition", "examples", "list"):
        assert f"    {cmd} " in out, cmd
