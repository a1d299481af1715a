"""Concurrent invocations and crashes: 100 parallel ADDs get 100 distinct addresses, and a
plugin killed between reservation and wiring leaks nothing once DEL or GC runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cnihelp import CRASHPOINT, REPO, Node, Outcome
from netns_lab.netns import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def parallel(node: Node, command: str, netns: list[str], conf: dict[str, object]
             ) -> list[Outcome]:
    procs = []
    for i, ns in enumerate(netns):
        procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.host}", str(node.plugin)],
            env=node.env(command, f"k{i}", ns), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE))
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(json.dumps(conf).encode())
        p.stdin.close()
    outs = []
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        out, err = p.stdout.read(), p.stderr.read()
        outs.append(Outcome(p.wait(timeout=300), out, err))
    return outs


def test_100_concurrent_adds_get_100_distinct_addresses(any_node: Node) -> None:
    node = any_node
    conf = node.conf("1.0.0")
    netns = node.pods_batch(100)
    results = [o.ok().json for o in parallel(node, "ADD", netns, conf)]
    addrs = [r["ips"][0]["address"] for r in results]
    assert len(set(addrs)) == 100
    assert sorted(node.reservations()) == sorted(a.split("/")[0] for a in addrs)
    for ns, addr in list(zip(netns, addrs, strict=True))[::17]:  # spot-check the kernel
        info = node.ipj("addr", "show", "dev", "eth0", netns=ns)[0]["addr_info"]
        assert f"{info[0]['local']}/{info[0]['prefixlen']}" == addr
    if node.server is None:
        return  # 100 concurrent in-process DELs would only repeat the server's case, slowly
    for o in parallel(node, "DEL", netns, conf):
        o.ok()
    assert node.reservations() == {}
    wait_for(lambda: node.host_veths() == [], 30, what="every host veth deleted")


def leaked(node: Node) -> dict[str, object]:
    records = node.data_dir / ".pyflannel" / "cbr0"
    return {"reservations": node.reservations(), "veths": node.host_veths(),
            "nft": "masquerade" in node.nft(),
            "records": sorted(p.name for p in records.iterdir()) if records.exists() else []}


NOTHING = {"reservations": {}, "veths": [], "nft": False, "records": []}


@pytest.mark.parametrize("point", ["reserved", "wired"])
@pytest.mark.parametrize("cleanup", ["DEL", "GC"])
def test_killed_between_reservation_and_wiring_leaks_nothing(any_node: Node, point: str,
                                                             cleanup: str) -> None:
    node = any_node
    node.write_subnet_env(ipmasq=False)  # rules to leak, if we leaked
    conf = node.conf("1.1.0")
    netns = node.pod()
    env = node.env("ADD", "dead", netns)
    if node.server is None:  # the in-process plugin SIGKILLs itself at the point
        out = node.call(dict(env, PYTHONPATH=str(REPO)), conf,
                        argv=[sys.executable, str(CRASHPOINT), point, "plugin"])
        assert out.code == -9
    else:  # the server dies mid-request; the front must not redo a half-done ADD
        node.stop_server()
        node.start_server(crash=point)
        out = node.call(env, conf)
        assert out.failed(11)["msg"].startswith("flanneld failed")
        node.server.wait(timeout=10)
        node.server = None
        node.start_server()
    assert node.reservations() == {"10.5.52.2": "dead\r\neth0"}
    assert bool(node.host_veths()) == (point == "wired")
    survivor = node.add(conf, "alive", node.pod()).ok().json  # the store is still usable
    if cleanup == "DEL":
        node.delete(conf, "dead", netns).ok()
    else:
        valid = [{"containerID": "alive", "ifname": "eth0"}]
        node.call(node.env("GC"), dict(conf, **{"cni.dev/valid-attachments": valid})).ok()
    keep = survivor["interfaces"][1]["name"]
    wait_for(lambda: leaked(node) == {"reservations": {"10.5.52.3": "alive\r\neth0"},
                                      "veths": [keep], "nft": True,
                                      "records": ["alive@eth0"]},
             20, what="only the survivor left")
    node.delete(conf, "alive", netns).ok()  # wrong netns on purpose: DEL is keyed by id
    wait_for(lambda: leaked(node) == NOTHING, 20, what="nothing left")


def test_server_refuses_other_namespaces_and_front_falls_back(served: Node) -> None:
    """A caller in another netns is refused; the front then does the work itself."""
    node = served
    other = node.pod("other")  # a namespace that is not the server's
    proc = subprocess.run(["nsenter", f"--net={other}", str(node.plugin)],
                          env=node.env("STATUS"), input=json.dumps(node.conf("1.1.0")).encode(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stdout
    log = node.sandbox.state_dir / (node.host.rsplit("-", 1)[-1] + "srv.log")
    assert "is in another network namespace" in log.read_text()
