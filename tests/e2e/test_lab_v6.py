"""IPv6 in the lab, end to end through `netns-lab`: the four IPv6 example topologies.

For each (dual-stack vxlan, dual-stack host-gw, dual-stack vxlan across a router with
the IPv6 underlay routed, IPv6-only vxlan): every host programmed every peer in each
family, the full ping matrix in each family, a full-size ping6 with DF between pods
on different hosts (payload = pod MTU - 48), and pod traffic to the world namespace
masqueraded to the host's address of that family. On the dual-stack vxlan lab: kill -9
one flanneld and restart it under a running ping6 between pods: nothing lost.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labrun import LabRun, lab_up
from netns_lab import chaos, observe, probes
from netns_lab.measure import Pinger, all_ready, entries_changed, peer_entries
from netns_lab.netns import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

@dataclass(frozen=True)
class Case:
    example: str
    tag: str  # the lab is t<pid>x<tag>
    families: tuple[int, ...]
    peer: str  # how peers are programmed: vxlan or direct
    src: str  # two pods on different hosts (across the router if there is one)
    dst: str


CASES = {c.example: c for c in (
    Case("dualstack", "v6a", (4, 6), "vxlan", "h1/p1", "h2/p1"),
    Case("hostgw-v6", "v6b", (4, 6), "direct", "h1/p1", "h3/p1"),
    Case("vxlan-routed-v6", "v6c", (4, 6), "vxlan", "e1/p1", "w2/p1"),
    Case("ipv6-only", "v6d", (6,), "vxlan", "h1/p1", "h3/p1"),
)}


def _param(example: str) -> Any:
    return pytest.param(example, marks=pytest.mark.xdist_group(f"lab-{CASES[example].tag}"),
                        id=example)


@dataclass
class V6Lab:
    case: Case
    run: LabRun


@pytest.fixture(scope="module", params=[_param(e) for e in CASES])
def lab(request: pytest.FixtureRequest) -> Iterator[V6Lab]:
    case = CASES[request.param]
    with lab_up(case.example, tag=case.tag) as run:
        yield V6Lab(case, run)


def host_of(pod: str) -> str:
    return pod.split("/")[0]


def test_every_host_programs_every_peer_in_each_family(lab: V6Lab) -> None:
    case, status = lab.case, lab.run.status()
    assert status["families"] == list(case.families)
    assert status["network6"] and (status["network"] != "") == (4 in case.families)
    n = len(status["hosts"])
    for h in status["hosts"]:
        assert h["flanneld"] == "ready", h
        assert h["public_ipv6"] and h["subnet6"], h
        assert set(h["peers6"].values()) == {case.peer} and len(h["peers6"]) == n - 1, h
        if 4 in case.families:
            assert set(h["peers"].values()) == {case.peer} and len(h["peers"]) == n - 1, h
        else:
            assert h["subnet"] == "" and h["peers"] == {} and h["public_ip"] == h["public_ipv6"]
        if case.peer == "vxlan":
            assert h["vxlan6_device"]["mtu"] == 1500 - 70, h  # VXLAN over IPv6 costs 70
    assert all(m["healthy"] for m in status["etcd"])
    text = lab.run.cli("status").stdout
    assert "SUBNET6" in text and "PEERS6" in text and status["network6"] in text


def test_full_ping_matrix_in_each_family(lab: V6Lab) -> None:
    results = lab.run.ping()
    pods = {r["src"] for r in results}
    n = len(pods)
    for family in lab.case.families:
        mine = [r for r in results if r["family"] == family]
        assert len(mine) == n * (n - 1), f"IPv{family}: {len(mine)} pairs"
        assert [r for r in mine if not r["ok"]] == []
    assert {r["family"] for r in results} == set(lab.case.families)
    only6 = lab.run.ping("--family", "6")
    assert {r["family"] for r in only6} == {6} and len(only6) == n * (n - 1)
    text = lab.run.cli("ping").stdout
    assert f"{n * (n - 1)}/{n * (n - 1)} pod pairs reachable" in text
    if len(lab.case.families) == 2:
        assert "IPv4\n" in text and "IPv6\n" in text


def subnet_env(run: LabRun, host: str) -> dict[str, str]:
    return observe.read_subnet_env(Path(run.lab().host_dir(host)) / "subnet.env")


def test_full_size_ping6_with_df_crosses_hosts(lab: V6Lab) -> None:
    case = lab.case
    the_lab = lab.run.lab()
    result = probes.df_ping(the_lab, case.src, case.dst, family=6)
    assert result.mtu == int(subnet_env(lab.run, host_of(case.src))["FLANNEL_MTU"])
    assert result.mtu == (1500 - 70 if case.peer == "vxlan" else 1500)
    assert result.size == result.mtu - 48
    assert result.ok, result.output
    back = probes.df_ping(the_lab, case.dst, case.src, family=6)
    assert back.ok, back.output


def test_pod_traffic_to_the_world_is_masqueraded_to_the_host(lab: V6Lab) -> None:
    the_lab = lab.run.lab()
    src = lab.case.src
    host = host_of(src)
    for family in lab.case.families:
        seen = probes.world_sees(the_lab, src, family)
        want = next(a for a in the_lab.plan.addresses_of(host) if a.version == family)
        assert seen == want.compressed, f"IPv{family}: the world saw {seen}, not {want}"
        assert seen != the_lab.pods[host]["p1"].address(family)


@pytest.mark.parametrize("lab", [_param("ipv6-only")], indirect=True)
def test_flanneld_of_the_ipv6_only_lab_uses_etcd_and_its_iface_over_ipv6(lab: V6Lab) -> None:
    the_lab = lab.run.lab()
    etcd6 = the_lab.plan.ip6_of("etcd")
    for h in the_lab.topology.host_names:
        pid = the_lab.sandbox.pid(f"flanneld-{h}")
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"http://[{etcd6}]:2379".encode() in argv
        assert argv[argv.index(b"--iface") + 1] == str(the_lab.plan.addr_of(h)).encode()
        assert list(subnet_env(lab.run, h)) == ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                                                "FLANNEL_MTU", "FLANNEL_IPMASQ"]


@pytest.mark.xdist_group("lab-v6a")
@pytest.mark.parametrize("lab", ["dualstack"], indirect=True)
def test_flanneld_kill9_and_restart_under_ping6_loses_nothing(lab: V6Lab) -> None:
    the_lab = lab.run.lab()
    before = peer_entries(the_lab, "h2")
    subnet6 = subnet_env(lab.run, "h2")["FLANNEL_IPV6_SUBNET"]
    pingers = [Pinger(the_lab, "h1/p1", "h2/p1", family=6),
               Pinger(the_lab, "h2/p1", "h3/p1", family=6)]
    try:
        assert chaos.flanneld_kill(the_lab, "h2", signal.SIGKILL)
        assert chaos.flanneld_start(the_lab, "h2")  # waits for /readyz
        wait_for(lambda: observe.converged(the_lab), 30, interval=0.1,
                 what="every host to program every lease in both families again")
    finally:
        stats = [p.stop() for p in pingers]
    for s in stats:
        assert s.sent > 50 and s.lost == 0, s
    assert entries_changed(before, peer_entries(the_lab, "h2")) == 0
    assert subnet_env(lab.run, "h2")["FLANNEL_IPV6_SUBNET"] == subnet6


@pytest.mark.xdist_group("lab-v6a")
@pytest.mark.parametrize("lab", ["dualstack"], indirect=True)
def test_etcd_outage_under_ping6_loses_nothing_and_the_watches_resume(lab: V6Lab) -> None:
    """The only etcd member down for 8 s: pods keep talking over IPv6, nobody's entries
    change, and once etcd is back every host is ready and converged again."""
    the_lab = lab.run.lab()
    before = {h: peer_entries(the_lab, h) for h in ("h1", "h2", "h3")}
    pingers = [Pinger(the_lab, "h1/p1", "h2/p1", family=6),
               Pinger(the_lab, "h3/p1", "h1/p1", family=6)]
    try:
        assert chaos.etcd_stop(the_lab, "etcd")
        down = time.monotonic()
        # the outage lasts 8 s; meanwhile every host keeps its IPv6 entries
        while time.monotonic() - down < 8:
            for h, entries in before.items():
                assert entries_changed(entries, peer_entries(the_lab, h)) == 0, h
            time.sleep(1)
        assert chaos.etcd_start(the_lab, "etcd")
        wait_for(lambda: all_ready(the_lab) and observe.converged(the_lab), 60, interval=0.2,
                 what="every host ready and converged once etcd is back")
    finally:
        stats = [p.stop() for p in pingers]
    for s in stats:
        assert s.sent > 50 and s.lost == 0, s
    for h, entries in before.items():
        assert entries_changed(entries, peer_entries(the_lab, h)) == 0, h
