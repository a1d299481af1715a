"""The lab's pod and chaos verbs, end to end: pods via CNI, flanneld kill/restart,
etcd member stop/start, link down/up, partition/heal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from labrun import LabRun, lab_up
from netns_lab.lab import Lab
from netns_lab.netns import list_netns, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    """One default lab (3 hosts, vxlan, 2 pods each) for this module's tests."""
    with lab_up("default") as run:
        yield run


def ips(run: LabRun) -> dict[str, str]:
    return {f"{p.host}/{p.name}": p.ip for p in run.lab().all_pods()}


def reachable(run: LabRun, src: str, dst: str) -> bool:
    proc = run.pod_exec(src, "ping", "-c", "1", "-W", "1", ips(run)[dst], check=False)
    return proc.returncode == 0


def all_reachable(run: LabRun) -> bool:
    return all(r["ok"] for r in run.ping(check=False))


def host_row(status: dict[str, Any], host: str) -> dict[str, Any]:
    return next(h for h in status["hosts"] if h["host"] == host)


def test_up_refuses_a_second_lab_of_the_same_name(lab: LabRun) -> None:
    again = lab.cli("up", "hostgw-l2", check=False)
    assert again.returncode == 2
    assert "already up" in again.stderr and "--replace" in again.stderr


def test_exec_reaches_hosts_and_pods(lab: LabRun) -> None:
    assert ips(lab)["h2/p1"] in lab.pod_exec("h2/p1", "ip", "-4", "-o", "addr", "show",
                                             "eth0").stdout
    routes = lab.pod_exec("h1", "ip", "route").stdout
    h2 = host_row(lab.status(), "h2")
    assert f"{h2['subnet']} via" in routes and "flannel.1" in routes
    proc = lab.cli("exec", "nope", "--", "true", check=False)
    assert proc.returncode == 2 and "hosts: h1, h2, h3" in proc.stderr


def test_pod_add_and_del_through_cni(lab: LabRun) -> None:
    out = lab.cli("pod", "add", "h1", "web").stdout
    pod_ip = ips(lab)["h1/web"]
    assert pod_ip in out
    subnet = host_row(lab.status(), "h1")["subnet"]
    assert pod_ip.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
    assert reachable(lab, "h1/web", "h2/p1") and reachable(lab, "h3/p2", "h1/web")
    dup = lab.cli("pod", "add", "h1", "web", check=False)
    assert dup.returncode == 2 and "exists already" in dup.stderr

    the_lab = lab.lab()
    ipam = the_lab.host_dir("h1") / "ipam" / "cbr0" / pod_ip
    assert ipam.exists(), "host-local holds the pod's address"
    lab.cli("pod", "del", "h1", "web")
    assert the_lab.plan.pod_ns("h1", "web") not in list_netns()
    assert not ipam.exists(), "CNI DEL released the address"
    assert "h1/web" not in ips(lab)


def test_flanneld_kill_keeps_the_data_path_and_restart_recovers(lab: LabRun) -> None:
    lab.cli("flanneld", "kill", "h2")
    row = host_row(lab.status(), "h2")
    assert row["flanneld"] == "down"
    assert set(row["peers"].values()) == {"vxlan"}, "kernel state survives the daemon"
    assert all_reachable(lab)
    lab.cli("flanneld", "start", "h2")
    lab.cli("flanneld", "restart", "h3", "--signal", "KILL")
    status = lab.status()
    assert {h["flanneld"] for h in status["hosts"]} == {"ready"}
    assert all_reachable(lab)


def test_partition_and_heal(lab: LabRun) -> None:
    lab.cli("partition", "h1", "h2")
    assert "h1 <-> h2" in lab.cli("partition", "--list").stdout
    assert not reachable(lab, "h1/p1", "h2/p1")
    assert not reachable(lab, "h2/p2", "h1/p2")
    assert reachable(lab, "h1/p1", "h3/p1") and reachable(lab, "h2/p1", "h3/p1")
    lab.cli("partition", "--heal", "h1", "h2")
    assert lab.lab().partitions == []
    wait_for(lambda: reachable(lab, "h1/p1", "h2/p1"), 10, what="h1/p1 -> h2/p1 after heal")
    assert all_reachable(lab)


