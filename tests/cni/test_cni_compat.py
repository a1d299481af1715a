"""flannel drop-in behaviour: dual stack (also beside the reference bridge + host-local
with two range sets), non-bridge delegates exec'd from CNI_PATH like
flannel does, and a node moved from flannel + host-local (their state, our plugin).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from cnihelp import Node
from netns_lab.netns import run, wait_for

from cni.delegate import derive_delegate, load_conf, scratch_bytes
from core.subnetenv import read_subnet_env

pytestmark = pytest.mark.netns


def test_dual_stack(served: Node) -> None:
    node = served
    node.subnet_file.write_text(
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n"
        "FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=fd00:10:5:52::1/64\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "ds", netns).ok().json
    assert [ip["address"] for ip in res["ips"]] == ["10.5.52.2/24", "fd00:10:5:52::2/64"]
    assert {"dst": "fd00:10:5::/48"} in res["routes"]
    assert {"dst": "::/0", "gw": "fd00:10:5:52::1"} in res["routes"]
    addrs = {a["local"] for a in node.ipj("addr", "show", "dev", "eth0", netns=netns)[0][
        "addr_info"]}
    assert {"10.5.52.2", "fd00:10:5:52::2"} <= addrs
    v6_routes = node.ipj("-6", "route", "show", netns=netns)
    assert any(r["dst"] == "default" and r.get("gateway") == "fd00:10:5:52::1" for r in v6_routes)
    ruleset = node.nft()
    assert "table ip6 pyflannel-cni" in ruleset and "fd00:10:5:52::2 : jump" in ruleset
    # the pod reaches its gateway over both families (the bridge holds .1 and ::1)
    for target in ("10.5.52.1", "fd00:10:5:52::1"):
        ping = run(["ip", "netns", "exec", netns.rsplit("/", 1)[1], "ping", "-c", "1", "-W",
                    "2", target], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    node.check(conf, "ds", netns, res).ok()
    node.delete(conf, "ds", netns, prev=res).ok()
    assert node.reservations() == {}
    assert "jump" not in node.nft()


def _shape(res: dict[str, Any]) -> dict[str, Any]:
    """A result with what differs per pod (MACs, veth name, netns, the host part) masked."""
    out = json.loads(json.dumps(res))
    for i, iface in enumerate(out["interfaces"]):
        iface["mac"] = "<mac>"
        if i == 1:
            iface["name"] = "<veth>"
        if "sandbox" in iface:
            iface["sandbox"] = "<netns>"
    for ip in out["ips"]:
        ip["address"] = str(ipaddress.ip_interface(ip["address"]).network)
    return out


def test_dual_stack_same_as_reference_bridge_and_host_local(served: Node) -> None:
    """flannel on a dual-stack node: its delegate (two range sets) run by the reference
    bridge + host-local, and our plugin beside it on the same bridge and store: the same
    result JSON, the same pod routes; the two pods talk over IPv6; our DEL of flannel's
    pod (its scratch file) releases both of its addresses."""
    node = served
    node.dual_stack()
    conf = node.conf("1.0.0")
    delegate = derive_delegate(load_conf(conf), read_subnet_env(node.subnet_file))
    assert delegate["ipam"]["ranges"] == [[{"subnet": "10.5.52.0/24"}],
                                          [{"subnet": "fd00:10:5:52::/64"}]]
    node.data_dir.mkdir(mode=0o700)
    (node.data_dir / "ref").write_bytes(scratch_bytes(delegate))
    ref_ns, our_ns = node.pod(), node.pod()
    ref = node.call(node.env("ADD", "ref", ref_ns), delegate, exe="/usr/lib/cni/bridge").ok()
    ours = node.add(conf, "ours", our_ns).ok().json
    assert _shape(ours) == _shape(ref.json)
    assert [ip["address"] for ip in ref.json["ips"]] == ["10.5.52.2/24", "fd00:10:5:52::2/64"]
    assert [ip["address"] for ip in ours["ips"]] == ["10.5.52.3/24", "fd00:10:5:52::3/64"]

    def pod_routes(netns: str) -> list[tuple[str, str | None]]:
        return sorted((r["dst"], r.get("gateway")) for family in ("-4", "-6")
                      for r in node.ipj(family, "route", "show", netns=netns))
    assert pod_routes(our_ns) == pod_routes(ref_ns)
    for ns in (ref_ns, our_ns):
        assert node.pod_exec(ns, "sysctl", "-n", "net.ipv6.conf.eth0.accept_dad", check=True
                             ).stdout.strip() == "0"
    node.ping(our_ns, "fd00:10:5:52::2")
    node.ping(ref_ns, "fd00:10:5:52::3")
    node.delete(conf, "ref", ref_ns).ok()
    assert node.reservations() == {"10.5.52.3": "ours\r\neth0",
                                   "fd00:10:5:52::3": "ours\r\neth0"}
    node.delete(conf, "ours", our_ns, prev=ours).ok()
    assert node.reservations() == {}


def test_non_bridge_delegate_is_execd_like_flannel(served: Node) -> None:
    """delegate type ptp: flannel's derived config goes to /usr/lib/cni/ptp, as flannel does."""
    node = served
    conf = node.conf("1.0.0", delegate={"type": "ptp"})
    netns = node.pod()
    res = node.add(conf, "p1", netns).ok().json
    assert res["ips"][0]["address"] == "10.5.52.2/24"
    saved = json.loads((node.data_dir / "p1").read_text())
    assert saved["type"] == "ptp" and "isGateway" not in saved and saved["ipMasq"] is False
    assert node.reservations() == {"10.5.52.2": "p1\r\neth0"}  # ptp ran host-local for it
    node.delete(conf, "p1", netns, prev=res).ok()
    assert node.reservations() == {} and not (node.data_dir / "p1").exists()