def test_link_down_and_up(lab: LabRun) -> None:
    lab.cli("link", "down", "h3")
    assert not reachable(lab, "h1/p1", "h3/p1")
    assert reachable(lab, "h1/p1", "h2/p1")
    # programmed is not working: status shows the silent peers (its pods ping theirs)
    rows = {h["host"]: h for h in lab.status()["hosts"]}
    assert [len(rows[h]["peers"]) for h in ("h1", "h2", "h3")] == [2, 2, 2]
    assert set(rows["h1"]["peers"].values()) == {"vxlan"}
    assert (rows["h1"]["unreachable"], rows["h2"]["unreachable"],
            rows["h3"]["unreachable"]) == (["h3"], ["h3"], ["h1", "h2"])
    table = lab.cli("status").stdout
    assert "2/2 (vxlan), 2 unreachable" in table and "2/2 (vxlan), 1 unreachable" in table
    lab.cli("link", "up", "h3")
    wait_for(lambda: reachable(lab, "h1/p1", "h3/p1"), 10, what="h1/p1 -> h3/p1 after link up")
    assert all_reachable(lab)


def test_etcd_down_status_falls_back_to_subnet_env_and_kernel(lab: LabRun) -> None:
    subnets = {h["host"]: h["subnet"] for h in lab.status()["hosts"]}
    lab.cli("etcd", "stop", "etcd")
    try:
        status = lab.status()
        assert status["etcd_error"] and status["etcd"][0]["healthy"] is False
        for h in status["hosts"]:
            assert (h["subnet"], h["subnet_from"]) == (subnets[h["host"]], "subnet.env")
            assert len(h["kernel_routes"]) == 2
        assert "without etcd" in lab.cli("status").stdout
        assert all_reachable(lab), "the data path does not need etcd"
    finally:
        lab.cli("etcd", "start", "etcd")
    wait_for(lambda: {h["flanneld"] for h in lab.status()["hosts"]} == {"ready"}, 30,
             what="every flanneld ready again after etcd is back")


def test_chaos_verbs_name_what_is_wrong(lab: LabRun) -> None:
    for args, needle in ((("flanneld", "kill", "h9"), "hosts: h1, h2, h3"),
                         (("etcd", "stop", "etcd7"), "members: etcd"),
                         (("link", "down", "lan"), "no underlay link"),
                         (("partition", "h1"), "name two hosts")):
        proc = lab.cli(*args, check=False)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)


@pytest.mark.slow
def test_etcd_member_down_keeps_the_cluster_working() -> None:
    run = LabRun("")
    try:
        run.up("etcd3")
        run.cli("etcd", "stop", "etcd1")
        health = {m["name"]: m["healthy"] for m in run.status()["etcd"]}
        assert health == {"etcd1": False, "etcd2": True, "etcd3": True}
        # With 2 of 3 members flanneld restarts, keeps its lease and a new pod joins.
        before = host_row(run.status(), "h1")["subnet"]
        run.cli("flanneld", "restart", "h1")
        assert host_row(run.status(), "h1")["subnet"] == before
        run.cli("pod", "add", "h1", "late")
        assert all_reachable(run)
        run.cli("etcd", "start", "etcd1")
        wait_for(lambda: all(m["healthy"] for m in run.status()["etcd"]), 20,
                 what="etcd1 healthy again")
        state = json.loads((Lab.state_dir_of(run.name) / "lab.json").read_text())
        assert "late" in state["pods"]["h1"]
    finally:
        left = run.close()
    assert left == {}, f"`netns-lab down` left behind: {left}"