def test_node_moved_from_flannel_and_host_local(served: Node) -> None:
    """Pods attached by flannel (reference bridge + host-local) before the switch: we keep
    their addresses, allocate around them, and our DEL tears them down via flannel's
    scratch file."""
    node = served
    conf = node.conf("0.3.1")
    old_ns = node.pod()
    # What flannel does: derive, save the scratch file, exec the delegate (bridge).
    delegate = derive_delegate(load_conf(conf), read_subnet_env(node.subnet_file))
    node.data_dir.mkdir(mode=0o700)
    (node.data_dir / "old").write_bytes(scratch_bytes(delegate))
    old = node.call(node.env("ADD", "old", old_ns), delegate, exe="/usr/lib/cni/bridge").ok()
    assert old.json["ips"][0]["address"] == "10.5.52.2/24"
    assert node.reservations() == {"10.5.52.2": "old\r\neth0"}
    # Our plugin on the same node: next address, same bridge, same store.
    new_ns = node.pod()
    new = node.add(conf, "new", new_ns).ok().json
    assert new["ips"][0]["address"] == "10.5.52.3/24"
    assert new["interfaces"][0]["mac"] == old.json["interfaces"][0]["mac"]  # same cni0
    ping = run(["ip", "netns", "exec", new_ns.rsplit("/", 1)[1], "ping", "-c", "1", "-W", "2",
                "10.5.52.2"], check=False)
    assert ping.returncode == 0
    # The old pod's DEL comes to us: flannel's scratch file says how to undo it.
    node.delete(conf, "old", old_ns).ok()
    assert node.reservations() == {"10.5.52.3": "new\r\neth0"}
    assert not (node.data_dir / "old").exists()
    assert [link["ifname"] for link in node.ipj("link", "show", netns=old_ns)] == ["lo"]
    node.delete(conf, "new", new_ns).ok()
    wait_for(lambda: node.host_veths() == [], 10, what="host veths gone")
